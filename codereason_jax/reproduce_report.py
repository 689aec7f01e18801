"""The mini reproduction's report: tables with 95% intervals, paired comparisons that say which
differences are within noise, loss and code-share curves, and the commands that were run."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from codereason_jax.evaluation.eval_metrics.bleu import bleu_from_counts
from codereason_jax.evaluation.eval_metrics.bootstrap import paired_bootstrap_difference
from codereason_jax.reproduce import (CODE_TASKS, LABELS, PRETRAIN_CELLS, SCALES, SFT_CELLS,
                                      format_seconds, plan, results_path, run_dir)


def _example_rows(task_result: dict[str, Any]) -> tuple[np.ndarray, Callable, bool]:
    """Per-example additive statistics, the statistic on their sums, and higher-is-better."""
    kind, examples = task_result["kind"], task_result["examples"]
    if kind == "multiple_choice":
        rows = np.array([[float(e["prediction"] in e["labels"]), 1.0] for e in examples])
        return rows, lambda t: 100 * t[0] / t[1], True
    if kind == "language_modelling":
        rows = np.array([[e["nll_sum"], e["tokens"]] for e in examples])
        return rows, lambda t: t[0] / t[1], False
    rows = np.array([e["bleu_counts"] for e in examples])
    return rows, lambda t: 100 * bleu_from_counts(t).bleu, True


# (A, B, question): is B better than A?
COMPARISONS = (
    ("pretrain_nl", "pretrain_code", "code in pre-training (CODE vs NL)"),
    ("sft_nn", "sft_nc", "code instructions on the NL model (NC vs NN)"),
    ("sft_cn", "sft_cc", "code instructions on the CODE model (CC vs CN)"),
    ("sft_nn", "sft_cn", "code in pre-training, text tuning (CN vs NN)"),
    ("sft_nc", "sft_cc", "code in pre-training, text+code tuning (CC vs NC)"),
    ("sft_uniform", "sft_stepwise_decrease", "Stepwise Decrease vs Uniform"),
    ("sft_uniform", "sft_stepwise_increase", "Stepwise Increase vs Uniform"),
)


# The smallest difference a verdict reports (accuracy points, BLEU points, nats per token).
MIN_DIFFERENCE = {"multiple_choice": 0.0, "generation": 0.01, "language_modelling": 0.001}


def compare(results: dict[str, dict], resamples: int) -> list[dict[str, Any]]:
    """Paired bootstrap differences (B - A, signed so that > 0 means B is better)."""
    out = []
    for a, b, question in COMPARISONS:
        for task in results[a]["tasks"]:
            rows_a, statistic, higher = _example_rows(results[a]["tasks"][task])
            rows_b, _, _ = _example_rows(results[b]["tasks"][task])
            sign = 1.0 if higher else -1.0
            d = paired_bootstrap_difference(
                rows_a, rows_b, lambda t: sign * statistic(t), n_resamples=resamples)
            # A difference must clear the metric's resolution as well as zero: corpus BLEU
            # of near-empty outputs differs by 1e-100 with a tight interval, meaning nothing.
            resolution = MIN_DIFFERENCE[results[a]["tasks"][task]["kind"]]
            if d["ci_low"] > 0 and d["difference"] >= resolution:
                verdict = f"{LABELS[b]} better"
            elif d["ci_high"] < 0 and d["difference"] <= -resolution:
                verdict = f"{LABELS[a]} better"
            else:
                verdict = "within noise"
            out.append({"question": question, "a": LABELS[a], "b": LABELS[b], "task": task,
                        "metric": {"multiple_choice": "accuracy", "generation": "BLEU",
                                   "language_modelling": "loss (lower is better)"}[
                                       results[a]["tasks"][task]["kind"]],
                        "a_value": statistic(rows_a.sum(axis=0)),
                        "b_value": statistic(rows_b.sum(axis=0)),
                        "improvement": d["difference"], "ci_low": d["ci_low"],
                        "ci_high": d["ci_high"], "verdict": verdict})
    return out


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _running_mean(values: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    """Means over ``window`` consecutive values (one step's batch is a few rows: noisy)."""
    return np.convolve(values, np.ones(window) / window, mode="valid"), window


def _plot_curves(output_dir: str, report_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, cells, title in ((axes[0], PRETRAIN_CELLS, "pre-training"),
                             (axes[1], tuple(SFT_CELLS), "instruction tuning")):
        for cell in cells:
            records = _read_jsonl(os.path.join(run_dir(output_dir, cell), "metrics.jsonl"))
            if records:
                steps = np.array([r["step"] for r in records])
                loss = np.array([r["loss"] for r in records])
                # A batch is a few rows, so per-step losses are noisy: each step faintly, and
                # a running mean over a twentieth of the run on top.
                line, = ax.plot(steps, loss, linewidth=0.5, alpha=0.25)
                smooth, window = _running_mean(loss, max(1, len(loss) // 20))
                ax.plot(steps[window - 1:], smooth, color=line.get_color(), linewidth=1.5,
                        label=LABELS[cell])
        ax.set_title(f"training loss: {title} (running mean)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(fontsize=8)
    written.append(_save(fig, os.path.join(report_dir, "loss_curves.png")))

    fig, ax = plt.subplots(figsize=(7, 4))
    for cell in ("pretrain_code", "sft_cc", "sft_uniform", "sft_stepwise_increase",
                 "sft_stepwise_decrease"):
        records = _read_jsonl(os.path.join(run_dir(output_dir, cell), "metrics.jsonl"))
        keys = [k for k in (records[0] if records else {}) if k.startswith("share/")
                and "code" in k]
        if not keys:
            continue
        steps = np.array([r["step"] for r in records], np.float64)
        share = np.array([r[keys[0]] for r in records])
        smooth, window = _running_mean(share, max(1, len(share) // 20))
        ax.plot(steps[window - 1:] / steps[-1], smooth, label=LABELS[cell], linewidth=1)
    ax.set_xlabel("fraction of the run")
    ax.set_ylabel("code share of the batch rows")
    ax.set_title("realised code share (running mean)")
    ax.legend(fontsize=8)
    written.append(_save(fig, os.path.join(report_dir, "code_share.png")))
    return written


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(scale_name: str, output_dir: str, wall_seconds: float) -> str:
    """Tables, comparisons and plots under OUTPUT_DIR/report; returns the summary's path."""
    from codereason_jax import report

    scale = SCALES[scale_name]
    report_dir = os.path.join(output_dir, "report")
    os.makedirs(report_dir, exist_ok=True)
    results = {}
    for cell in LABELS:
        with open(results_path(output_dir, cell)) as f:
            results[cell] = json.load(f)
    tasks = list(results["pretrain_nl"]["tasks"])
    lines = [f"# Mini reproduction ({scale_name} scale)", "",
             f"Wall-clock time of all steps: {format_seconds(wall_seconds)} "
             f"({os.cpu_count()} CPU cores).", "",
             "Numbers: accuracy (%) and corpus BLEU with 95% bootstrap intervals over examples; "
             "held-out loss in nats/token (lower is better) with intervals over documents; "
             "n = examples (documents for loss). Bold: best in the row.", ""]
    tables = (("1", "Pre-training (paper Table 2)", PRETRAIN_CELLS),
              ("2", "Instruction tuning (paper Table 3; CN is the cell the paper skipped)",
               ("sft_nn", "sft_nc", "sft_cn", "sft_cc")),
              ("3", "Mixing strategies in instruction tuning, on CODE (paper Table 6)",
               ("sft_cc", "sft_uniform", "sft_stepwise_increase", "sft_stepwise_decrease")))
    for number, title, cells in tables:
        runs = [results[c] for c in cells]
        labels = [LABELS[c] for c in cells]
        rows, notes, raw = report.build_table(runs, labels, tasks)
        header = ["task (metric)"] + labels
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""] + notes
        if "sft_uniform" in cells:
            lines += ["CC mixes 5:3 statically and Uniform 5:3 in each of four phases: the "
                      "mixing is exact, so their batches, and numbers, are identical.", ""]
        report._plot(raw, labels, title, os.path.join(report_dir, f"table_{number}.png"))
        lines += [f"![{title}](table_{number}.png)", ""]

    cut = sorted({(task, r["tasks"][task].get("truncated", 0)
                   + r["tasks"][task].get("truncated_prompts", 0))
                  for r in results.values() for task in r["tasks"]} - {(t, 0) for t in tasks})
    if cut:
        lines += ["Inputs longer than the model's context were cut (prompts keep their end, "
                  "an over-long scored answer its start; per example in the results JSON): "
                  + "; ".join(
                      f"{task}: {n} of each model's examples" for task, n in cut) + ".", ""]

    comparisons = compare(results, scale.bootstrap_resamples)
    with open(os.path.join(report_dir, "comparisons.json"), "w") as f:
        json.dump(comparisons, f, indent=1)
    lines += ["## Which differences are real", "",
              "Paired bootstrap over the same examples (improvement > 0 means the second model "
              "is better; for loss, lower). A difference whose 95% interval includes 0 (or "
              "that is below 0.01 BLEU / 0.001 nats) is within noise.", "",
              "| question | task (metric) | A | B | improvement [95% CI] | verdict |",
              "|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['question']} | {c['task']} ({c['metric']}) | {c['a_value']:.3g} | "
                     f"{c['b_value']:.3g} | {c['improvement']:+.3g} [{c['ci_low']:+.3g}, "
                     f"{c['ci_high']:+.3g}] | {c['verdict']} |")
    code_rows = [c for c in comparisons if c["question"].startswith("code in pre-training (")
                 and c["task"] in CODE_TASKS]
    agree = [c for c in code_rows if c["verdict"] == "CODE better"]
    lines += ["", "## The paper's direction on code tasks", "",
              f"CODE beats NL beyond noise on {len(agree)} of {len(code_rows)} code measures "
              f"({', '.join(c['task'] for c in agree) or 'none'}); the others are "
              "within noise or reversed, as listed above. At this scale these are small models "
              "trained for minutes: the direction, not the size, is what carries over.", ""]
    for path in _plot_curves(output_dir, report_dir):
        name = os.path.basename(path)
        lines += [f"![{name}]({name})", ""]
    lines += ["## Commands", "", "Each step, as run (from the repository root):", "", "```"]
    lines += [step.command() for step in plan(scale, output_dir)] + ["```", ""]
    summary = os.path.join(report_dir, "README.md")
    with open(summary, "w") as f:
        f.write("\n".join(lines) + "\n")
    return summary
