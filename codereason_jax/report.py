"""Build the paper's tables from evaluation results files.

    python -m codereason_jax.report runs/nl/results.json runs/code/results.json \\
        --labels=NL,CODE --tables=2 --output_dir=report/

For each table: a markdown and a CSV file (each number with its 95% interval, n and the
records skipped as unscorable; the best run per row in bold; the task's chance level, and a
mark on every result whose interval covers it) and a grouped bar chart PNG with the intervals
as error bars. Results that are not comparable (another vocabulary, scoring mode, sampling or
number of examples for the same task) are labelled in the table and listed under it, never
silently mixed. ``run_summary`` is the one-run table that ``evaluate`` writes beside its results.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Any, Sequence

from codereason_jax import cli

# The paper's tables: title and task rows. Table 2 compares the pre-trained NL and CODE models,
# table 3 the instruction-tuned ones, table 4 the CoT inputs, table 6 the mixing strategies.
SIX_TASKS = ("eval_logic", "eval_jecqa_kd", "eval_scienceqa", "eval_ekar", "eval_cosqa",
             "eval_mbpp")
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "2": ("Table 2: pre-training with and without code", SIX_TASKS),
    "3": ("Table 3: instruction tuning", SIX_TASKS),
    "4": ("Table 4: chain-of-thought inputs",
          ("eval_scienceqa", "eval_scienceqa_cot", "eval_ekar", "eval_ekar_cot")),
    "6": ("Table 6: code:text mixing strategies in instruction tuning", SIX_TASKS),
    "embedded": ("Embedded default tasks", ("eval_embedded_codeqa", "eval_embedded_codegen",
                                            "eval_embedded_codecomplete", "embedded_text",
                                            "embedded_code")),
}


LOWER_IS_BETTER = frozenset({"loss"})


def primary_metric(task_result: dict[str, Any], paper_protocol: bool = False
                   ) -> tuple[str, float, list[float] | None]:
    """(name, value, 95% interval) of the number a table shows for a task.

    Generation without tests shows the corpus BLEU with its interval, or, for runs evaluated
    under the paper's protocol (EvalConfig.mode = 'paper'), the paper's one-segment BLEU."""
    metrics = task_result["metrics"]
    if "accuracy" in metrics:
        return "accuracy", metrics["accuracy"], metrics.get("accuracy_ci95")
    if "pass@1" in metrics:
        return "pass@1", metrics["pass@1"], metrics.get("pass@1_ci95")
    if "loss" in metrics:
        return "loss", metrics["loss"], metrics.get("loss_ci95")
    if "bleu_corpus_ci95" in metrics and not paper_protocol:
        return "bleu_corpus", metrics["bleu_corpus"], metrics["bleu_corpus_ci95"]
    # None: every prediction was empty, where the paper's notebook divides by zero.
    return "bleu_paper", metrics["bleu_paper"] if metrics["bleu_paper"] is not None else 0.0, None


AT_CHANCE = "≈"
AT_CHANCE_NOTE = (f"{AT_CHANCE}: the 95% interval covers chance; the result cannot be told "
                  "from a random pick.")


def chance_of(task_result: dict[str, Any]) -> float | None:
    """The task's chance level in the primary metric's unit (accuracy in %, loss in nats)."""
    return task_result.get("chance")


def covers_chance(task_result: dict[str, Any], ci: list[float] | None) -> bool:
    chance = chance_of(task_result)
    return chance is not None and ci is not None and ci[0] <= chance <= ci[1]


def skipped_count(task_result: dict[str, Any]) -> int:
    return sum(task_result.get("data", {}).get("skipped", {}).values())


def _paper_protocol(run: dict[str, Any]) -> bool:
    return run.get("eval_config", {}).get("mode") == "paper"


def comparability_key(run: dict[str, Any], task: str) -> tuple:
    result = run["tasks"][task]
    return (run["vocabulary"]["sha256"], result.get("mode"), json.dumps(
        result.get("sampling"), sort_keys=True), result["n"])


def build_table(runs: Sequence[dict[str, Any]], labels: Sequence[str], tasks: Sequence[str]
                ) -> tuple[list[list[str]], list[str], list[dict]]:
    """Rows of cells (task, one per run), notes on incomparable cells, and raw numbers."""
    rows, notes, raw = [], [], []
    for task in tasks:
        present = [i for i, run in enumerate(runs) if task in run["tasks"]]
        if not present:
            continue
        values = {i: primary_metric(runs[i]["tasks"][task], _paper_protocol(runs[i]))
                  for i in present}
        keys = {i: comparability_key(runs[i], task) for i in present}
        reference = keys[present[0]]
        sign = -1 if values[present[0]][0] in LOWER_IS_BETTER else 1
        best = max(present, key=lambda i: sign * values[i][1])
        first = runs[present[0]]["tasks"][task]
        chance = chance_of(first)
        cells = [f"{task} ({values[present[0]][0]}"
                 + (f"; chance {chance:.{2 if chance < 10 else 1}f})" if chance is not None
                    else ")")]
        for i in range(len(runs)):
            if i not in values:
                cells.append("–")
                continue
            name, value, ci = values[i]
            result = runs[i]["tasks"][task]
            text = f"{value:.2f}"
            if ci:
                digits = 2 if name in LOWER_IS_BETTER else 1
                text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
            at_chance = covers_chance(result, ci)
            if at_chance:
                text += f" {AT_CHANCE}"
            text += f" n={result['n']}"
            skipped = skipped_count(result)
            if skipped:
                text += f" ({skipped} skipped)"
            if i == best and len(present) > 1:
                text = f"**{text}**"
            if keys[i] != reference:
                text += " †"
                notes.append(f"† {labels[i]} on {task}: vocabulary/mode/sampling/n "
                             f"{keys[i]} differ from {labels[present[0]]}'s {reference}; "
                             "not comparable.")
            if at_chance and AT_CHANCE_NOTE not in notes:
                notes.append(AT_CHANCE_NOTE)
            cells.append(text)
            raw.append({"task": task, "run": labels[i], "metric": name, "value": value,
                        "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
                        "n": result["n"], "skipped": skipped, "chance": chance_of(result),
                        "covers_chance": at_chance, "comparable": keys[i] == reference})
        rows.append(cells)
    return rows, notes, raw


def run_summary(run: dict[str, Any]) -> str:
    """Markdown: one evaluation run, a row per task with its split, metric, interval, n,
    skipped records by reason, chance and whether the interval covers it; then failures."""
    from seqio_tasks.sources.rows import describe_counts

    checkpoint = run.get("checkpoint") or f"fresh initialisation (seed {run.get('init_seed')})"
    lines = [f"# Evaluation of {checkpoint}, step {run.get('step')}", "",
             "| task | split | metric | value [95% CI] | n | skipped | chance | |",
             "|---|---|---|---|---|---|---|---|"]
    for task, result in run["tasks"].items():
        name, value, ci = primary_metric(result, _paper_protocol(run))
        chance = chance_of(result)
        skipped = result.get("data", {}).get("skipped", {})
        lines.append("| " + " | ".join([
            task, result.get("split", ""), name,
            f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""), str(result["n"]),
            f"{sum(skipped.values())} ({describe_counts(skipped)})" if skipped else "0",
            "–" if chance is None else f"{chance:.2f}",
            AT_CHANCE if covers_chance(result, ci) else ""]) + " |")
    lines += ["", AT_CHANCE_NOTE]
    for task, message in run.get("failed", {}).items():
        stale = " (the row above is an earlier result, computed with other settings)" \
            if task in run["tasks"] else ""
        lines.append(f"- **{task} failed**{stale}: {message}")
    return "\n".join(lines) + "\n"


def _plot(raw: list[dict], labels: Sequence[str], title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(dict.fromkeys(r["task"] for r in raw))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 4))
    for j, label in enumerate(labels):
        entries = {r["task"]: r for r in raw if r["run"] == label}
        xs = np.arange(len(tasks)) + j * width
        values = [entries[t]["value"] if t in entries else 0 for t in tasks]
        errors = np.array([[entries[t]["value"] - entries[t]["ci_low"],
                            entries[t]["ci_high"] - entries[t]["value"]]
                           if t in entries and entries[t]["ci_low"] is not None else [0, 0]
                           for t in tasks]).T
        ax.bar(xs, values, width, yerr=errors, capsize=3, label=label)
    ax.set_xticks(np.arange(len(tasks)) + width * (len(labels) - 1) / 2)
    ax.set_xticklabels([t.removeprefix("eval_") for t in tasks], rotation=20)
    ax.set_ylabel("score (95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.report",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="results JSON files of evaluate")
    parser.add_argument("--labels", help="comma-separated column names (default: file names)")
    parser.add_argument("--tables", default="all",
                        help=f"comma-separated tables among {sorted(TABLES)}, or all")
    parser.add_argument("--output_dir", default="report")
    args = parser.parse_args(argv)

    runs = []
    for path in args.results:
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: cannot read results file {path}: {err}", file=sys.stderr)
            return 2
    labels = args.labels.split(",") if args.labels else [
        os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in args.results]
    if len(labels) != len(runs):
        print(f"error: {len(labels)} labels for {len(runs)} results files.", file=sys.stderr)
        return 2
    names = sorted(TABLES) if args.tables == "all" else args.tables.split(",")
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        print(f"error: unknown tables {unknown}; choose from {sorted(TABLES)}.", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    written = 0
    for name in names:
        title, tasks = TABLES[name]
        rows, notes, raw = build_table(runs, labels, tasks)
        if not rows:
            continue
        header = ["task"] + list(labels)
        markdown = [f"## {title}", "", "| " + " | ".join(header) + " |",
                    "|" + "---|" * len(header)]
        markdown += ["| " + " | ".join(r) + " |" for r in rows]
        markdown += [""] + notes
        base = os.path.join(args.output_dir, f"table_{name}")
        with open(base + ".md", "w") as f:
            f.write("\n".join(markdown) + "\n")
        with open(base + ".csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(raw[0]))
            writer.writeheader()
            writer.writerows(raw)
        _plot(raw, labels, title, base + ".png")
        print("\n".join(markdown) + "\n")
        written += 1
    if not written:
        print("error: none of the chosen tables has a task present in these results.",
              file=sys.stderr)
        return 2
    print(f"wrote {written} table(s) to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
