"""Deterministic global batches from a mixing schedule: batch(step) = f(seed, step, schedule, data).

Each task is one *stream*: its SeqIO dataset, shuffled per epoch with a seed derived from
(seed, task, epoch), tokenized, packed into rows (``seqio_tasks.packing``), and the rows
shuffled again through a seeded buffer (``row_shuffle_buffer``): concat packing cuts a long
document into consecutive rows, and without the second shuffle one source file fills whole
batches. Mixing happens between whole rows: within a stage with integer weights w_1..w_J
(period W = Σw), row r of the stage comes from the source ``pattern[r mod W]``, a smooth
interleaving with exactly w_j slots for source j per period. So every window of W rows has the
exact shares, any batch is within one row of them, and the k-th row a source contributes is a
closed-form function of the global row index: a run resumed at step s skips exactly what an
uninterrupted run consumed.

Hosts: host h of H materialises rows [h·B/H, (h+1)·B/H) of each global batch. Every host reads
every stream (rows for other hosts are packed and discarded), so the content of a batch never
depends on H. The cost is that each host tokenizes the global token rate; see the README for
why that is affordable, and for the random-access caches that remove it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from fractions import Fraction
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from seqio_tasks import packing
from seqio_tasks.schedules import MixtureSchedule
from seqio_tasks.sources.files import DataFileError, unwrap_reader_error

MAX_PERIOD = 10_000


def integer_weights(weights: Sequence[float], max_period: int = MAX_PERIOD) -> list[int]:
    """Smallest integers proportional to ``weights`` (approximated if the period would exceed
    ``max_period``, by largest remainder)."""
    fracs = [Fraction(w).limit_denominator(max_period) for w in weights]
    denominator = math.lcm(*(f.denominator for f in fracs))
    ints = [int(f * denominator) for f in fracs]
    divisor = math.gcd(*ints)
    ints = [i // divisor for i in ints]
    if sum(ints) <= max_period:
        return ints
    total = sum(weights)
    exact = [w / total * max_period for w in weights]
    ints = [math.floor(x) for x in exact]
    for j in sorted(range(len(ints)), key=lambda j: exact[j] - ints[j], reverse=True)[
            :max_period - sum(ints)]:
        ints[j] += 1
    return ints


def interleave_pattern(weights: Sequence[int]) -> np.ndarray:
    """Source index for each slot of one period: w_j slots for source j, spread evenly."""
    period = sum(weights)
    credit = np.zeros(len(weights), np.int64)
    pattern = np.empty(period, np.int32)
    w = np.asarray(weights, np.int64)
    for t in range(period):
        credit += w
        j = int(np.argmax(credit))  # ties go to the lowest index
        pattern[t] = j
        credit[j] -= period
    return pattern


@dataclasses.dataclass(frozen=True)
class _StagePlan:
    start_row: int
    weights: np.ndarray        # [J] integer weights
    pattern: np.ndarray        # [W] source per slot
    prefix: np.ndarray         # [W + 1, J] rows of each source among the first t slots
    consumed_before: np.ndarray  # [J] rows each source gave to earlier stages


class MixturePlan:
    """Which source, and which of its rows, fills each global row of each step."""

    def __init__(self, schedule: MixtureSchedule, batch_size: int):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.schedule = schedule
        self.batch_size = batch_size
        self.sources = schedule.tasks
        stages, consumed = [], np.zeros(len(self.sources), np.int64)
        for i, stage in enumerate(schedule.stages):
            weights = np.array(integer_weights([stage.weight(t) for t in self.sources]))
            pattern = interleave_pattern(weights)
            one_hot = np.eye(len(self.sources), dtype=np.int64)[pattern]
            prefix = np.vstack([np.zeros(len(self.sources), np.int64), np.cumsum(one_hot, 0)])
            plan = _StagePlan(stage.start_step * batch_size, weights, pattern, prefix,
                              consumed.copy())
            stages.append(plan)
            if i + 1 < len(schedule.stages):
                rows = (schedule.stages[i + 1].start_step - stage.start_step) * batch_size
                consumed = consumed + self._counts(plan, rows)
        self._stages = stages

    @staticmethod
    def _counts(plan: _StagePlan, rows: int) -> np.ndarray:
        """Rows each source contributes to the first ``rows`` rows of a stage."""
        period = plan.pattern.size
        return (rows // period) * plan.weights + plan.prefix[rows % period]

    def rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, row index within that source) for the B rows of global batch ``step``."""
        plan = self._stages[self.schedule.stage_index(step)]
        r = step * self.batch_size + np.arange(self.batch_size) - plan.start_row
        period = plan.pattern.size
        sources = plan.pattern[r % period]
        within = (r // period) * plan.weights[sources] + plan.prefix[r % period, sources]
        return sources, plan.consumed_before[sources] + within

    def consumed_before(self, step: int) -> np.ndarray:
        """Rows each source gave to steps [0, step): where a resumed run starts each stream."""
        plan = self._stages[self.schedule.stage_index(step)]
        return plan.consumed_before + self._counts(plan, step * self.batch_size - plan.start_row)


def stream_seed(seed: int, task: str, epoch: int) -> int:
    """A 31-bit seed for one task's shuffle in one epoch, the same on every host."""
    digest = hashlib.sha256(f"{seed}/{task}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# Packed rows held by each stream's row shuffle: at 1024 tokens a row, a million tokens
# (a few MB of host memory per stream), enough to spread a long document over many batches.
DEFAULT_ROW_SHUFFLE_BUFFER = 1024


class SourceStream:
    """The endless, deterministic sequence of packed rows of one SeqIO task."""

    def __init__(self, task: Any, split: str, seed: int, packer_factory,
                 shuffle_buffer_size: int | None = None,
                 row_shuffle_buffer: int = DEFAULT_ROW_SHUFFLE_BUFFER):
        if row_shuffle_buffer < 0:
            raise ValueError(f"row_shuffle_buffer={row_shuffle_buffer} must be >= 0 (0: rows "
                             "in packing order).")
        self.task = task
        self.split = split
        self.seed = seed
        self.packer = packer_factory()
        self.shuffle_buffer_size = shuffle_buffer_size
        self.row_shuffle_buffer = row_shuffle_buffer
        self.epoch = 0
        self.position = 0  # rows produced so far
        packed = self._generate()
        self._rows = self._shuffled(packed) if row_shuffle_buffer > 1 else packed

    def _examples(self, epoch: int) -> Iterator[Mapping[str, np.ndarray]]:
        ds = self.task.get_dataset(sequence_length=None, split=self.split, shuffle=True,
                                   seed=stream_seed(self.seed, self.task.name, epoch),
                                   shuffle_buffer_size=self.shuffle_buffer_size,
                                   num_epochs=1, trim_output_features=False,
                                   try_in_mem_cache=False)
        return ds.as_numpy_iterator()

    def _generate(self) -> Iterator[packing.Row]:
        while True:
            stats = self.packer.stats
            examples_before, dropped_before = stats.examples, stats.dropped
            try:
                for example in self._examples(self.epoch):
                    if "inputs" in example:
                        rows = self.packer.add(example["inputs"], example["targets"])
                    else:
                        rows = self.packer.add(example["targets"])
                    yield from rows
            except Exception as err:  # noqa: BLE001 (a reader's error, wrapped by tf.data)
                unwrapped = unwrap_reader_error(err)
                if unwrapped is None:
                    raise
                raise unwrapped from None
            self.epoch += 1
            examples = stats.examples - examples_before
            if examples == 0:
                raise DataFileError(f"Task {self.task.name!r} split {self.split!r} has no "
                                    "examples; is its data empty?")
            if stats.dropped - dropped_before == examples:
                if getattr(self.packer, "overlong", "drop") == "truncate":
                    why, fix = "has a prompt that fills", "raise the sequence length"
                else:
                    why = "is longer than"
                    fix = "raise the sequence length or use overlong='truncate'"
                raise packing.OverlongExampleError(
                    f"Every example of task {self.task.name!r} split {self.split!r} {why} a "
                    f"row of {stats.row_length} tokens and was dropped; {fix}.")

    def _shuffled(self, rows: Iterator[packing.Row]) -> Iterator[packing.Row]:
        """A seeded buffer shuffle of an endless row sequence: deterministic for (seed, task),
        so a resumed stream that skips n rows is where the uninterrupted one was."""
        rng = np.random.default_rng(stream_seed(self.seed, f"{self.task.name}/rows", 0))
        buffer = [next(rows) for _ in range(self.row_shuffle_buffer)]
        for row in rows:
            i = int(rng.integers(len(buffer)))
            yield buffer[i]
            buffer[i] = row

    def next_row(self) -> packing.Row:
        self.position += 1
        return next(self._rows)

    def skip(self, n: int) -> None:
        for _ in range(n):
            self.next_row()


def default_packer_factory(task: Any, sequence_length: int, pack_instructions: bool = False,
                           overlong: str = "drop"):
    """Concat packing for tasks with only 'targets' (pre-training), one example per row (or
    greedy packing) for tasks with 'inputs' and 'targets' (instruction tuning)."""
    pad_id = task.output_features["targets"].vocabulary.pad_id
    if "inputs" not in task.output_features:
        return lambda: packing.ConcatPacker(sequence_length, pad_id)
    cls = packing.GreedyPacker if pack_instructions else packing.OnePerRowPacker
    return lambda: cls(sequence_length, pad_id, overlong)


# Row-count snapshots kept for steps not yet asked for (far more than any prefetch depth).
_ROW_STATS_KEPT = 64


def host_rows(batch_size: int, host_index: int, host_count: int) -> slice:
    """The rows [h·B/H, (h+1)·B/H) of each global batch that host h of H trains on."""
    if batch_size % host_count:
        raise ValueError(f"Global batch size {batch_size} is not divisible by the "
                         f"{host_count} hosts; choose a batch size that is.")
    if not 0 <= host_index < host_count:
        raise ValueError(f"host_index {host_index} is outside [0, {host_count}).")
    return slice(host_index * batch_size // host_count,
                 (host_index + 1) * batch_size // host_count)


class MixtureIterator:
    """Host-local batches of a schedule, starting at any step."""

    def __init__(self, plan: MixturePlan, streams: Mapping[str, SourceStream],
                 start_step: int = 0, host_index: int = 0, host_count: int = 1):
        self.plan = plan
        self.streams = [streams[name] for name in plan.sources]
        self.step = start_step
        self.host_slice = host_rows(plan.batch_size, host_index, host_count)
        for stream, skip in zip(self.streams, plan.consumed_before(start_step)):
            stream.skip(int(skip) - stream.position)
        # step -> what each source's packer had read, dropped and truncated when the batch of
        # that step was made (a snapshot, so a consumer behind a prefetcher reads its step's).
        self._row_stats: dict[int, dict[str, dict[str, int]]] = {}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        sources, indices = self.plan.rows(self.step)
        rows = []
        for source, index in zip(sources, indices):
            stream = self.streams[source]
            if stream.position != index:  # the plan and the streams must agree exactly
                raise AssertionError(f"stream {stream.task.name} at row {stream.position}, "
                                     f"plan wants row {index}")
            rows.append(stream.next_row())
        mine = rows[self.host_slice]
        batch = {k: np.stack([row[k] for row in mine]) for k in packing.ROW_FIELDS}
        batch["source_ids"] = sources[self.host_slice].astype(np.int32)
        if len(self._row_stats) >= _ROW_STATS_KEPT:  # a reader that never asks for them
            self._row_stats.pop(min(self._row_stats))
        self._row_stats[self.step] = {
            stream.task.name: {"examples": stream.packer.stats.examples,
                               "dropped_overlong": stream.packer.stats.dropped,
                               "truncated_overlong": stream.packer.stats.truncated}
            for stream in self.streams}
        self.step += 1
        return batch

    def row_stats(self, step: int) -> dict[str, dict[str, int]]:
        """Examples read, dropped and truncated (as too long for a row) per source, counted
        from the start of the run when the batch of ``step`` was made (the packers read ahead
        of the batches by their row-shuffle buffer). Forgets the steps up to ``step``."""
        for old in [s for s in list(self._row_stats) if s < step]:
            self._row_stats.pop(old, None)
        return self._row_stats.pop(step)


def mixture_iterator(name: str, *, sequence_length: int, batch_size: int, seed: int = 0,
                     split: str = "train", start_step: int = 0, total_steps: int | None = None,
                     host_index: int = 0, host_count: int = 1, pack_instructions: bool = False,
                     overlong: str = "drop",
                     row_shuffle_buffer: int = DEFAULT_ROW_SHUFFLE_BUFFER) -> MixtureIterator:
    """Host-local batches of a schedule, static mixture or task registered by name.

    ``total_steps`` places the phases of registered schedules (default: a 1000-step run);
    ``row_shuffle_buffer`` is the rows the row shuffle of each pre-training (concat-packed)
    stream holds (0 or 1: packing order). Instruction streams keep every example whole (one a
    row, or several with ``pack_instructions``), already shuffled per epoch, and are not
    shuffled again.
    """
    import seqio

    from seqio_tasks import mixtures  # noqa: F401 (registers tasks, mixtures, schedules)
    from seqio_tasks.registry import resolve_schedule

    schedule = resolve_schedule(name, total_steps or 1000)
    plan = MixturePlan(schedule, batch_size)
    streams = {}
    for task_name in plan.sources:
        task = seqio.get_mixture_or_task(task_name)
        factory = default_packer_factory(task, sequence_length, pack_instructions, overlong)
        concat_packed = "inputs" not in task.output_features
        streams[task_name] = SourceStream(
            task, split, seed, factory, row_shuffle_buffer=row_shuffle_buffer if concat_packed
            else 0)
    return MixtureIterator(plan, streams, start_step, host_index, host_count)
