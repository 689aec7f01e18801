"""What the data rules left out, as results of the run: counts per rule and source.

The packers drop or truncate examples longer than a row (``TrainConfig.overlong``); the corpus
readers skip documents by rule (licence filter, empty documents, file kinds not asked for).
These counts go into ``metrics.jsonl`` at log steps, ``summary.json`` and the end-of-run lines.
"""

from __future__ import annotations

from typing import Any


def corpus_reads() -> dict[str, dict[str, Any]]:
    """What the corpus readers' rules left out in their last complete pass (licence filter,
    empty documents, file kinds not asked for), per corpus."""
    from seqio_tasks.sources.corpora import LAST_READS

    return {name: {"files": stats.files, "documents": stats.documents,
                   "skipped": dict(stats.skipped)} for name, stats in LAST_READS.items()}


def scalars(row_stats: dict[str, dict[str, int]]) -> dict[str, int]:
    """``{"rows/<source>/dropped_overlong": n, ...}``: the counts of each rule per source."""
    return {f"rows/{source}/{name}": value for source, counts in row_stats.items()
            for name, value in counts.items()}


def describe_dropped(summary: dict[str, Any]) -> list[str]:
    """One line per source whose rules dropped or truncated examples, and per corpus whose
    reader skipped documents."""
    lines = []
    for name, read in summary.get("corpora", {}).items():
        if read["skipped"]:
            skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(read["skipped"].items()))
            lines.append(f"{name}: {read['documents']} documents kept; skipped {skipped}")
    return describe_row_stats(summary["rows"]) + lines


def describe_row_stats(row_stats: dict[str, dict[str, int]]) -> list[str]:
    """One line per source whose rules dropped or truncated examples."""
    lines = []
    for source, counts in row_stats.items():
        if counts["dropped_overlong"] or counts["truncated_overlong"]:
            lines.append(f"{source}: of {counts['examples']} examples read, "
                         f"{counts['dropped_overlong']} dropped and "
                         f"{counts['truncated_overlong']} truncated as longer than a row "
                         "(TrainConfig.overlong)")
    return lines
