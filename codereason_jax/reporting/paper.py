"""The paper's published Tables 2, 3 and 6 beside our numbers: a reproduction is read against
them, so every cell the paper reports is shown with ours and whether our interval covers it."""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

from codereason_jax.reporting import numbers

PAPER_TABLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "paper_results", "tables.json")

# Tasks of the embedded default that stand in for a paper benchmark at small scale: another
# data set, so only the direction of a difference carries over, never the value.
ANALOGUES = {"eval_cosqa": "eval_embedded_codeqa", "eval_mbpp": "eval_embedded_codegen"}

CONSISTENT, DIFFERS, ANALOGUE, NOT_RUN, NO_INTERVAL = (
    "consistent", "differs", "analogue: direction only", "not run", "no interval")


@functools.lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    """The published values with their citation (codereason_jax/paper_results/tables.json)."""
    with open(PAPER_TABLES) as f:
        return json.load(f)


def column_of(table: str, label: str) -> str | None:
    """The paper's column for one of our run labels (its aliases, e.g. NL -> 'NL (2.6B)')."""
    for column, aliases in load()["tables"][table]["columns"].items():
        if label == column or label in aliases:
            return column
    return None


def paper_metric(task_result: dict[str, Any], metric: str
                 ) -> tuple[str, float | None, list[float] | None]:
    """Our number in the paper's metric for the row: accuracy for ACC; for BLEU the corpus BLEU
    with its interval (the paper's one-segment BLEU, without one, when that is all there is)."""
    m = task_result["metrics"]
    if metric == "ACC":
        return "accuracy", m.get("accuracy"), m.get("accuracy_ci95")
    if m.get("bleu_corpus_ci95"):
        return "bleu_corpus", m["bleu_corpus"], m["bleu_corpus_ci95"]
    return "bleu_paper", m.get("bleu_paper"), None


def beside_paper(table: str, runs: Sequence[dict[str, Any]], labels: Sequence[str]
                 ) -> list[dict[str, Any]]:
    """One record per cell the paper reports in ``table``: its value, ours (same task, or the
    embedded analogue) with its interval, and the status: consistent (our 95% interval covers
    the paper's value), differs (it does not), analogue (another data set), not run."""
    spec = load()["tables"][table]
    by_column = {}
    for run, label in zip(runs, labels):
        column = column_of(table, label)
        if column is not None and column not in by_column:
            by_column[column] = (label, run)
    out = []
    for row in spec["rows"]:
        for column, value in row["values"].items():
            record = {"table": table, "dataset": row["dataset"], "task": row["task"],
                      "column": column, "metric": row["metric"], "paper": value,
                      "citation": spec["citation"], "run": None, "our_task": None,
                      "ours": None, "ci_low": None, "ci_high": None, "status": NOT_RUN}
            label, run = by_column.get(column, (None, None))
            task = row["task"]
            if run is not None and task not in run["tasks"]:
                task = ANALOGUES.get(task)
            if run is not None and task in run["tasks"]:
                name, ours, ci = paper_metric(run["tasks"][task], row["metric"])
                record.update(run=label, our_task=task, our_metric=name, ours=ours,
                              ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None)
                if task != row["task"]:
                    record["status"] = ANALOGUE
                elif ci is None or ours is None:
                    record["status"] = NO_INTERVAL
                elif ci[0] <= value <= ci[1]:
                    record["status"] = CONSISTENT
                else:
                    record["status"] = (f"{DIFFERS} (ours "
                                        f"{'higher' if ci[0] > value else 'lower'})")
            out.append(record)
    return out


def markdown_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Cells of the 'paper beside us' table: data set, paper column, ours, paper, status."""
    rows = []
    for r in records:
        ours = "–"
        if r["ours"] is not None:
            ours = numbers.fmt(r["ours"], r["metric"])
            interval = numbers.fmt_ci([r["ci_low"], r["ci_high"]], r["metric"])
            ours += f" {interval}" if interval else ""
            ours += f" ({r['run']}" + (f", {r['our_task']})" if r["our_task"] != r["task"]
                                       else ")")
        # The paper's value exactly as published (two decimals), not in our rounding.
        rows.append([f"{r['dataset']} ({r['metric']})", r["column"], f"{r['paper']:.2f}",
                     ours, r["status"]])
    return rows


PAPER_HEADER = ["data set (metric)", "paper's model", "paper", "ours [95% CI] (run)",
                "ours vs paper"]
