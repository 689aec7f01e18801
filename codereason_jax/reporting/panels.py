"""Small multiples: one panel per task and metric, each with its own scale and unit, so a
difference in BLEU or in nats is as visible as one in accuracy points.

Each panel shows the models side by side as points with 95% intervals, a dashed line at the
task's exact chance level where it has one (accuracy: the mean of 1/choices; loss: log of the
vocabulary size), and a bracket with '*' over each pair whose paired bootstrap difference is
significant (the bracket's end with the dot is the better model)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from codereason_jax.reporting import numbers

CHANCE_LABEL = "chance"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tasks_of(raw: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["task"] for r in raw))


def draw_panel(ax, entries: Sequence[dict[str, Any]], labels: Sequence[str]) -> None:
    """One task's panel on ``ax`` from its table records (one per run)."""
    by_run = {e["run"]: e for e in entries}
    runs = [label for label in labels if label in by_run]
    metric = entries[0]["metric"]
    lows, highs = [], []
    for x, label in enumerate(runs):
        e = by_run[label]
        low = e["ci_low"] if e["ci_low"] is not None else e["value"]
        high = e["ci_high"] if e["ci_high"] is not None else e["value"]
        ax.errorbar([x], [e["value"]], yerr=[[e["value"] - low], [high - e["value"]]],
                    fmt="o", capsize=4, color=f"C{labels.index(label) % 10}")
        lows.append(low)
        highs.append(high)
    chance = entries[0].get("chance")
    if chance is not None:
        ax.axhline(chance, linestyle="--", color="0.4", linewidth=1, label=CHANCE_LABEL)
        lows.append(chance)
        highs.append(chance)
    bottom, top = min(lows), max(highs)
    span = (top - bottom) or max(abs(top), 1.0) * 0.1
    pairs = [(runs.index(e["run"]), runs.index(other)) for e in entries
             for other in e.get("better_than", ()) if other in runs]
    levels: list[list[tuple[int, int]]] = []  # brackets that share a height do not overlap
    for winner, loser in sorted(pairs, key=lambda p: abs(p[0] - p[1])):
        left, right = sorted((winner, loser))
        level = next((k for k, taken in enumerate(levels)
                      if all(right < a or left > b for a, b in taken)), len(levels))
        if level == len(levels):
            levels.append([])
        levels[level].append((left, right))
        y = top + span * (0.12 + 0.14 * level)
        ax.plot([winner, winner, loser, loser], [y - span * 0.03, y, y, y - span * 0.03],
                color="0.2", linewidth=0.8, gid="significant")
        ax.plot([winner], [y], marker="o", markersize=3, color="0.2")
        ax.text((winner + loser) / 2, y, "*", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(bottom - span * 0.15, top + span * (0.25 + 0.14 * len(levels)))
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels(runs, rotation=20 if len(runs) > 3 else 0, fontsize=8)
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_ylabel(numbers.unit(metric), fontsize=8)
    ax.set_title(f"{entries[0]['task'].removeprefix('eval_')} ({metric})", fontsize=9)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    if chance is not None:
        ax.legend(fontsize=7, loc="lower right")


def table_figure(raw: Sequence[dict[str, Any]], labels: Sequence[str], title: str):
    """All of a table's panels in one figure: one axis per task (and its metric)."""
    plt = pyplot()
    tasks = tasks_of(raw)
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        draw_panel(ax, [r for r in raw if r["task"] == task], labels)
    for ax in list(axes.flat)[len(tasks):]:
        fig.delaxes(ax)
    fig.suptitle(title, fontsize=10)
    return fig


def save(fig, path: str) -> str:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_panels(raw: Sequence[dict[str, Any]], labels: Sequence[str], title: str,
                 base: str) -> list[str]:
    """BASE.png with every panel, and BASE_<task>.png per panel; returns the paths written."""
    plt = pyplot()
    written = [save(table_figure(raw, labels, title), base + ".png")]
    for task in tasks_of(raw):
        fig, ax = plt.subplots(figsize=(4.2, 3.4))
        draw_panel(ax, [r for r in raw if r["task"] == task], labels)
        written.append(save(fig, panel_path(base, task)))
    return written


def panel_path(base: str, task: str) -> str:
    """Where ``write_panels`` puts one task's panel."""
    return f"{base}_{task.removeprefix('eval_')}.png"
