"""SeqIO tasks, packing, mixing schedules and the deterministic batch sequence."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import seqio

from seqio_tasks import mixing, packing, registry, schedules
from seqio_tasks import mixtures  # noqa: F401 (registers everything)
from seqio_tasks.default_vocabulary import default_vocabulary
from seqio_tasks.sources import embedded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


# --- packing ---------------------------------------------------------------------------------

def test_concat_packing_restarts_positions_and_never_drops():
    packer = packing.ConcatPacker(length=6, pad_id=0)
    docs = [np.array([11, 12, 13, 1]), np.array([21, 22, 23, 24, 25, 1]), np.array([31, 1])]
    rows = [row for doc in docs for row in packer.add(doc)] + list(packer.flush())
    stream = np.concatenate(docs)  # 12 tokens: a chunk of 7 (= 6 + 1), then a final one of 5
    assert len(rows) == 2
    np.testing.assert_array_equal(rows[0]["inputs"], stream[:6])
    np.testing.assert_array_equal(rows[0]["targets"], stream[1:7])
    np.testing.assert_array_equal(rows[0]["segment_ids"], [1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(rows[0]["positions"], [0, 1, 2, 3, 0, 1])
    # Row 2 continues document B, whose positions restart at the row start (eod_reset).
    np.testing.assert_array_equal(rows[1]["inputs"], [24, 25, 1, 31, 0, 0])
    np.testing.assert_array_equal(rows[1]["targets"], [25, 1, 31, 1, 0, 0])
    np.testing.assert_array_equal(rows[1]["segment_ids"], [1, 1, 1, 2, 0, 0])
    np.testing.assert_array_equal(rows[1]["positions"], [0, 1, 2, 0, 0, 0])
    np.testing.assert_array_equal(rows[1]["loss_weights"], [1, 1, 1, 1, 0, 0])
    # Every token after the first is a target exactly once: nothing lost.
    targets = np.concatenate([r["targets"][r["loss_weights"] > 0] for r in rows])
    np.testing.assert_array_equal(targets, np.delete(stream, [0, 7]))
    assert packer.stats.examples == 3 and packer.stats.real_tokens == 10


def test_concat_packing_of_long_and_short_documents_matches_plain_chunking():
    rng = np.random.default_rng(0)
    lengths = [3, 1, 700, 5, 64, 9, 2000, 1, 30]  # documents much longer than a row, and tiny
    docs = [np.append(rng.integers(3, 500, n - 1), 1) for n in lengths]
    length = 16
    packer = packing.ConcatPacker(length=length, pad_id=0)
    rows = [row for doc in docs for row in packer.add(doc)] + list(packer.flush())
    stream = np.concatenate(docs)
    doc_of = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
    chunks = range(0, stream.size, length + 1)
    assert len(rows) == len(chunks)
    for row, start in zip(rows, chunks):
        chunk = stream[start:start + length + 1]
        m = chunk.size - 1
        chunk_docs = doc_of[start:start + m]
        np.testing.assert_array_equal(row["inputs"][:m], chunk[:-1])
        np.testing.assert_array_equal(row["targets"][:m], chunk[1:])
        _, first, segment = np.unique(chunk_docs, return_index=True, return_inverse=True)
        np.testing.assert_array_equal(row["segment_ids"][:m], segment + 1)
        np.testing.assert_array_equal(row["positions"][:m], np.arange(m) - first[segment])
        assert (row["loss_weights"][m:] == 0).all() and (row["loss_weights"][:m] == 1).all()
    assert packer.stats.real_tokens == stream.size - len(chunks)


def test_instruction_rows_mask_the_prompt_exactly():
    packer = packing.OnePerRowPacker(length=8, pad_id=0)
    prompt, response = np.array([5, 6, 7]), np.array([8, 9, 1])
    (row,) = list(packer.add(prompt, response))
    np.testing.assert_array_equal(row["inputs"], [5, 6, 7, 8, 9, 0, 0, 0])
    np.testing.assert_array_equal(row["targets"], [6, 7, 8, 9, 1, 0, 0, 0])
    # Loss on the response tokens and EOS only (targets 8, 9, 1), zero on the prompt.
    np.testing.assert_array_equal(row["loss_weights"], [0, 0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 1, 1, 0, 0, 0])


def test_greedy_packing_keeps_examples_whole_and_separate():
    packer = packing.GreedyPacker(length=8, pad_id=0)
    rows = list(packer.add(np.array([5, 6]), np.array([7, 1])))
    rows += list(packer.add(np.array([15]), np.array([16, 17, 1])))
    rows += list(packer.add(np.array([25, 26, 27]), np.array([1])))  # 3 more: does not fit
    rows += list(packer.flush())
    assert len(rows) == 2
    np.testing.assert_array_equal(rows[0]["segment_ids"], [1, 1, 1, 2, 2, 2, 0, 0])
    np.testing.assert_array_equal(rows[0]["positions"], [0, 1, 2, 0, 1, 2, 0, 0])
    np.testing.assert_array_equal(rows[0]["loss_weights"], [0, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(rows[1]["inputs"], [25, 26, 27, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(rows[1]["loss_weights"], [0, 0, 1, 0, 0, 0, 0, 0])


def test_overlong_examples_follow_the_policy_and_are_counted():
    prompt, response = np.arange(10, 16), np.array([30, 31, 32, 33, 1])  # 11 tokens > 8 + 1
    dropped = packing.OnePerRowPacker(length=8, overlong="drop")
    assert list(dropped.add(prompt, response)) == []
    assert dropped.stats.dropped == 1
    truncated = packing.OnePerRowPacker(length=8, overlong="truncate")  # the paper's choice
    (row,) = list(truncated.add(prompt, response))
    np.testing.assert_array_equal(row["targets"], [11, 12, 13, 14, 15, 30, 31, 32])
    np.testing.assert_array_equal(row["loss_weights"], [0, 0, 0, 0, 0, 1, 1, 1])
    assert (truncated.stats.truncated, truncated.stats.dropped) == (1, 0)
    assert list(truncated.add(np.arange(10, 20), response)) == []  # prompt alone fills the row
    assert truncated.stats.dropped == 1
    with pytest.raises(packing.OverlongExampleError, match="does not fit a row of 8"):
        list(packing.OnePerRowPacker(length=8, overlong="error").add(prompt, response))


# --- schedules and the mixing plan -----------------------------------------------------------

# The paper's Table 5, text:code per phase, written from the paper (not from schedules.py).
TABLE_5 = {"uniform": [(5, 3), (5, 3), (5, 3), (5, 3)],
           "stepwise_increase": [(7, 3), (7, 3), (6, 4), (5, 5)],
           "stepwise_decrease": [(5, 5), (6, 4), (7, 3), (7, 3)]}


def test_table5_names_every_paper_strategy():
    assert sorted(schedules.PAPER_STRATEGIES) == sorted(TABLE_5)


@pytest.mark.parametrize("strategy", sorted(TABLE_5))
def test_table5_shares_within_one_point_per_stage(strategy):
    schedule = schedules.paper_strategy(strategy, "text", "code", total_steps=400)
    plan = mixing.MixturePlan(schedule, batch_size=12)  # 1200 sequences per stage
    code = plan.sources.index("code")
    assert len(schedule.stages) == len(TABLE_5[strategy])
    for stage, (text_w, code_w) in zip(schedule.stages, TABLE_5[strategy]):
        steps = range(stage.start_step, stage.start_step + 100)
        sources = np.concatenate([plan.rows(s)[0] for s in steps])
        assert abs(np.mean(sources == code) - code_w / (text_w + code_w)) < 0.01


def test_stage_boundaries_are_exact_and_rows_are_consumed_in_order():
    schedule = schedules.make_schedule("s", [(0, {"a": 1, "b": 1}), (3, {"a": 1, "b": 3})])
    plan = mixing.MixturePlan(schedule, batch_size=4)
    seen = {0: [], 1: []}
    for step in range(8):
        sources, indices = plan.rows(step)
        expected_b = 2 if step < 3 else 3  # 1:1 then 1:3 of 4 rows, exactly per batch
        assert (sources == 1).sum() == expected_b
        for s, k in zip(sources, indices):
            seen[int(s)].append(int(k))
        np.testing.assert_array_equal(plan.consumed_before(step + 1),
                                      [len(seen[0]), len(seen[1])])
    assert seen[0] == list(range(len(seen[0]))) and seen[1] == list(range(len(seen[1])))


def test_interleaving_is_smooth():
    pattern = mixing.interleave_pattern([5, 3])
    assert sorted(np.bincount(pattern)) == [3, 5]
    assert max(len(run) for run in "".join(map(str, pattern)).split("1")) <= 2


@pytest.mark.parametrize("stages,message", [
    ([(1, {"a": 1})], "must start at step 0"),
    ([(0, {"a": 1}), (0, {"a": 2})], "start steps must increase"),
    ([(0, {"a": -1})], "weights must be >= 0"),
    ([(0, {"a": 0})], "no positive weight"),
])
def test_bad_schedules_are_refused(stages, message):
    with pytest.raises(schedules.ScheduleError, match=message):
        schedules.make_schedule("bad", stages)


def test_unknown_mixture_names_the_choices():
    with pytest.raises(schedules.ScheduleError, match="neither a registered schedule"):
        registry.resolve_schedule("sft_stepwise_sideways", 100)


def test_schedule_fingerprint_changes_with_rates():
    a = schedules.paper_strategy("uniform", "t", "c", 100)
    b = schedules.paper_strategy("stepwise_decrease", "t", "c", 100)
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == schedules.paper_strategy("uniform", "t", "c", 100).fingerprint()


# --- the real streams: determinism, resume, hosts --------------------------------------------

def _batches(name, steps, **kwargs):
    it = mixing.mixture_iterator(name, sequence_length=128, batch_size=8, total_steps=40,
                                 **kwargs)
    return [next(it) for _ in range(steps)]


def test_resume_at_step_s_gives_the_uninterrupted_batches():
    name = "sft_stepwise_increase_embedded"
    full = _batches(name, 14, seed=3)
    resumed = _batches(name, 4, seed=3, start_step=10)  # crosses the stage boundary at 10
    for a, b in zip(full[10:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other_seed = _batches(name, 1, seed=4)[0]
    assert not np.array_equal(other_seed["inputs"], full[0]["inputs"])


def test_dropped_rows_are_counted_per_source_and_step_the_same_after_a_resume():
    def stats_at(step, start_step=0):
        it = mixing.mixture_iterator("sft_text_code_embedded", sequence_length=96, batch_size=4,
                                     total_steps=10, start_step=start_step)
        for _ in range(start_step, step + 1):
            next(it)
        return it, it.row_stats(step)

    it, at_2 = stats_at(2)
    for stream in it.streams:  # the snapshot is the packer's own count at that batch
        counts = at_2[stream.task.name]
        assert counts["examples"] == stream.packer.stats.examples
        assert counts["dropped_overlong"] == stream.packer.stats.dropped
    text = at_2["embedded_text_instructions"]
    assert 0 < text["dropped_overlong"] < text["examples"]  # 96 tokens: many do not fit
    assert text["truncated_overlong"] == 0
    assert stats_at(2, start_step=2)[1] == at_2  # counted from step 0 on resume too
    with pytest.raises(KeyError):
        it.row_stats(1)  # each step's snapshot is read once


def test_host_count_changes_only_who_materialises_rows():
    one = _batches("pretrain_code_embedded", 3, seed=1)
    halves = [_batches("pretrain_code_embedded", 3, seed=1, host_index=h, host_count=2)
              for h in range(2)]
    for step in range(3):
        for key in one[step]:
            np.testing.assert_array_equal(
                one[step][key], np.concatenate([halves[0][step][key], halves[1][step][key]]))
    with pytest.raises(ValueError, match="not divisible by the 3 hosts"):
        mixing.mixture_iterator("pretrain_code_embedded", sequence_length=64, batch_size=8,
                                host_count=3)


def test_pretraining_resume_replays_the_row_shuffle():
    full = _batches("pretrain_code_embedded", 6, seed=2)
    resumed = _batches("pretrain_code_embedded", 2, seed=2, start_step=4)
    for a, b in zip(full[4:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def _stream_rows(buffer, n):
    task = seqio.get_mixture_or_task("embedded_code")
    stream = mixing.SourceStream(task, "train", 5, mixing.default_packer_factory(task, 32),
                                 row_shuffle_buffer=buffer)
    return [stream.next_row()["inputs"].tobytes() for _ in range(n)]


def test_row_shuffle_reorders_rows_without_losing_or_repeating_any():
    packed = _stream_rows(0, 400)
    shuffled = _stream_rows(64, 336)
    # The first k outputs are drawn from the first 64 + k packed rows, each at most once.
    assert len(set(shuffled)) == len(shuffled) and set(shuffled) <= set(packed)
    assert shuffled != packed[:336]
    # Consecutive packed rows (one long file cut into pieces) are spread apart.
    position = {row: i for i, row in enumerate(shuffled)}
    gaps = [abs(position[b] - position[a]) for a, b in zip(packed, packed[1:])
            if a in position and b in position]
    assert np.median(gaps) > 10
    assert _stream_rows(64, 50) == shuffled[:50]  # deterministic
    with pytest.raises(ValueError, match="row_shuffle_buffer=-1"):
        mixing.SourceStream(None, "train", 0, lambda: None, row_shuffle_buffer=-1)


def test_pretraining_rows_are_dense_and_document_local():
    (batch,) = _batches("pretrain_code_embedded", 1, seed=0)
    assert (batch["segment_ids"] > 0).all()  # dense: no padding at all
    for segments, positions in zip(batch["segment_ids"], batch["positions"]):
        starts = np.flatnonzero(np.diff(segments)) + 1
        assert (positions[starts] == 0).all() and positions[0] == 0
        assert (np.diff(positions)[np.diff(segments) == 0] == 1).all()


def test_instruction_rows_decode_to_prompt_and_response():
    (batch,) = _batches("sft_text_embedded", 1, seed=0)
    vocab = default_vocabulary()
    row = 0
    weights, targets = batch["loss_weights"][row], batch["targets"][row]
    response = vocab.decode(targets[weights > 0].tolist())
    prompt = vocab.decode(batch["inputs"][row][(batch["segment_ids"][row] > 0)
                                               & (weights == 0)].tolist())
    assert prompt.startswith("Summarize the following documentation in one sentence.\n")
    assert targets[weights > 0][-1] == vocab.eos_id  # the response ends with EOS
    assert len(response) >= 20 and "\n" not in response  # a one-line summary


# --- plain SeqIO access and the vocabulary ---------------------------------------------------

def _first_example(name):
    provider = seqio.get_mixture_or_task(name)
    features = {k: 64 for k in provider.output_features}
    shuffle = not name.startswith("eval_")  # evaluation sets keep their order
    return next(provider.get_dataset(features, split="validation", shuffle=shuffle,
                                     seed=0).as_numpy_iterator())


EMBEDDED_NAMES = sorted([n for n in seqio.TaskRegistry.names() if "embedded" in n] +
                        [n for n in seqio.MixtureRegistry.names() if n.endswith("_embedded")
                         or "_embedded_stage" in n])


@pytest.mark.parametrize("name", [
    "embedded_text", "embedded_code", "embedded_code_instructions", "eval_embedded_codegen",
    "eval_embedded_codecomplete",
    "pretrain_code_embedded", "sft_text_code_by_examples_embedded",
    "sft_stepwise_decrease_embedded_stage1"])
def test_plain_seqio_access(name):
    example = _first_example(name)
    assert 0 < example["targets"].size <= 64


@pytest.mark.slow
@pytest.mark.parametrize("name", EMBEDDED_NAMES)
def test_plain_seqio_access_every_embedded_name(name):
    assert _first_example(name)["targets"].size > 0


def test_every_stage_of_every_schedule_is_a_seqio_mixture():
    for name in schedules.schedule_names():
        schedule = schedules.get_schedule(name, 100)
        for i, stage in enumerate(schedule.stages, start=1):
            mixture = seqio.get_mixture_or_task(f"{name}_stage{i}")
            assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == dict(stage.rates)


def test_default_vocabulary_round_trips_unseen_python_exactly():
    vocab = default_vocabulary()
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab.vocab_size == 8192
    files = [d["text"] for d in embedded.code_documents("validation")][:5]
    for text in files:
        ids = vocab.encode(text)
        assert vocab.decode(ids) == text
        assert vocab.unk_id not in ids
    import tensorflow as tf
    text = files[0]
    assert vocab.decode_tf(vocab.encode_tf(tf.constant(text))).numpy().decode() == text


def test_code_completions_split_functions_after_their_docstring():
    import ast

    items = list(embedded.code_completions("validation"))
    assert len(items) > 50
    for item in items[:40]:
        head, body = item["prompt"], item["reference"]
        (func,) = ast.parse(head + body).body  # the two halves are one whole function
        assert isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
        docstring = ast.get_docstring(func)
        assert docstring and body.strip()
        assert head.rstrip().endswith(('"""', "'''", '"', "'"))  # the docstring closes it
        assert docstring.splitlines()[0].strip() in head
        assert body.lstrip("\n").startswith((" ", "\t"))  # indented under the signature


