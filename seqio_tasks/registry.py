"""Helpers to register SeqIO tasks over Python record readers, and to resolve mixture names.

A ``RecordSource`` turns a function ``records(split) -> Iterable[dict]`` into a SeqIO data
source; reading happens only when a dataset is requested, so registering a task over files that
are not on this machine costs nothing and fails, when used, with the reader's message naming
the missing file.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import seqio
import tensorflow as tf

from seqio_tasks import schedules

Records = Callable[[str], Iterable[Mapping[str, Any]]]

_TF_TYPES = {str: tf.string, int: tf.int64, float: tf.float32}


class RecordSource(seqio.FunctionDataSource):
    """A SeqIO source over ``records(split)``, keeping the fields named in ``fields``."""

    def __init__(self, records: Records, fields: Mapping[str, type], splits: Sequence[str]):
        self._records = records
        self._fields = dict(fields)
        super().__init__(dataset_fn=self._dataset, splits=tuple(splits))

    def _dataset(self, split: str, shuffle_files: bool, seed: int | None = None
                 ) -> tf.data.Dataset:
        del shuffle_files, seed  # examples are shuffled by the Task, deterministically
        signature = {k: tf.TensorSpec((), _TF_TYPES[t]) for k, t in self._fields.items()}

        def generate():
            for record in self._records(split):
                yield {k: record[k] for k in self._fields}

        return tf.data.Dataset.from_generator(generate, output_signature=signature)

    @functools.lru_cache(maxsize=None)
    def num_input_examples(self, split: str) -> int:  # type: ignore[override]
        return sum(1 for _ in self._records(split))


def add_task(name: str, source: seqio.DataSource, preprocessors: Sequence[Callable],
             output_features: Mapping[str, seqio.Feature], shuffle_buffer_size: int = 10_000,
             metric_fns: Sequence[Callable] = ()) -> seqio.Task:
    """Register (or re-register, for reloads) a task."""
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(name, source=source, preprocessors=list(preprocessors),
                                  output_features=dict(output_features),
                                  shuffle_buffer_size=shuffle_buffer_size,
                                  metric_fns=list(metric_fns))


def add_mixture(name: str, tasks_and_rates: Sequence[tuple[str, Any]]) -> seqio.Mixture:
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, list(tasks_and_rates))


def add_scheduled_mixture(name: str, factory: Callable[[int], schedules.MixtureSchedule]
                          ) -> None:
    """Register a schedule, plus one plain SeqIO mixture per stage (``NAME_stage1``, ...) so each
    stage can be inspected with ``seqio.get_mixture_or_task``."""
    if schedules.is_schedule(name):
        schedules._SCHEDULES.pop(name)  # noqa: SLF001 (re-registration on reload)
    schedules.register_schedule(name, factory)
    example = factory(1000)  # stage rates do not depend on the run length
    for i, stage in enumerate(example.stages, start=1):
        add_mixture(f"{name}_stage{i}", [(t, w) for t, w in stage.rates if w > 0])


def resolve_schedule(name: str, total_steps: int) -> schedules.MixtureSchedule:
    """A registered schedule, a static SeqIO mixture (one stage) or a single task."""
    if schedules.is_schedule(name):
        return schedules.get_schedule(name, total_steps)
    if name in seqio.MixtureRegistry.names():
        mixture = seqio.get_mixture_or_task(name)
        rates = {task.name: float(mixture.get_rate(task)) for task in mixture.tasks}
        return schedules.make_schedule(name, [(0, rates)])
    if name in seqio.TaskRegistry.names():
        return schedules.make_schedule(name, [(0, {name: 1.0})])
    raise schedules.ScheduleError(
        f"{name!r} is neither a registered schedule, a SeqIO mixture nor a task. Schedules: "
        f"{schedules.schedule_names()}; mixtures: {sorted(seqio.MixtureRegistry.names())}.")
