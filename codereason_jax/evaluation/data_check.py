"""Each task's split, and its data read without a model: rows, skipped records and chance
(``--check_data``, and the data identity a result is fingerprinted with)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from codereason_jax.evaluation.eval_config import EvalConfig
from codereason_jax.model.config import ConfigError


def resolve_splits(config: EvalConfig) -> dict[str, str]:
    """Each task's split: its override in EvalConfig.split, else its default. Unknown tasks or
    splits are refused here, before any model work, with what exists."""
    import seqio

    from seqio_tasks.tasks import default_split

    names = seqio.TaskRegistry.names()
    unknown = [t for t in config.tasks if t not in names]
    if unknown:
        raise ConfigError(f"unknown tasks {unknown}; evaluation tasks: "
                          f"{sorted(n for n in names if n.startswith('eval_'))}")
    stray = [t for t in config.split if t not in names]
    if stray:
        raise ConfigError(f"EvalConfig.split names unknown tasks {stray}.")
    splits = {}
    for name in config.tasks:
        split = config.split.get(name) or default_split(name)
        available = list(seqio.get_mixture_or_task(name).source.splits)
        if split not in available:
            raise ConfigError(f"task {name} has no split {split!r}; its splits: {available} "
                              f"(set EvalConfig.split = {{'{name}': '{available[0]}'}}).")
        splits[name] = split
    return splits


def data_summary(name: str, split: str) -> dict[str, Any]:
    """Rows, skipped counts and chance of a task's split, read without a model or vocabulary."""
    import seqio

    from seqio_tasks.tasks import BENCHMARKS

    if name in BENCHMARKS:
        loaded = BENCHMARKS[name].load(split)
        return {"rows": len(loaded.examples), "skipped": loaded.examples.skipped,
                "skipped_at": loaded.examples.skipped_at,
                "filtered": loaded.examples.filtered, "chance": loaded.chance,
                "source": loaded.examples.source, "sha256": loaded.data_sha256}
    source = seqio.get_mixture_or_task(name).source
    gold: dict[str, tuple[int, int]] = {}  # example id -> (|gold|, |candidates|)
    rows = 0
    for row in source.get_dataset(split, shuffle=False).as_numpy_iterator():
        rows += 1
        if "candidate" in row:
            labels = {x for x in row["labels"].decode().split(",") if x}
            count = gold.get(row["example_id"], (len(labels), 0))[1]
            gold[row["example_id"]] = (len(labels), count + 1)
    chance = (float(np.mean([g / c for g, c in gold.values()])) if gold else None)
    return {"rows": len(gold) if gold else rows, "skipped": {}, "skipped_at": {},
            "filtered": {}, "chance": chance, "source": None, "sha256": None}


def check_data_line(name: str, split: str, summary: dict[str, Any]) -> str:
    """``eval_jecqa_kd: 999 rows, skipped 1 (empty answer 1), split test, chance 0.49``."""
    from seqio_tasks.sources.rows import describe_counts

    skipped = sum(summary["skipped"].values())
    line = f"{name}: {summary['rows']} rows, skipped {skipped}"
    if skipped:
        line += f" ({describe_counts(summary['skipped'])})"
    chance = summary["chance"]
    line += f", split {split}, chance " + ("n/a" if chance is None else f"{chance:.2f}")
    if summary["filtered"]:
        line += f", filtered {sum(summary['filtered'].values())} " \
                f"({describe_counts(summary['filtered'])})"
    return line


def check_data(splits: dict[str, str]) -> int:
    """Print each task's data line (``--check_data``); 1 if any task's data cannot be
    loaded, naming each failure on stderr."""
    failed = 0
    for name, split in splits.items():
        try:
            print(check_data_line(name, split, data_summary(name, split)), flush=True)
        except ValueError as err:  # DataFileError, a template that cannot be filled
            print(f"error: {name}: {err}", file=sys.stderr, flush=True)
            failed += 1
    if failed:
        print(f"error: {failed} of {len(splits)} tasks could not be loaded.", file=sys.stderr)
    return 1 if failed else 0
