"""Tests added to kill surviving mutants of the science-critical modules (issue 19 item 6).

Each test checks one behaviour against values worked out by hand or computed independently of
the code under test; docs/mutation-testing.md lists the mutants each one kills.
"""

import hashlib
import json
import math

import numpy as np
import pytest

from codereason_jax.evaluation.eval_metrics import bleu, dureader, pass_rate
from seqio_tasks import mixing, packing, schedules

# --- schedules -------------------------------------------------------------------------------


def test_a_task_missing_from_a_stage_gets_no_rows_there():
    schedule = schedules.make_schedule("s", [(0, {"a": 1, "b": 1}), (2, {"b": 1})])
    assert schedule.stages[1].weight("a") == 0.0
    assert schedule.stages[1].weight("b") == 1.0
    plan = mixing.MixturePlan(schedule, batch_size=4)
    for step in range(2, 6):
        sources, _ = plan.rows(step)
        assert list(sources) == [1, 1, 1, 1]  # "a" is source 0, absent from stage 2
    np.testing.assert_array_equal(plan.consumed_before(6), [4, 4 + 16])


def test_shares_are_the_normalised_weights_over_every_task():
    schedule = schedules.make_schedule("s", [(0, {"a": 3, "b": 1}), (5, {"c": 2, "b": 2})])
    assert schedule.shares(0) == {"a": 0.75, "b": 0.25, "c": 0.0}
    assert schedule.shares(1) == {"a": 0.0, "b": 0.5, "c": 0.5}


def test_stage_index_is_the_last_stage_started():
    schedule = schedules.make_schedule("s", [(0, {"a": 1}), (3, {"a": 2}), (7, {"a": 3})])
    assert [schedule.stage_index(s) for s in range(10)] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_weights_summing_to_less_than_one_are_a_valid_stage():
    schedule = schedules.make_schedule("s", [(0, {"a": 0.25, "b": 0.5})])
    assert schedule.shares(0) == pytest.approx({"a": 1 / 3, "b": 2 / 3})


@pytest.mark.parametrize("stages,message", [
    ([], "has no stages"),
    ([(0, {"a": 1}), (4, {"a": 1}), (4, {"a": 2})],
     r"stage 3 starts at step 4, not after stage 2 \(step 4\)"),
    ([(0, {"a": 1}), (2, {})], "stage 2 has no tasks"),
    ([(0, {"a": 1}), (2, {"a": -1.0})], r"stage 2 has an invalid entry \('a', -1.0\)"),
    ([(0, {"a": 1}), (2, {"a": 0})], "stage 2 has no positive weight"),
])
def test_schedule_errors_name_the_offending_stage(stages, message):
    with pytest.raises(schedules.ScheduleError, match=message):
        schedules.make_schedule("bad", stages)


def test_schedule_keeps_its_name_and_the_paper_strategy_defaults_to_its_own():
    assert schedules.make_schedule("mine", [(0, {"a": 1})]).name == "mine"
    assert schedules.paper_strategy("uniform", "t", "c", 100).name == "uniform"
    assert schedules.paper_strategy("uniform", "t", "c", 100, name="x").name == "x"


def test_fingerprint_is_16_hex_of_the_sha256_of_the_canonical_stages():
    schedule = schedules.make_schedule("s", [(0, {"a": 1, "b": 3}), (10, {"b": 0.5})])
    canonical = json.dumps([[0, [["a", 1.0], ["b", 3.0]]], [10, [["b", 0.5]]]])
    assert schedule.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_phase_starts_are_rounded_cumulative_fractions():
    assert schedules.phase_starts(100, (0.25, 0.25, 0.25, 0.25)) == [0, 25, 50, 75]
    assert schedules.phase_starts(10, (0.3, 0.3, 0.4)) == [0, 3, 6]


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (0.75, 0.75), (1.5,), (0.0, 1.0),
                                       (-0.5, 1.5)])
def test_phase_fractions_must_be_positive_and_sum_to_one(fractions):
    with pytest.raises(schedules.ScheduleError, match=r"must be positive and sum to 1"):
        schedules.phase_starts(100, fractions)


def test_too_few_steps_for_the_phases_is_refused():
    with pytest.raises(schedules.ScheduleError, match=r"total_steps=2 is too few for 4 phases"):
        schedules.phase_starts(2, (0.25, 0.25, 0.25, 0.25))


def test_paper_strategy_refuses_unknown_names_and_wrong_phase_counts():
    with pytest.raises(schedules.ScheduleError, match=r"choose one of \['stepwise_decrease'"):
        schedules.paper_strategy("sideways", "t", "c", 100)
    with pytest.raises(schedules.ScheduleError,
                       match="uniform has 4 phases; got 2 phase fractions."):
        schedules.paper_strategy("uniform", "t", "c", 100, fractions=(0.5, 0.5))


