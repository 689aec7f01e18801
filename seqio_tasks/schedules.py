"""Stage-wise mixing schedules: which share of each task's sequences a training step draws.

A schedule is a list of stages ``(start_step, {task: weight})``; weights are relative and apply
to whole packed sequences (see ``seqio_tasks.mixing``), so for pre-training rows (dense packing)
they are token shares and for instruction tuning (one example per row) example shares. A static
mixture is a one-stage schedule.

The paper's three instruction-tuning strategies (Table 5, text:code per phase) are here by
name. The paper does not give the phase lengths; by default the four phases are equal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Callable, Mapping, Sequence

# Table 5 of Ma et al. 2024: (text, code) weights for each of the four phases.
PAPER_STRATEGIES: dict[str, tuple[tuple[int, int], ...]] = {
    "uniform": ((5, 3), (5, 3), (5, 3), (5, 3)),
    "stepwise_increase": ((7, 3), (7, 3), (6, 4), (5, 5)),
    "stepwise_decrease": ((5, 5), (6, 4), (7, 3), (7, 3)),
}


class ScheduleError(ValueError):
    """A schedule is malformed; the message names the stage and what to change."""


@dataclasses.dataclass(frozen=True)
class Stage:
    start_step: int
    rates: tuple[tuple[str, float], ...]  # (task name, relative weight), in a fixed order

    def weight(self, task: str) -> float:
        return dict(self.rates).get(task, 0.0)


@dataclasses.dataclass(frozen=True)
class MixtureSchedule:
    name: str
    stages: tuple[Stage, ...]

    def __post_init__(self):
        if not self.stages:
            raise ScheduleError(f"Schedule {self.name!r} has no stages.")
        if self.stages[0].start_step != 0:
            raise ScheduleError(f"Schedule {self.name!r}: the first stage must start at step 0, "
                                f"not {self.stages[0].start_step}.")
        for i, (a, b) in enumerate(zip(self.stages, self.stages[1:]), start=1):
            if b.start_step <= a.start_step:
                raise ScheduleError(
                    f"Schedule {self.name!r}: stage {i + 1} starts at step {b.start_step}, not "
                    f"after stage {i} (step {a.start_step}); start steps must increase.")
        for i, stage in enumerate(self.stages, start=1):
            if not stage.rates:
                raise ScheduleError(f"Schedule {self.name!r}: stage {i} has no tasks.")
            for task, weight in stage.rates:
                if not isinstance(task, str) or not weight >= 0:
                    raise ScheduleError(f"Schedule {self.name!r}: stage {i} has an invalid "
                                        f"entry ({task!r}, {weight!r}); weights must be >= 0.")
            if sum(w for _, w in stage.rates) <= 0:
                raise ScheduleError(f"Schedule {self.name!r}: stage {i} has no positive weight.")

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task of any stage, in order of first appearance."""
        seen: dict[str, None] = {}
        for stage in self.stages:
            for task, _ in stage.rates:
                seen.setdefault(task)
        return tuple(seen)

    def stage_index(self, step: int) -> int:
        index = 0
        for i, stage in enumerate(self.stages):
            if stage.start_step <= step:
                index = i
        return index

    def shares(self, stage_index: int) -> dict[str, float]:
        """Normalised weights of one stage over all the schedule's tasks."""
        stage = self.stages[stage_index]
        total = sum(w for _, w in stage.rates)
        return {task: stage.weight(task) / total for task in self.tasks}

    def fingerprint(self) -> str:
        """A hash of the stages, stored with checkpoints to refuse silent schedule changes."""
        canonical = json.dumps([[s.start_step, [[t, float(w)] for t, w in s.rates]]
                                for s in self.stages])
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def make_schedule(name: str, stages: Sequence[tuple[int, Mapping[str, float]]]
                  ) -> MixtureSchedule:
    """Build a schedule from ``[(start_step, {task: weight}), ...]``."""
    return MixtureSchedule(name, tuple(Stage(int(start), tuple(rates.items()))
                                       for start, rates in stages))


def phase_starts(total_steps: int, fractions: Sequence[float]) -> list[int]:
    """Start steps of consecutive phases whose lengths are ``fractions`` of ``total_steps``."""
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f <= 0 for f in fractions):
        raise ScheduleError(f"Phase fractions {list(fractions)} must be positive and sum to 1.")
    starts, acc = [], 0.0
    for f in fractions:
        starts.append(round(acc * total_steps))
        acc += f
    if len(set(starts)) != len(starts):
        raise ScheduleError(f"total_steps={total_steps} is too few for {len(fractions)} phases "
                            f"of fractions {list(fractions)}; train for more steps.")
    return starts


def paper_strategy(strategy: str, text_task: str, code_task: str, total_steps: int,
                   fractions: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
                   name: str | None = None) -> MixtureSchedule:
    """One of Table 5's strategies over the given text and code tasks."""
    if strategy not in PAPER_STRATEGIES:
        raise ScheduleError(f"Unknown strategy {strategy!r}; choose one of "
                            f"{sorted(PAPER_STRATEGIES)}.")
    ratios = PAPER_STRATEGIES[strategy]
    if len(fractions) != len(ratios):
        raise ScheduleError(f"{strategy} has {len(ratios)} phases; got {len(fractions)} "
                            "phase fractions.")
    starts = phase_starts(total_steps, fractions)
    return make_schedule(name or strategy, [(start, {text_task: t, code_task: c})
                                            for start, (t, c) in zip(starts, ratios)])


# Registered schedules: name -> factory(total_steps) -> MixtureSchedule.
_SCHEDULES: dict[str, Callable[[int], MixtureSchedule]] = {}


def register_schedule(name: str, factory: Callable[[int], MixtureSchedule]) -> None:
    if name in _SCHEDULES:
        raise ScheduleError(f"A schedule named {name!r} is already registered.")
    _SCHEDULES[name] = factory


def is_schedule(name: str) -> bool:
    return name in _SCHEDULES


def get_schedule(name: str, total_steps: int) -> MixtureSchedule:
    if name not in _SCHEDULES:
        raise ScheduleError(f"No schedule named {name!r}; registered: {sorted(_SCHEDULES)}.")
    return _SCHEDULES[name](total_steps)


def schedule_names() -> list[str]:
    return sorted(_SCHEDULES)
