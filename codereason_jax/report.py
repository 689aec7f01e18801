"""Build the paper's tables from evaluation results files.

    python -m codereason_jax.report runs/nl/results.json runs/code/results.json \\
        --labels=NL,CODE --tables=2 --output_dir=report/

For each table: a markdown and a CSV file (each number with the metric's fixed decimals, its
95% interval, n and the records skipped as unscorable; the task's chance level, and a mark on
every result whose interval covers it; bold only for a best that a paired bootstrap finds
better than every other run), its panels (one per task and metric, ``reporting.panels``) and,
for Tables 2, 3 and 6, the paper's published values beside ours. Then the paper's claims,
marked reproduced / contradicted / not resolved from paired comparisons where the labels name
the paper's models, and all of it in one report.md, a self-contained report.html and the
report.json behind both. Results that are not comparable (another vocabulary, scoring mode,
sampling or number of examples for the same task) are labelled in the table and listed under
it, never silently mixed. ``run_summary`` is the one-run table that ``evaluate`` writes beside
its results.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Any, Sequence

from codereason_jax import cli
from codereason_jax.reporting import claims, document, numbers, panels, paper, significance

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


def skipped_by_reason(task_result: dict[str, Any]) -> dict[str, int]:
    """Records the reader skipped, and examples read but unscorable (e.g. a 1-token
    document in a language-modelling split), by reason."""
    counts = dict(task_result.get("data", {}).get("skipped", {}))
    for reason, n in task_result.get("unscored", {}).items():
        if n:
            counts[reason] = counts.get(reason, 0) + n
    return counts


def skipped_count(task_result: dict[str, Any]) -> int:
    return sum(skipped_by_reason(task_result).values())


def _paper_protocol(run: dict[str, Any]) -> bool:
    return run.get("eval_config", {}).get("mode") == "paper"


def comparability_key(run: dict[str, Any], task: str) -> tuple:
    result = run["tasks"][task]
    return (run["vocabulary"]["sha256"], result.get("mode"), json.dumps(
        result.get("sampling"), sort_keys=True), result["n"])


# The statistics a paired bootstrap can test (the paper's one-segment BLEU has no per-example
# counts, so a table under the paper's protocol bolds nothing).
TESTABLE = frozenset({"accuracy", "pass@1", "loss", "bleu_corpus"})
BOLD_NOTE = ("Bold: the best in its row, and only where a paired bootstrap over the same "
             "examples finds it better than every other comparable run (95%); no bold: no "
             "run is.")


def _pairwise(runs: Sequence[dict[str, Any]], task: str, members: Sequence[int],
              metric: str, resamples: int) -> dict[int, set[int]]:
    """i -> the runs that run i beats significantly on ``task`` (paired bootstrap)."""
    beats: dict[int, set[int]] = {i: set() for i in members}
    if metric not in TESTABLE:
        return beats
    for k, i in enumerate(members):
        for j in members[k + 1:]:
            d = significance.paired(runs[i]["tasks"][task], runs[j]["tasks"][task], resamples)
            if d is not None and d["sign"] > 0:
                beats[j].add(i)
            elif d is not None and d["sign"] < 0:
                beats[i].add(j)
    return beats


def build_table(runs: Sequence[dict[str, Any]], labels: Sequence[str], tasks: Sequence[str],
                resamples: int = 1000) -> tuple[list[list[str]], list[str], list[dict]]:
    """Rows of cells (task, one per run), notes on incomparable cells, and raw numbers.

    Numbers have the metric's fixed decimals; the best of a row is bold only when it is
    significantly better than every other comparable run (``BOLD_NOTE``)."""
    rows, notes, raw = [], [], []
    for task in tasks:
        present = [i for i, run in enumerate(runs) if task in run["tasks"]]
        if not present:
            continue
        values = {i: primary_metric(runs[i]["tasks"][task], _paper_protocol(runs[i]))
                  for i in present}
        keys = {i: comparability_key(runs[i], task) for i in present}
        reference = keys[present[0]]
        metric = values[present[0]][0]
        comparable = [i for i in present if keys[i] == reference and values[i][0] == metric]
        beats = _pairwise(runs, task, comparable, metric, resamples)
        sign = -1 if metric in LOWER_IS_BETTER else 1
        best = max(comparable, key=lambda i: sign * values[i][1])
        bold = len(comparable) > 1 and beats[best] == set(comparable) - {best}
        first = runs[present[0]]["tasks"][task]
        chance = chance_of(first)
        cells = [f"{task} ({metric}"
                 + (f"; chance {numbers.fmt(chance, metric)})" if chance is not None else ")")]
        for i in range(len(runs)):
            if i not in values:
                cells.append("–")
                continue
            name, value, ci = values[i]
            result = runs[i]["tasks"][task]
            text = numbers.fmt(value, name)
            if ci:
                text += " " + numbers.fmt_ci(ci, name)
            at_chance = covers_chance(result, ci)
            if at_chance:
                text += f" {AT_CHANCE}"
            text += f" n={result['n']}"
            skipped = skipped_count(result)
            if skipped:
                text += f" ({skipped} skipped)"
            if bold and i == best:
                text = f"**{text}**"
                if BOLD_NOTE not in notes:
                    notes.append(BOLD_NOTE)
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
                        "covers_chance": at_chance, "comparable": keys[i] == reference,
                        "significant_best": bold and i == best,
                        "better_than": sorted(labels[j] for j in beats.get(i, ()))})
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
        skipped = skipped_by_reason(result)
        lines.append("| " + " | ".join([
            task, result.get("split", ""), name,
            numbers.fmt(value, name) + (" " + numbers.fmt_ci(ci, name) if ci else ""),
            str(result["n"]),
            f"{sum(skipped.values())} ({describe_counts(skipped)})" if skipped else "0",
            # The chance level is exact: at least two decimals (30.00 % of a 1-in-3.33 pick).
            "–" if chance is None else f"{chance:.{max(2, numbers.decimals(name))}f}",
            AT_CHANCE if covers_chance(result, ci) else ""]) + " |")
    lines += ["", AT_CHANCE_NOTE]
    for task, message in run.get("failed", {}).items():
        stale = " (the row above is an earlier result, computed with other settings)" \
            if task in run["tasks"] else ""
        lines.append(f"- **{task} failed**{stale}: {message}")
    return "\n".join(lines) + "\n"


READING_GUIDE = (
    "How to read: each number has the metric's fixed decimals (accuracy % and pass@1 one, "
    "BLEU 0–100 two, loss in nats/token three) and its 95% bootstrap interval over examples; "
    "n = examples (documents for loss). "
    + BOLD_NOTE + " In the panels, each task and metric has its own axis and unit, the dashed "
    "line is the exact chance level, and a bracket with * joins two models whose paired "
    "difference is significant (the dotted end is the better one). 'ours vs paper': "
    "consistent = our 95% interval covers the paper's value; differs = it does not; analogue "
    "= our stand-in task on another data set, so only the direction of differences compares.")


def table_section(title: str, runs: Sequence[dict[str, Any]], labels: Sequence[str],
                  tasks: Sequence[str], report_dir: str, name: str,
                  paper_table: str | None = None, resamples: int = 1000
                  ) -> tuple[list[document.Block], dict[str, Any]]:
    """A table's blocks (numbers, notes, panels, the paper beside us) and the JSON behind them;
    writes its panels as REPORT_DIR/NAME.png and one PNG per panel, and NAME.csv."""
    rows, notes, raw = build_table(runs, labels, tasks, resamples)
    data: dict[str, Any] = {"title": title, "labels": list(labels), "numbers": raw}
    if not rows:
        return [], data
    blocks = [document.heading(title),
              document.table(["task (metric)"] + list(labels), rows)]
    blocks += [document.paragraph(note) for note in notes]
    base = os.path.join(report_dir, name)
    with open(base + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(raw[0]))
        writer.writeheader()
        writer.writerows({**r, "better_than": ";".join(r["better_than"])} for r in raw)
    data["panels"] = [os.path.basename(p) for p in panels.write_panels(raw, labels, title, base)]
    blocks.append(document.image(name + ".png", title))
    if paper_table is not None and paper_table in paper.load()["tables"]:
        records = paper.beside_paper(paper_table, runs, labels)
        data["paper"] = records
        blocks += [document.heading(f"{title}: the paper beside us", 3),
                   document.paragraph(f"Published values: {records[0]['citation']} (one run, "
                                      "no intervals)."),
                   document.table(paper.PAPER_HEADER, paper.markdown_rows(records))]
    return blocks, data


def claims_section(comparisons: Sequence[dict[str, Any]]
                   ) -> tuple[list[document.Block], list[dict[str, Any]]]:
    """The paper's claims marked reproduced / contradicted / not resolved (see ``claims``)."""
    marks = claims.claim_marks(comparisons)
    rows = [[m["claim"], f"**{m['mark']}**", m["evidence"]] for m in marks]
    return [document.heading("The paper's claims at this scale"),
            document.paragraph(claims.__doc__.split("\n\n")[1].replace("\n", " ").strip()),
            document.table(["claim", "mark", "paired comparisons (95%)"], rows)], marks


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.report",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="results JSON files of evaluate")
    parser.add_argument("--labels", help="comma-separated column names (default: file names); "
                        "NL, CODE, NN, NC, CN, CC, Uniform, Stepwise Inc., Stepwise Dec. (or the "
                        "paper's column names) are matched to the paper's tables and claims")
    parser.add_argument("--tables", default="all",
                        help=f"comma-separated tables among {sorted(TABLES)}, or all")
    parser.add_argument("--output_dir", default="report")
    parser.add_argument("--resamples", type=int, default=1000,
                        help="paired bootstrap resamples behind bold marks, panels and claims")
    args = parser.parse_args(argv)

    runs = []
    for path in args.results:
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: cannot read results file {path}: {err}", file=sys.stderr)
            return 2
        if not isinstance(runs[-1], dict) or not isinstance(runs[-1].get("tasks"), dict):
            print(f"error: {path} is not a results file of evaluate (no 'tasks').",
                  file=sys.stderr)
            return 2
    labels = args.labels.split(",") if args.labels else [
        os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in args.results]
    if len(labels) != len(runs):
        print(f"error: {len(labels)} labels for {len(runs)} results files.", file=sys.stderr)
        return 2
    if len(set(labels)) != len(labels):
        print(f"error: labels must differ, got {labels} (pass --labels).", file=sys.stderr)
        return 2
    names = sorted(TABLES) if args.tables == "all" else args.tables.split(",")
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        print(f"error: unknown tables {unknown}; choose from {sorted(TABLES)}.", file=sys.stderr)
        return 2
    if args.resamples < 1:
        print(f"error: --resamples must be >= 1, got {args.resamples}.", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    blocks = [document.heading("Evaluation report", 1), document.paragraph(READING_GUIDE)]
    data: dict[str, Any] = {"runs": labels, "results": list(args.results), "tables": {}}
    for name in names:
        title, tasks = TABLES[name]
        section, table_data = table_section(title, runs, labels, tasks, args.output_dir,
                                            f"table_{name}", paper_table=name,
                                            resamples=args.resamples)
        if not section:
            continue
        data["tables"][name] = table_data
        with open(os.path.join(args.output_dir, f"table_{name}.md"), "w") as f:
            f.write(document.to_markdown(section))
        print(document.to_markdown(section))
        blocks += section
    if not data["tables"]:
        print("error: none of the chosen tables has a task present in these results.",
              file=sys.stderr)
        return 2
    comparisons = claims.claim_comparisons(dict(zip(labels, runs)), args.resamples)
    if comparisons:
        section, data["claims"] = claims_section(comparisons)
        data["claim_comparisons"] = comparisons
        blocks += section
        print(document.to_markdown(section))
    written = document.write(blocks, args.output_dir, "report", "Evaluation report")
    with open(os.path.join(args.output_dir, "report.json"), "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
    print(f"wrote {len(data['tables'])} table(s) to {args.output_dir}: {written[0]}, "
          f"{written[1]} and report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