def test_ast_parse_is_serialised_across_threads(monkeypatch):
    """tf.data generators parse the standard library while autograph parses in another thread;
    CPython 3.11 corrupts its AST recursion counter if both run at once."""
    import ast
    import threading

    from seqio_tasks import threadsafe_ast

    threadsafe_ast.install()
    locked = ast.parse
    threadsafe_ast.install()  # idempotent
    assert ast.parse is locked and locked._codereason_locked

    class Observed:
        """The module's lock, reporting when the watched thread asks for it: an event instead
        of "not finished after a while"."""

        def __init__(self):
            self.lock, self.watched, self.asked = threading.RLock(), None, threading.Event()

        def __enter__(self):
            if threading.current_thread() is self.watched:
                self.asked.set()
            self.lock.acquire()

        def __exit__(self, *exc):
            self.lock.release()

    observed = Observed()
    monkeypatch.setattr(threadsafe_ast, "_LOCK", observed)
    finished = threading.Event()
    with observed:
        worker = threading.Thread(target=lambda: (ast.parse("x = [1]"), finished.set()))
        observed.watched = worker
        worker.start()
        assert observed.asked.wait(60)  # the worker's parse asked for the lock (60 s: a hang)
        assert not finished.is_set()  # and waits while another thread parses
    worker.join(60)
    assert finished.is_set()
    assert ast.literal_eval("[1, 2]") == [1, 2]  # literal_eval goes through the same lock


