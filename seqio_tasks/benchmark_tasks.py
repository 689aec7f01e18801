"""An evaluation task over a published benchmark file: reader, template and splits.

A :class:`Benchmark` knows which reader reads which file for each SeqIO split, the template
that turns a record into candidates (or a prompt), and the split the paper evaluated (its
default). The templated examples of a split are read once per process and policy, with the
counts of what was skipped attached, so the SeqIO task, the evaluator's results file and
``evaluate --check_data`` all see the same rows and the same counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Mapping

from seqio_tasks.sources.files import RowError, data_root
from seqio_tasks.sources.rows import ReadPolicy, Records, RowLog, current_policy

TEMPLATE_FAILED = "cannot fill the template"


@dataclasses.dataclass(frozen=True)
class Examples:
    """The templated examples of one split, with the reader's counts and the chance level."""
    # The templated examples, with the reader's skipped / filtered counts (template misses
    # included) attached.
    examples: Records
    chance: float | None  # expected accuracy of a uniform random pick, as scored; None: n/a
    data_sha256: str  # of the file read, for result fingerprints


@dataclasses.dataclass(frozen=True)
class Benchmark:
    reader: Callable[..., Records]
    template: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    splits: Mapping[str, Mapping[str, Any]]  # SeqIO split -> reader keyword arguments
    default_split: str  # the split the paper evaluated

    def __post_init__(self):
        if self.default_split not in self.splits:
            raise ValueError(f"default split {self.default_split!r} is not among "
                             f"{list(self.splits)}")

    @property
    def generation(self) -> bool:
        from seqio_tasks.eval_templates import GENERATION_TEMPLATES

        return self.template in GENERATION_TEMPLATES.values()

    def load(self, split: str, policy: ReadPolicy | None = None) -> Examples:
        """Read and template ``split`` (cached per data root and policy)."""
        if split not in self.splits:
            raise ValueError(f"no split {split!r}; splits: {list(self.splits)}")
        policy = policy or current_policy()
        key = (id(self), split, os.path.abspath(data_root()), policy)
        if key not in _CACHE:
            # The entry keeps its benchmark alive, so no other object can take over its id.
            _CACHE[key] = (self, self._load(split, policy))
        return _CACHE[key][1]

    def examples(self, split: str) -> list[dict[str, Any]]:
        return self.load(split).examples

    def _load(self, split: str, policy: ReadPolicy) -> Examples:
        records = self.reader(**self.splits[split], policy=policy)
        # A record the template cannot fill (an E-KAR item without an explanation per option
        # for the CoT template) cannot be scored either: counted with the reader's skips.
        log = RowLog(records.source, policy)
        for record in records:
            record_id = record.get("id", record.get("task_id"))
            with log.row(f"record {record_id!r}") as where:
                try:
                    example = dict(self.template(record))
                except ValueError as err:
                    raise RowError(f"{where}: {err}", TEMPLATE_FAILED) from None
                log.keep(example, record_id, where)
        for reason, count in records.skipped.items():
            log.skipped[reason] = log.skipped.get(reason, 0) + count
            log.skipped_at.setdefault(reason, []).extend(records.skipped_at.get(reason, []))
        log.filtered.update(records.filtered)
        examples = log.finish(warn=TEMPLATE_FAILED in log.skipped)  # the reader warned already
        return Examples(examples, None if self.generation else chance(examples),
                        _sha256(records.source))


_CACHE: dict[tuple, tuple[Benchmark, Examples]] = {}


def chance(examples: list[Mapping[str, Any]]) -> float:
    """The expected accuracy of picking one candidate uniformly at random, as scored: a pick
    is correct iff it is any gold candidate, so each example adds |gold| / |candidates|."""
    if not examples:
        return float("nan")
    return sum(len(set(e["labels"])) / len(e["candidates"]) for e in examples) / len(examples)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