def test_registered_schedules_are_found_once_and_unknown_ones_refused():
    name = "mutation_kill_schedule"
    try:
        schedules.register_schedule(name, lambda steps: schedules.make_schedule(
            name, [(0, {"a": 1}), (steps // 2, {"b": 1})]))
        assert schedules.is_schedule(name)
        assert schedules.get_schedule(name, 40).stages[1].start_step == 20
        with pytest.raises(schedules.ScheduleError, match=f"'{name}' is already registered"):
            schedules.register_schedule(name, lambda steps: None)
    finally:
        schedules._SCHEDULES.pop(name, None)  # noqa: SLF001
    with pytest.raises(schedules.ScheduleError, match=r"No schedule named 'nope'; registered: \["):
        schedules.get_schedule("nope", 10)


# --- mixing: the plan ---------------------------------------------------------------------------


@pytest.mark.parametrize("weights,expected", [
    ([5, 3], [5, 3]), ([10, 6], [5, 3]), ([0.7, 0.3], [7, 3]), ([0.5, 0.25, 0.25], [2, 1, 1]),
    ([1 / 3, 2 / 3], [1, 2]), ([1, 0], [1, 0]), ([4, 0, 6], [2, 0, 3]),
])
def test_integer_weights_are_the_smallest_proportional_integers(weights, expected):
    assert mixing.integer_weights(weights) == expected


def test_integer_weights_beyond_the_period_use_the_largest_remainders():
    # [7, 2, 1] over a period of 4: exact 2.8, 0.8, 0.4 -> floors 2, 0, 0 plus the two largest
    # remainders (0.8, 0.8) -> 3, 1, 0.
    assert mixing.integer_weights([7, 2, 1], max_period=4) == [3, 1, 0]
    # Ties keep the order of the sources: 2/3 each -> the first two get the 2 slots.
    assert mixing.integer_weights([1, 1, 1], max_period=2) == [1, 1, 0]
    assert mixing.integer_weights([3, 1], max_period=4) == [3, 1]  # a period of exactly 4
    # The largest remainders, not the largest weights: exact 1.5, 0.9, 0.6 -> 1, 1, 1.
    assert mixing.integer_weights([5, 3, 2], max_period=3) == [1, 1, 1]


@pytest.mark.parametrize("weights,expected", [
    ([5, 3], [0, 1, 0, 0, 1, 0, 1, 0]),  # worked by hand with the credit rule
    ([1, 1, 2], [2, 0, 1, 2]),
    ([2, 0], [0, 0]),
    ([1, 3], [1, 0, 1, 1]),
])
def test_interleave_pattern_follows_the_credit_rule(weights, expected):
    pattern = mixing.interleave_pattern(weights)
    assert pattern.dtype == np.int32
    assert pattern.tolist() == expected


def test_plan_rows_and_consumption_over_three_stages_by_hand():
    schedule = schedules.make_schedule(
        "s", [(0, {"a": 1, "b": 1}), (2, {"a": 1, "b": 3}), (5, {"a": 1})])
    plan = mixing.MixturePlan(schedule, batch_size=3)
    expected = {  # stage 1: pattern [0, 1]; stage 2: [1, 0, 1, 1] from a=3, b=3; stage 3: a only
        0: ([0, 1, 0], [0, 0, 1]), 1: ([1, 0, 1], [1, 2, 2]),
        2: ([1, 0, 1], [3, 3, 4]), 3: ([1, 1, 0], [5, 6, 4]), 4: ([1, 1, 1], [7, 8, 9]),
        5: ([0, 0, 0], [5, 6, 7]), 6: ([0, 0, 0], [8, 9, 10]),
    }
    for step, (sources, indices) in expected.items():
        got_sources, got_indices = plan.rows(step)
        assert got_sources.tolist() == sources and got_indices.tolist() == indices, step
        assert got_indices.dtype.kind == "i"  # row numbers index the store's shards
    consumed = {0: [0, 0], 1: [2, 1], 2: [3, 3], 3: [4, 5], 4: [5, 7], 5: [5, 10], 6: [8, 10],
                7: [11, 10]}
    for step, counts in consumed.items():
        assert plan.consumed_before(step).tolist() == counts, step
        assert plan.consumed_before(step).dtype.kind == "i"


def test_a_plan_needs_a_positive_batch_size():
    schedule = schedules.make_schedule("s", [(0, {"a": 1, "b": 2})])
    single = mixing.MixturePlan(schedule, batch_size=1)
    assert [int(single.rows(step)[0][0]) for step in range(3)] == [1, 0, 1]
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        mixing.MixturePlan(schedule, batch_size=0)


def test_host_rows_split_the_batch_in_order():
    assert [mixing.host_rows(8, h, 4) for h in range(4)] == [
        slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    assert mixing.host_rows(6, 0, 1) == slice(0, 6)
    with pytest.raises(ValueError, match="batch size 8 is not divisible by the 3 hosts"):
        mixing.host_rows(8, 0, 3)
    for index in (-1, 4):
        with pytest.raises(ValueError, match=rf"host_index {index} is outside \[0, 4\)"):
            mixing.host_rows(8, index, 4)


# --- mixing: seeds and streams (fake tasks: no SeqIO, milliseconds) --------------------------


class FakeTask:
    """A SeqIO-like task whose every epoch is the same documents; records get_dataset calls."""

    def __init__(self, name, docs):
        self.name, self.docs, self.calls = name, docs, []

    def get_dataset(self, **kwargs):
        self.calls.append(kwargs)
        examples = [d if isinstance(d, dict) else {"targets": d} for d in self.docs]

        class Dataset:
            def as_numpy_iterator(self):
                return iter([{k: np.asarray(v, np.int32) for k, v in e.items()}
                             for e in examples])

        return Dataset()


def _docs(first, n, length=5):
    """n documents of ``length`` tokens (the last one EOS = 1), numbered from ``first``."""
    return [list(range(100 * (first + i) + 2, 100 * (first + i) + length + 1)) + [1]
            for i in range(n)]


def test_stream_seed_is_31_bits_of_sha256_big_endian():
    # Golden values: a change reorders every dataset and breaks resuming old checkpoints.
    assert mixing.stream_seed(0, "text", 0) == 1722351805
    assert mixing.stream_seed(7, "code/rows", 3) == 1249719767
    for seed, task, epoch in [(0, "a", 0), (1, "b", 2), (123, "x/rows", 0)]:
        digest = hashlib.sha256(f"{seed}/{task}/{epoch}".encode()).digest()
        expected = int.from_bytes(digest[:4], "big") % 2**31
        assert mixing.stream_seed(seed, task, epoch) == expected < 2**31


def test_a_negative_row_shuffle_buffer_is_refused():
    with pytest.raises(ValueError, match=r"row_shuffle_buffer=-1 must be >= 0 \(0: rows in "
                                         r"packing order\)"):
        mixing.SourceStream(None, "train", 0, lambda: None, row_shuffle_buffer=-1)


def test_a_stream_reads_each_epoch_with_its_own_seed_and_the_given_buffer():
    task = FakeTask("t", _docs(0, 2))
    stream = mixing.SourceStream(task, "validation", 5, lambda: packing.ConcatPacker(4),
                                 shuffle_buffer_size=77, row_shuffle_buffer=0)
    rows = [stream.next_row() for _ in range(5)]  # 2 rows an epoch: epochs 0, 1, 2
    np.testing.assert_array_equal(rows[0]["inputs"], [2, 3, 4, 5])
    np.testing.assert_array_equal(rows[2]["inputs"], [2, 3, 4, 5])  # epoch 1 starts again
    assert stream.position == 5 and stream.epoch == 2
    assert [c["seed"] for c in task.calls] == [mixing.stream_seed(5, "t", e) for e in range(3)]
    for call in task.calls:  # one shuffled, untrimmed, uncached epoch at a time
        assert call == {"sequence_length": None, "split": "validation", "shuffle": True,
                        "seed": call["seed"], "shuffle_buffer_size": 77, "num_epochs": 1,
                        "trim_output_features": False, "try_in_mem_cache": False}


def test_an_instruction_stream_packs_prompt_and_response():
    task = FakeTask("sft", [{"inputs": [5, 6], "targets": [7, 1]}])
    stream = mixing.SourceStream(task, "train", 0, lambda: packing.OnePerRowPacker(6),
                                 row_shuffle_buffer=0)
    row = stream.next_row()
    np.testing.assert_array_equal(row["inputs"], [5, 6, 7, 0, 0, 0])
    np.testing.assert_array_equal(row["loss_weights"], [0, 1, 1, 0, 0, 0])


def test_an_empty_or_all_overlong_task_fails_loudly():
    empty = mixing.SourceStream(FakeTask("empty", []), "train", 0,
                                lambda: packing.ConcatPacker(4), row_shuffle_buffer=0)
    with pytest.raises(mixing.DataFileError,
                       match="Task 'empty' split 'train' has no examples; is its data empty"):
        empty.next_row()
    long = mixing.SourceStream(FakeTask("long", [{"inputs": [2] * 6, "targets": [3, 1]}]),
                               "test", 0, lambda: packing.OnePerRowPacker(4),
                               row_shuffle_buffer=0)
    with pytest.raises(packing.OverlongExampleError,
                       match="^Every example of task 'long' split 'test' is longer than a row "
                             "of 4 tokens and was dropped; raise the sequence length or use "
                             "overlong='truncate'.$"):
        long.next_row()
    # Truncation keeps only examples whose prompt leaves room for a target token.
    prompts = mixing.SourceStream(FakeTask("long", [{"inputs": [2] * 5, "targets": [3, 1]}]),
                                  "test", 0, lambda: packing.OnePerRowPacker(4, overlong="truncate"),
                                  row_shuffle_buffer=0)
    with pytest.raises(packing.OverlongExampleError,
                       match="^Every example of task 'long' split 'test' has a prompt that fills "
                             "a row of 4 tokens and was dropped; raise the sequence length.$"):
        prompts.next_row()


def _reference_row_shuffle(rows, seed, name, size):
    """The documented buffer shuffle, written out: fill ``size`` rows, then emit a random slot
    (rng seeded by stream_seed(seed, name + "/rows", 0)) and refill it."""
    rng = np.random.default_rng(mixing.stream_seed(seed, f"{name}/rows", 0))
    rows = iter(rows)
    buffer = [next(rows) for _ in range(size)]
    for row in rows:
        i = int(rng.integers(len(buffer)))
        yield buffer[i]
        buffer[i] = row


def test_the_row_shuffle_is_the_seeded_buffer_shuffle():
    docs = _docs(0, 30)
    stream = mixing.SourceStream(FakeTask("t", docs), "train", 3,
                                 lambda: packing.ConcatPacker(4), row_shuffle_buffer=4)
    got = [int(stream.next_row()["inputs"][0]) for _ in range(40)]
    packed = [d[0] for d in docs] * 3  # one row per document, the same each epoch
    expected = list(_reference_row_shuffle(packed, 3, "t", 4))[:40]
    assert got == expected and got != packed[:40]
    unshuffled = mixing.SourceStream(FakeTask("t", docs), "train", 3,
                                     lambda: packing.ConcatPacker(4), row_shuffle_buffer=1)
    assert [int(unshuffled.next_row()["inputs"][0]) for _ in range(40)] == packed[:40]
    two = mixing.SourceStream(FakeTask("t", docs), "train", 3,
                              lambda: packing.ConcatPacker(4), row_shuffle_buffer=2)
    got = [int(two.next_row()["inputs"][0]) for _ in range(40)]
    assert got == list(_reference_row_shuffle(packed, 3, "t", 2))[:40] != packed[:40]


class _BrokenTask(FakeTask):
    """A task whose reader fails, as tf.data reports it: the reader's error inside the text."""

    def __init__(self, error):
        super().__init__("broken", [])
        self.error = error

    def get_dataset(self, **kwargs):
        error = self.error

        class Dataset:
            def as_numpy_iterator(self):
                raise error

        return Dataset()


def test_a_reader_error_inside_a_pipeline_error_is_raised_as_itself():
    wrapped = RuntimeError("tf.data failed\nDataFileError: shard 3 of x.jsonl is truncated")
    stream = mixing.SourceStream(_BrokenTask(wrapped), "train", 0,
                                 lambda: packing.ConcatPacker(4), row_shuffle_buffer=0)
    with pytest.raises(mixing.DataFileError, match="^shard 3 of x.jsonl is truncated$"):
        stream.next_row()
    other = mixing.SourceStream(_BrokenTask(KeyError("no reader error here")), "train", 0,
                                lambda: packing.ConcatPacker(4), row_shuffle_buffer=0)
    with pytest.raises(KeyError, match="no reader error here"):
        other.next_row()


def test_row_stats_are_per_step_snapshots_forgotten_once_read():
    schedule = schedules.make_schedule("s", [(0, {"a": 1, "b": 1})])
    plan = mixing.MixturePlan(schedule, batch_size=2)
    streams = {name: mixing.SourceStream(FakeTask(name, _docs(first, 50)), "train", 0,
                                         lambda: packing.ConcatPacker(4), row_shuffle_buffer=0)
               for name, first in [("a", 0), ("b", 50)]}
    iterator = mixing.MixtureIterator(plan, streams)
    for _ in range(4):
        next(iterator)
    counts = {"examples": 2, "dropped_overlong": 0, "truncated_overlong": 0}
    assert iterator.row_stats(1) == {"a": counts, "b": counts}  # each source read 2 documents
    with pytest.raises(KeyError):
        iterator.row_stats(0)  # forgotten when step 1 was read
    with pytest.raises(KeyError):
        iterator.row_stats(1)
    assert iterator.row_stats(3)["b"]["examples"] == 4


def test_row_stats_nobody_reads_are_capped_at_the_last_64_steps():
    """A run that never asks for its row statistics keeps those of the last 64 steps only,
    so they cannot grow with the run."""
    def run(steps):
        schedule = schedules.make_schedule("s", [(0, {"a": 1})])
        stream = mixing.SourceStream(FakeTask("a", _docs(0, 50)), "train", 0,
                                     lambda: packing.ConcatPacker(4), row_shuffle_buffer=0)
        iterator = mixing.MixtureIterator(mixing.MixturePlan(schedule, batch_size=1),
                                          {"a": stream})
        for _ in range(steps):
            next(iterator)
        return iterator

    long_run = run(70)
    # Step 6's snapshot, kept as steps 7..69 were made, is the one a 7-step run reports.
    assert long_run.row_stats(6) == run(7).row_stats(6)
    long_run = run(70)
    with pytest.raises(KeyError):
        long_run.row_stats(5)  # steps 0..5 were dropped as steps 64..69 were made


def test_a_task_with_some_overlong_examples_keeps_streaming_over_epochs():
    task = FakeTask("some", [{"inputs": [2] * 6, "targets": [3, 1]},
                             {"inputs": [4], "targets": [5, 1]}, {"inputs": [6], "targets": [1]}])
    stream = mixing.SourceStream(task, "train", 0, lambda: packing.OnePerRowPacker(4),
                                 row_shuffle_buffer=0)
    rows = [stream.next_row() for _ in range(8)]  # 2 rows an epoch: 4 epochs
    assert [int(r["inputs"][0]) for r in rows] == [4, 6] * 4
    assert stream.packer.stats.dropped == 4


def _feature_task(with_inputs):
    from types import SimpleNamespace

    feature = SimpleNamespace(vocabulary=SimpleNamespace(pad_id=7))
    features = {"inputs": feature, "targets": feature} if with_inputs else {"targets": feature}
    return SimpleNamespace(output_features=features)


def test_default_packer_factory_picks_the_packer_and_passes_pad_and_policy():
    concat = mixing.default_packer_factory(_feature_task(False), 8)()
    assert type(concat) is packing.ConcatPacker and (concat.length, concat.pad_id) == (8, 7)
    one = mixing.default_packer_factory(_feature_task(True), 8)()
    assert type(one) is packing.OnePerRowPacker
    assert (one.length, one.pad_id, one.overlong) == (8, 7, "drop")
    greedy = mixing.default_packer_factory(_feature_task(True), 6, True, "truncate")()
    assert type(greedy) is packing.GreedyPacker
    assert (greedy.length, greedy.pad_id, greedy.overlong) == (6, 7, "truncate")


def test_a_mixture_iterator_starts_at_step_zero_on_one_host_and_skips_from_any_position():
    schedule = schedules.make_schedule("s", [(0, {"a": 1, "b": 1})])
    plan = mixing.MixturePlan(schedule, batch_size=2)

    def streams():
        return {name: mixing.SourceStream(FakeTask(name, _docs(first, 50)), "train", 0,
                                          lambda: packing.ConcatPacker(4), row_shuffle_buffer=0)
                for name, first in [("a", 0), ("b", 50)]}

    iterator = mixing.MixtureIterator(plan, streams())
    assert iterator.step == 0 and iterator.host_slice == slice(0, 2)
    first = next(iterator)
    assert first["inputs"][:, 0].tolist() == [2, 5002]
    # Each row names its source (the trainer's per-source shares and losses read it).
    assert first["source_ids"].dtype == np.int32 and first["source_ids"].tolist() == [0, 1]
    advanced = streams()
    advanced["a"].next_row()  # a stream already one row in: skip only the rest
    resumed = mixing.MixtureIterator(plan, advanced, start_step=2)
    assert next(resumed)["inputs"][:, 0].tolist() == [202, 5202]



def test_mixture_iterator_defaults_and_the_streams_it_builds():
    """The documented defaults (train split, seed 0, step 0, one host, a 1000-step run, one
    instruction a row with overlong ones dropped) and the row shuffle on pre-training streams
    only."""
    sft = mixing.mixture_iterator("sft_stepwise_increase_embedded", sequence_length=64,
                                  batch_size=4)
    # Four equal phases of a 1000-step run.
    assert [stage.start_step for stage in sft.plan.schedule.stages] == [0, 250, 500, 750]
    assert sft.plan.batch_size == 4 and sft.step == 0 and sft.host_slice == slice(0, 4)
    assert [s.task.name for s in sft.streams] == list(sft.plan.sources) and len(sft.streams) == 2
    for stream in sft.streams:
        assert (stream.split, stream.seed) == ("train", 0)
        assert type(stream.packer) is packing.OnePerRowPacker
        assert (stream.packer.length, stream.packer.overlong) == (64, "drop")
        assert stream.row_shuffle_buffer <= 1  # instruction rows stay in packing order
    batch = next(sft)
    assert batch["inputs"].shape == (4, 64) and sft.step == 1

    longer = mixing.mixture_iterator("sft_stepwise_increase_embedded", sequence_length=128,
                                     batch_size=2, seed=3, split="validation", start_step=5,
                                     total_steps=1001, host_index=1, host_count=2,
                                     pack_instructions=True, overlong="truncate")
    # round(0.75 * 1001) = 751; round(500.5) is 500 (half to even).
    assert [stage.start_step for stage in longer.plan.schedule.stages] == [0, 250, 500, 751]
    assert longer.step == 5 and longer.host_slice == slice(1, 2)
    for stream in longer.streams:
        assert (stream.split, stream.seed) == ("validation", 3)
        assert type(stream.packer) is packing.GreedyPacker
        assert (stream.packer.length, stream.packer.overlong) == (128, "truncate")
    assert next(longer)["inputs"].shape == (1, 128)

    pretrain = mixing.mixture_iterator("pretrain_stepwise_increase_embedded", sequence_length=64,
                                       batch_size=4)
    assert len(pretrain.streams) == 2
    for stream in pretrain.streams:
        assert type(stream.packer) is packing.ConcatPacker
        assert stream.row_shuffle_buffer == 1024
    assert next(pretrain)["inputs"].shape == (4, 64)
    small = mixing.mixture_iterator("pretrain_stepwise_increase_embedded", sequence_length=64,
                                    batch_size=4, row_shuffle_buffer=7)
    assert [stream.row_shuffle_buffer for stream in small.streams] == [7, 7]


# --- packing ---------------------------------------------------------------------------------

ROW_DTYPES = {"inputs": np.int32, "targets": np.int32, "segment_ids": np.int32,
              "positions": np.int32, "loss_weights": np.float32}


def _rows_of_every_packer():
    concat = packing.ConcatPacker(6)
    rows = list(concat.add(np.arange(2, 11))) + list(concat.flush())  # 7 + 2 tokens
    one = packing.OnePerRowPacker(6)
    rows += list(one.add([5, 6], [7, 1]))
    greedy = packing.GreedyPacker(6)
    rows += list(greedy.add([5], [7, 1])) + list(greedy.flush())
    return rows


def test_rows_have_the_documented_dtypes_and_pad_with_zero_by_default():
    rows = _rows_of_every_packer()
    assert len(rows) == 4
    for row in rows:
        assert {k: v.dtype for k, v in row.items()} == ROW_DTYPES
    for row in rows[1:]:  # the first row is full; the others are padded
        pad = row["segment_ids"] == 0
        assert pad.any() and (row["inputs"][pad] == 0).all() and (row["targets"][pad] == 0).all()


def test_concat_emits_a_full_chunk_as_soon_as_it_is_complete():
    packer = packing.ConcatPacker(6)
    (row,) = list(packer.add(np.arange(10, 17)))  # exactly length + 1 tokens
    np.testing.assert_array_equal(row["inputs"], [10, 11, 12, 13, 14, 15])
    np.testing.assert_array_equal(row["targets"], [11, 12, 13, 14, 15, 16])
    assert list(packer.flush()) == []  # the chunk's last token is only a target


def test_concat_flush_never_emits_a_row_without_a_target():
    packer = packing.ConcatPacker(6)
    assert list(packer.add(np.array([9]))) == [] and list(packer.flush()) == []
    assert list(packer.add(np.array([4]))) == [] and list(packer.flush()) == []
    # A remainder of one token after a full chunk has nothing to predict either.
    assert len(list(packer.add(np.arange(20, 28)))) == 1 and list(packer.flush()) == []
    # Exactly a chunk, then one token: still nothing to flush.
    assert len(list(packer.add(np.arange(30, 37)))) == 1
    assert list(packer.add(np.array([5]))) == [] and list(packer.flush()) == []


def test_concat_flush_of_two_tokens_is_one_target():
    packer = packing.ConcatPacker(6, pad_id=0)
    assert list(packer.add(np.array([5, 1]))) == []
    (row,) = list(packer.flush())
    np.testing.assert_array_equal(row["inputs"], [5, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(row["targets"], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(row["loss_weights"], [1, 0, 0, 0, 0, 0])


def test_concat_stats_count_rows_tokens_and_efficiency():
    packer = packing.ConcatPacker(6)
    rows = list(packer.add(np.arange(2, 17))) + list(packer.flush())  # 15 tokens: 7 + 7 + 1
    assert len(rows) == 2 and list(packer.flush()) == []
    packer2 = packing.ConcatPacker(6)
    rows2 = list(packer2.add(np.arange(2, 12))) + list(packer2.flush())  # 10 tokens: 7 + 3
    assert len(rows2) == 2
    stats = packer2.stats
    assert (stats.row_length, stats.examples, stats.rows) == (6, 1, 2)
    assert (stats.real_tokens, stats.loss_tokens) == (6 + 2, 8.0)
    assert stats.efficiency == pytest.approx(8 / 12)


def test_instruction_packers_pad_with_zero_by_default_and_refuse_unknown_policies():
    (row,) = list(packing.OnePerRowPacker(6).add([5], [7, 1]))
    np.testing.assert_array_equal(row["inputs"], [5, 7, 0, 0, 0, 0])
    greedy = packing.GreedyPacker(6)
    list(greedy.add([5], [7, 1]))
    (row,) = list(greedy.flush())
    np.testing.assert_array_equal(row["targets"], [7, 1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"overlong='cut' is not one of \('drop', 'truncate'"):
        packing.GreedyPacker(6, overlong="cut")


def test_an_example_of_exactly_length_plus_one_tokens_fits():
    for policy in ("drop", "error", "truncate"):
        packer = packing.OnePerRowPacker(8, overlong=policy)
        (row,) = list(packer.add(np.arange(10, 13), np.arange(20, 26)))  # 3 + 6 = 9 tokens
        np.testing.assert_array_equal(row["inputs"], [10, 11, 12, 20, 21, 22, 23, 24])
        np.testing.assert_array_equal(row["loss_weights"], [0, 0, 1, 1, 1, 1, 1, 1])
        assert (packer.stats.dropped, packer.stats.truncated) == (0, 0)


def test_overlong_error_names_the_fix():
    with pytest.raises(packing.OverlongExampleError,
                       match="choose overlong='drop' or 'truncate' or a longer sequence length"):
        list(packing.OnePerRowPacker(8, overlong="error").add(np.arange(5), np.arange(5)))


def test_truncation_keeps_a_prompt_shorter_than_the_row_and_drops_one_that_fills_it():
    packer = packing.OnePerRowPacker(8, overlong="truncate")
    (row,) = list(packer.add(np.arange(10, 17), np.arange(20, 25)))  # prompt 7: 2 targets left
    np.testing.assert_array_equal(row["targets"], [11, 12, 13, 14, 15, 16, 20, 21])
    np.testing.assert_array_equal(row["loss_weights"], [0, 0, 0, 0, 0, 0, 1, 1])
    (row,) = list(packer.add(np.arange(10, 18), np.arange(20, 25)))  # prompt 8: 1 target
    np.testing.assert_array_equal(row["loss_weights"], [0, 0, 0, 0, 0, 0, 0, 1])
    assert list(packer.add(np.arange(10, 19), np.array([20, 1]))) == []  # prompt 9 = 8 + 1
    assert list(packer.add(np.arange(10, 20), np.array([20, 1]))) == []
    stats = packer.stats
    assert (stats.examples, stats.truncated, stats.dropped, stats.rows) == (4, 2, 2, 2)


def test_instruction_stats_accumulate_over_examples():
    drop = packing.OnePerRowPacker(8)
    rows = [r for p, t in [([1, 2], [3, 4, 1]), ([5], [6, 1]), (np.arange(9), [1]),
                           (np.arange(12), [1])] for r in drop.add(p, t)]
    assert len(rows) == 2
    stats = drop.stats
    assert (stats.examples, stats.rows, stats.dropped, stats.truncated) == (4, 2, 2, 0)
    assert (stats.real_tokens, stats.loss_tokens) == (4 + 2, 3.0 + 2.0)
    greedy = packing.GreedyPacker(8)
    rows = [r for p, t in [([1, 2], [3, 4, 1]), ([5], [6, 1]), ([7, 8, 9], [2, 3, 4, 1])]
            for r in greedy.add(p, t)] + list(greedy.flush())
    assert len(rows) == 2 and greedy.stats.rows == 2
    assert (greedy.stats.real_tokens, greedy.stats.loss_tokens) == (4 + 2 + 6, 3.0 + 2.0 + 4.0)


def test_greedy_fills_a_row_to_exactly_its_length():
    packer = packing.GreedyPacker(8)
    rows = list(packer.add([1, 2], [3, 4, 5, 1]))  # 5 inputs
    rows += list(packer.add([6], [7, 8, 1]))        # 3 inputs: 5 + 3 = 8 fits
    rows += list(packer.flush())
    (row,) = rows
    np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 1, 1, 2, 2, 2])
    packer = packing.GreedyPacker(8)
    rows = list(packer.add([1, 2, 3], [4, 5, 6, 1]))   # 6 inputs
    rows += list(packer.add([1, 2], [3, 4, 1]))       # 4 inputs: does not fit, row 1 flushed
    rows += list(packer.add([7, 8], [9, 1]))          # 3 inputs: 4 + 3 = 7, fits row 2
    rows += list(packer.add([5], [1]))                # 1 input: 7 + 1 = 8, fits row 2
    rows += list(packer.flush())
    assert len(rows) == 2
    np.testing.assert_array_equal(rows[1]["segment_ids"], [1, 1, 1, 1, 2, 2, 2, 3])


# --- scorers: BLEU, pass@k, DuReader ------------------------------------------------------------

def test_example_bleu_counts_row_by_hand_with_two_references():
    hyp = "a b c d e f".split()
    refs = ["a b c d e f g".split(), "a b".split()]  # every n-gram of hyp is in the first
    counts = bleu.example_bleu_counts([refs], [hyp])
    assert counts.dtype == np.int64 and counts.shape == (1, 10)
    # matches 6, 5, 4, 3; possible 6, 5, 4, 3; hypothesis length 6; shortest reference 2
    assert counts.tolist() == [[6, 5, 4, 3, 6, 5, 4, 3, 6, 2]]
    # Clipping takes the max over ALL references, not the last one.
    counts = bleu.example_bleu_counts([[refs[1], refs[0]]], [hyp], max_order=2)
    assert counts.tolist() == [[6, 5, 6, 5, 6, 2]]


def test_bleu_stats_honours_max_order():
    # One segment, hyp = ref = 3 tokens, max_order 2: p1 = (3+1)/(3+1), p2 = (2+1)/(2+1) -> 1.
    stats = bleu.bleu_stats([["x y z".split()]], ["x y z".split()], max_order=2)
    assert stats.precisions == (1.0, 1.0) and stats.bleu == 1.0
    # hyp "x y w" vs ref "x y z": p1 = 3/4, p2 = 2/3 (max_order 2) -> sqrt(1/2).
    stats = bleu.bleu_stats([["x y z".split()]], ["x y w".split()], max_order=2)
    assert stats.bleu == pytest.approx(math.sqrt(0.75 * 2 / 3))


def test_bleu_from_counts_defaults_are_smoothed_bleu4():
    row = [2, 1, 0, 0, 3, 2, 1, 0, 3, 4]  # hyp of 3 tokens, shortest reference 4
    stats = bleu.bleu_from_counts(row)
    precisions = [(2 + 1) / (3 + 1), (1 + 1) / (2 + 1), (0 + 1) / (1 + 1), 1.0]
    geo = math.exp(sum(math.log(p) for p in precisions) / 4)
    assert stats.precisions == pytest.approx(tuple(precisions))
    assert stats.ratio == pytest.approx(3 / 4)
    assert stats.brevity_penalty == pytest.approx(math.exp(1 - 4 / 3))
    assert stats.bleu == pytest.approx(geo * math.exp(1 - 4 / 3))


def test_unsmoothed_bleu_counts_an_order_with_one_possible_ngram():
    row = [4, 3, 2, 1, 4, 3, 2, 1, 4, 4]  # a 4-token hypothesis equal to its reference
    stats = bleu.bleu_from_counts(row, smooth=False)
    assert stats.precisions == (1.0, 1.0, 1.0, 1.0) and stats.bleu == 1.0


def test_bleu_ratio_and_brevity_penalty_at_the_edges():
    empty = bleu.bleu_from_counts([0] * 8 + [0, 3])
    assert (empty.bleu, empty.ratio, empty.brevity_penalty) == (0.0, 0.0, 0.0)
    no_ref = bleu.bleu_from_counts([0] * 4 + [2, 1, 0, 0] + [2, 0])
    assert (no_ref.ratio, no_ref.brevity_penalty) == (math.inf, 1.0)
    one_ref = bleu.bleu_from_counts([1, 0, 0, 0, 2, 1, 0, 0, 2, 1])
    assert (one_ref.ratio, one_ref.brevity_penalty) == (2.0, 1.0)


@pytest.mark.parametrize("call,message", [
    (lambda: bleu.bleu_stats([[["a"]]], []), "1 reference sets for 0 hypotheses"),
    (lambda: bleu.bleu_stats([], []), "empty corpus: nothing to score"),
    (lambda: bleu.example_bleu_counts([[]], [["a"]]),
     "every hypothesis needs at least one reference"),
    (lambda: bleu.paper_bleu(["a"], [], str.split), "1 references for 0 predictions"),
    (lambda: bleu.corpus_bleu(["a"], [], str.split), "1 references for 0 predictions"),
    (lambda: pass_rate.pass_at_k(3, 1, 0), "k must be >= 1, got 0"),
    (lambda: pass_rate.pass_at_k(2, 1, 3), "pass@3 needs at least 3 samples, got n=2"),
    (lambda: pass_rate.pass_at_k(2, 3, 1), r"need 0 <= c <= n, got c=3, n=2"),
    (lambda: pass_rate.mean_pass_at_k([], 1), "no problems to average"),
    (lambda: dureader.dureader_scores("a", []), "every prediction needs at least one reference"),
    (lambda: dureader.dureader_em_f1(["a"], []), "1 predictions for 0 examples"),
    (lambda: dureader.dureader_em_f1([], []), "no examples to score"),
])
def test_metric_errors_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=f"^{message}$"):  # the whole message
        call()


def test_text_file_lines_use_universal_newlines():
    assert bleu._text_file_lines("a\rb\r\nc") == ["a\n", "b\n", "c"]  # noqa: SLF001


def test_paper_bleu_skips_a_non_string_prediction_and_keeps_going():
    # Only the second pair is scored: "z w" against itself, every smoothed precision 1.
    assert bleu.paper_bleu(["x y", "z w"], [None, "z w"], str.split) == 100.0


def test_corpus_bleu_scores_a_non_string_prediction_as_empty():
    assert bleu.corpus_bleu(["a b"], [None], str.split) == 0.0


def test_dureader_cjk_ranges_include_both_ends():
    text = "\u4e00ab\u9fff\u3400c\u4dbf"
    assert dureader.dureader_tokenize(text) == ["\u4e00", "ab", "\u9fff", "\u3400", "c",
                                                "\u4dbf"]


# --- losses ----------------------------------------------------------------------------------


def _numpy_cross_entropy(logits, targets, weights):
    """float64 reference: sum of weighted -log softmax(logits)[target], and sum of weights."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, np.asarray(targets)[..., None], -1)[..., 0]
    return float((nll * weights).sum()), float(np.sum(weights))


def test_cross_entropy_matches_float64_with_and_without_weights():
    import jax.numpy as jnp

    from codereason_jax.losses import cross_entropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)) * 3
    targets = rng.integers(0, 7, size=(2, 5))
    weights = (rng.random((2, 5)) > 0.3).astype(np.float32)
    total, count = cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(targets),
                                 jnp.asarray(weights))
    expected = _numpy_cross_entropy(logits, targets, weights)
    assert (float(total), float(count)) == pytest.approx(expected, rel=1e-5)
    total, count = cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(targets))
    expected = _numpy_cross_entropy(logits, targets, np.ones((2, 5)))
    assert (float(total), float(count)) == pytest.approx(expected, rel=1e-5)
    assert float(count) == 10.0


def test_sacrebleu_comparison_uses_13a_on_raw_text_and_no_tokenizer_on_tokens():
    import sacrebleu

    def direct(hyps, refs, tokenize):
        return sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score

    refs, hyps = ["x ， y z w v u"], ["x，y z w v u"]  # a full-width comma: intl splits it
    assert direct(hyps, refs, "13a") != direct(hyps, refs, "intl")
    assert bleu.sacrebleu_corpus(refs, hyps) == pytest.approx(direct(hyps, refs, "13a"))
    refs, hyps = ["a . b c d e"], ["a.b c d e"]  # pre-tokenized: "a.b" stays one token
    assert direct(hyps, refs, "none") != direct(hyps, refs, "13a")
    assert bleu.sacrebleu_corpus(refs, hyps, tokenize=str.split) == pytest.approx(
        direct(hyps, refs, "none"))
    assert bleu.sacrebleu_corpus(["a b c d"], [None]) == 0.0  # a non-string counts as ""
    assert bleu.sacrebleu_corpus([], []) == 0.0
    with pytest.raises(ValueError, match="^1 references for 0 predictions$"):
        bleu.sacrebleu_corpus(["a"], [])