def test_embedded_splits_are_disjoint_and_stable():
    train = {d["id"] for d in embedded.code_documents("train")}
    validation = {d["id"] for d in embedded.code_documents("validation")}
    assert train and validation and not train & validation
    # Stable: another process, with another salt for Python's hash(), puts every file in the
    # split it has here (a split made with hash() would move most validation files).
    keys = sorted(train)[:100] + sorted(validation)
    code = ("import json, sys\nfrom seqio_tasks.sources import embedded\n"
            "print(json.dumps([embedded.split_of(k) for k in json.load(sys.stdin)]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(keys), cwd=ROOT,
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONHASHSEED="12345"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == ["train"] * 100 + ["validation"] * len(validation)
    # About 5 % of the files in validation: within four binomial standard deviations.
    n = len(train) + len(validation)
    assert abs(len(validation) - 0.05 * n) < 4 * (n * 0.05 * 0.95) ** 0.5


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mbpp")),
                    reason="../shared/data/mbpp is not present")
def test_real_mbpp_evaluation_task(monkeypatch):
    monkeypatch.setenv("CODEREASON_DATA_DIR", SHARED_DATA)
    ds = seqio.get_mixture_or_task("eval_mbpp").get_dataset(None, split="test", shuffle=False)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 257
    import json
    extra = json.loads(examples[0]["extra"])
    assert extra["tests"] and all(t.startswith("assert") for t in extra["tests"])


def test_inspect_mixture_cli(tmp_path):
    plot = tmp_path / "shares.png"
    result = subprocess.run(
        [sys.executable, "-m", "codereason_jax.inspect_mixture",
         "--mixture=sft_stepwise_decrease_embedded", "--steps=8", "--batch_size=10",
         "--sequence_length=256", f"--plot={plot}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "stage 1: steps 0-1" in out and "stage 4: steps 6-7" in out
    stage1 = out.split("stage 1:")[1].split("stage 2:")[0]
    # 5:5 in stage 1: exactly half the sequences of a 10-row batch are code instructions.
    assert "embedded_code_instructions     50.0%      50.0%" in stage1
    assert plot.stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "codereason_jax.inspect_mixture",
                          "--mixture=nope"], cwd=ROOT, capture_output=True, text=True,
                         timeout=1200)
    assert bad.returncode == 2 and "neither a registered schedule" in bad.stderr


def test_a_task_whose_every_example_is_too_long_fails_loudly():
    iterator = mixing.mixture_iterator("sft_text_embedded", sequence_length=8, batch_size=2,
                                       split="validation")
    with pytest.raises(ValueError, match="longer than a row of 8 tokens and was dropped"):
        next(iterator)
