"""The row-store input pipeline: packed rows prepared once, read by (step, host).

What it must guarantee, each checked against something independent of the reader:
- the stored tokens of a source are exactly its documents, in source order (compared with the
  SeqIO task read directly), and each stored row decodes to the row the packer made;
- every run order has the schedule's exact shares per period, on every embedded mixture and
  stepwise schedule (compared with the closed-form plan and with the streaming path's sources);
- each epoch reads every stored row exactly once, in its own order;
- a batch depends on (step, host) only: any host count, any resume step, and a host reads only
  its own rows;
- a store that does not match the run, or has a missing or truncated shard, is refused by name.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from seqio_tasks import packing
from seqio_tasks.mixing import MixturePlan, mixture_iterator
from seqio_tasks.registry import resolve_schedule
from seqio_tasks.row_store import manifest as manifest_lib
from seqio_tasks.row_store import prepare, reader, records
from seqio_tasks.row_store.permutation import permute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTH = 64
PRETRAIN = "pretrain_code_embedded"
SFT = "sft_text_code_embedded"
EMBEDDED_NAMES = ["pretrain_nl_embedded", PRETRAIN, "pretrain_code_by_tokens_embedded",
                  "pretrain_uniform_embedded", "pretrain_stepwise_increase_embedded",
                  "pretrain_stepwise_decrease_embedded", "sft_text_embedded", SFT,
                  "sft_text_code_by_examples_embedded", "sft_uniform_embedded",
                  "sft_stepwise_increase_embedded", "sft_stepwise_decrease_embedded"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store of the four embedded sources, two shards each."""
    path = str(tmp_path_factory.mktemp("rows") / "store")
    prepare.prepare_store([PRETRAIN, SFT], path, prepare.settings_for(LENGTH), num_shards=2)
    return path


def _manifest(store):
    return manifest_lib.read(store)


# ------------------------------------------------------------------------------ permutation

@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 1000, 4097])
def test_the_permutation_is_a_bijection_of_any_size(n):
    out = permute(np.arange(n), n, key=12345)
    assert np.array_equal(np.sort(out), np.arange(n))


def test_the_permutation_spreads_positions_uniformly_and_depends_on_the_key():
    n, keys = 8, 4000
    first = np.array([permute(0, n, k)[0] for k in range(keys)])
    counts = np.bincount(first, minlength=n)
    # chi-square with 7 degrees of freedom; 24.3 is its 0.001 quantile's complement
    chi2 = float(((counts - keys / n) ** 2 / (keys / n)).sum())
    assert chi2 < 24.3, counts
    assert not np.array_equal(permute(np.arange(100), 100, 1), permute(np.arange(100), 100, 2))
    with pytest.raises(IndexError):
        permute(np.array([5]), 5, 1)


# ---------------------------------------------------------------------------------- records

def _random_docs(rng, n, eos=1, vocab=300):
    return [np.append(rng.integers(2, vocab, rng.integers(1, 40)), eos) for _ in range(n)]


@pytest.mark.parametrize("packer_cls", [packing.OnePerRowPacker, packing.GreedyPacker])
def test_instruction_rows_survive_the_token_record(packer_cls):
    rng = np.random.default_rng(0)
    packer = packer_cls(LENGTH, 0, "truncate")
    rows = []
    for _ in range(200):
        prompt = rng.integers(2, 300, rng.integers(0, 50))
        response = np.append(rng.integers(2, 300, rng.integers(0, 30)), 1)
        rows += list(packer.add(prompt, response))
    rows += list(packer.flush())
    assert packer.stats.truncated > 0  # the truncating branch is exercised
    for row in rows:
        record = records.encode_row(row, "examples", np.dtype("<u2"))
        back = records.decode_row(record, "examples", np.dtype("<u2"), LENGTH, 0, 1)
        assert records.rows_equal(back, row)


def test_concat_rows_survive_the_token_record_and_use_two_bytes_a_token():
    rng = np.random.default_rng(1)
    packer = packing.ConcatPacker(LENGTH, 0)
    rows = [row for doc in _random_docs(rng, 300) for row in packer.add(doc)]
    rows += list(packer.flush())
    for row in rows:
        record = records.encode_row(row, "concat", records.token_dtype(300))
        assert len(record) == 2 * (int(np.count_nonzero(row["segment_ids"])) + 1)
        back = records.decode_row(record, "concat", records.token_dtype(300), LENGTH, 0, 1)
        assert records.rows_equal(back, row)
    assert records.token_dtype(65536) == np.dtype("<u2")
    assert records.token_dtype(65537) == np.dtype("<u4")


def test_a_document_holding_the_end_token_cannot_be_stored_as_tokens_only():
    packer = packing.ConcatPacker(8, 0)
    rows = list(packer.add(np.array([5, 6, 1, 7, 8, 9, 4, 3, 2, 1])))  # EOS inside the doc
    record = records.encode_row(rows[0], "concat", np.dtype("<u2"))
    back = records.decode_row(record, "concat", np.dtype("<u2"), 8, 0, 1)
    assert not records.rows_equal(back, rows[0])  # what prepare_shard checks and refuses


# ------------------------------------------------------------------------- store contents

def _task_examples(task_name):
    import seqio

    task = seqio.get_mixture_or_task(task_name)
    ds = task.get_dataset(sequence_length=None, split="train", shuffle=False, num_epochs=1,
                          trim_output_features=False)
    return list(ds.as_numpy_iterator())


def _stored(store, task):
    from array_record.python.array_record_module import ArrayRecordReader

    entry = _manifest(store)["sources"][task]
    blobs = []
    for shard in entry["shards"]:
        r = ArrayRecordReader(os.path.join(store, shard["file"]))
        blobs += list(r.read_all())
        r.close()
    return entry, blobs


def test_stored_pretraining_tokens_are_the_documents_in_source_order(store):
    import seqio

    for task in ("embedded_text", "embedded_code"):
        entry, blobs = _stored(store, task)
        assert entry["kind"] == "concat" and entry["token_dtype"] == "uint16"
        # Shard s holds examples s, s+2, s+4, ... (SeqIO's sharding of a source it cannot
        # split by file), packed in order, the last partial chunk padded.
        docs = [e["targets"] for e in _task_examples(task)]
        offset = 0
        for s, shard in enumerate(entry["shards"]):
            chunks = [np.frombuffer(b, "<u2") for b in blobs[offset:offset + shard["rows"]]]
            offset += shard["rows"]
            assert np.array_equal(np.concatenate(chunks), np.concatenate(docs[s::2]))
        assert len(blobs) == entry["rows"] == sum(s["rows"] for s in entry["shards"])
        assert entry["examples"] == len(docs)
        size = seqio.get_mixture_or_task(task).output_features["targets"].vocabulary.vocab_size
        assert size <= 65536


def test_stored_instruction_rows_are_the_examples(store):
    entry, blobs = _stored(store, "embedded_code_instructions")
    assert entry["kind"] == "examples"
    examples = _task_examples("embedded_code_instructions")
    kept = [e for e in examples if len(e["inputs"]) + len(e["targets"]) - 1 <= LENGTH]
    assert entry["rows"] == len(kept) == len(examples) - entry["dropped_overlong"]
    expected = sorted(tuple(np.concatenate([e["inputs"], e["targets"]])) for e in kept)
    got = []
    for blob in blobs:
        row = records.decode_row(blob, "examples", np.dtype("<u2"), LENGTH, 0, 1)
        n = int(np.count_nonzero(row["segment_ids"]))
        got.append(tuple(np.append(row["inputs"][:n], row["targets"][n - 1])))
    assert sorted(got) == expected


# ------------------------------------------------------------------------- run order

def _smallest_integers(weights):
    """The schedule's weights as the smallest proportional integers (weights here are simple
    fractions such as 5:3 or 2:1)."""
    fractions = [Fraction(w) for w in weights]
    scale = math.lcm(*(f.denominator for f in fractions))
    ints = [int(f * scale) for f in fractions]
    return [i // math.gcd(*ints) for i in ints]


@pytest.mark.parametrize("name", EMBEDDED_NAMES)
def test_every_mixture_has_the_exact_shares_per_period_from_the_store(store, name):
    steps, batch = 40, 8
    iterator = reader.store_iterator(name, store, sequence_length=LENGTH, batch_size=batch,
                                     total_steps=steps)
    schedule = resolve_schedule(name, steps)
    plan = MixturePlan(schedule, batch)
    sources = np.concatenate([next(iterator)["source_ids"] for _ in range(steps)])
    assert np.array_equal(sources, np.concatenate([plan.rows(s)[0] for s in range(steps)]))
    if "_by_" in name:  # weights measured in tokens or examples: periods of ~10,000 rows
        return
    for i, stage in enumerate(schedule.stages):
        end = schedule.stages[i + 1].start_step if i + 1 < len(schedule.stages) else steps
        rows = sources[stage.start_step * batch:end * batch]
        weights = _smallest_integers([stage.weight(t) for t in plan.sources])
        period = sum(weights)
        whole = rows.size - rows.size % period
        assert whole >= 8 * period
        for window in rows[:whole].reshape(-1, period):
            assert np.bincount(window, minlength=len(weights)).tolist() == weights


@pytest.mark.parametrize("name", [PRETRAIN, "sft_stepwise_increase_embedded"])
def test_store_and_stream_take_the_same_sources_in_every_row(store, name):
    kwargs = dict(sequence_length=LENGTH, batch_size=8, total_steps=40)
    from_store = reader.store_iterator(name, store, **kwargs)
    streamed = mixture_iterator(name, row_shuffle_buffer=0, **kwargs)
    for _ in range(12):
        a, b = next(from_store), next(streamed)
        assert np.array_equal(a["source_ids"], b["source_ids"])
        # The same kind of rows: full dense pre-training rows, or one example per row.
        assert np.array_equal(a["segment_ids"].max(axis=1) > 0, b["segment_ids"].max(axis=1) > 0)


def test_each_epoch_reads_every_stored_row_once_in_its_own_order(store):
    it = reader.store_iterator(PRETRAIN, store, sequence_length=LENGTH, batch_size=8)
    source = it.sources[it.plan.sources.index("embedded_text")]
    n = source.rows
    first, second = source.store_indices(np.arange(n)), source.store_indices(np.arange(n, 2 * n))
    assert np.array_equal(np.sort(first), np.arange(n))
    assert np.array_equal(np.sort(second), np.arange(n))
    assert not np.array_equal(first, second)
    other_seed = reader.store_iterator(PRETRAIN, store, sequence_length=LENGTH, batch_size=8,
                                       seed=1)
    same_source = other_seed.sources[other_seed.plan.sources.index("embedded_text")]
    assert not np.array_equal(first, same_source.store_indices(np.arange(n)))


def _batches(store, name, start, count, host_index=0, host_count=1, **kwargs):
    it = reader.store_iterator(name, store, sequence_length=LENGTH, batch_size=8,
                               start_step=start, host_index=host_index, host_count=host_count,
                               **kwargs)
    return it, [next(it) for _ in range(count)]


@pytest.mark.parametrize("name", [PRETRAIN, SFT])
def test_a_batch_is_a_function_of_step_and_host_only(store, name):
    _, whole = _batches(store, name, 0, 6)
    _, resumed = _batches(store, name, 4, 2)  # a resume at step 4
    for a, b in zip(whole[4:], resumed):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    hosts = [_batches(store, name, 0, 6, h, 4) for h in range(4)]
    for step in range(6):
        for k in whole[step]:
            joined = np.concatenate([hosts[h][1][step][k] for h in range(4)])
            assert np.array_equal(joined, whole[step][k]), (step, k)
    for it, _ in hosts:  # each host read its 2 rows a step, no more
        assert sum(s.records_read for s in it.sources) == 6 * 2


def test_a_resume_a_million_steps_in_reads_only_that_batch(store):
    it, (batch,) = _batches(store, PRETRAIN, 1_000_000, 1)
    assert sum(s.records_read for s in it.sources) == 8
    assert batch["inputs"].shape == (8, LENGTH) and (batch["segment_ids"] > 0).all()


def test_row_stats_count_each_pass_begun(store):
    it, _ = _batches(store, PRETRAIN, 0, 1)
    entry = _manifest(store)["sources"]["embedded_text"]
    assert it.row_stats(0)["embedded_text"]["examples"] == entry["examples"]
    consumed = it.plan.consumed_before(10 ** 6 + 1)[it.plan.sources.index("embedded_text")]
    passes = -(-int(consumed) // entry["rows"])
    assert passes > 1
    assert it.row_stats(10 ** 6)["embedded_text"]["examples"] == passes * entry["examples"]


# ----------------------------------------------------------------- a store checks itself

def test_a_store_of_other_settings_is_refused_by_name(store):
    with pytest.raises(manifest_lib.StoreMismatchError, match="sequence_length: store 64, run 32"):
        reader.store_iterator(PRETRAIN, store, sequence_length=32, batch_size=8)
    with pytest.raises(manifest_lib.StoreMismatchError, match="overlong: store 'drop', run"):
        reader.store_iterator(SFT, store, sequence_length=LENGTH, batch_size=8,
                              overlong="truncate")
    with pytest.raises(manifest_lib.StoreMismatchError, match="sources not in the store"):
        reader.store_iterator("cosqa_instructions", store, sequence_length=LENGTH,
                              batch_size=8)


def _copy(store, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    return copy


def test_a_missing_or_truncated_shard_is_named_never_read_short(store, tmp_path):
    copy = _copy(store, tmp_path)
    shard = _manifest(store)["sources"]["embedded_code"]["shards"][1]["file"]
    path = copy / shard
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    with pytest.raises(manifest_lib.StoreError, match=f"{shard} has {len(data) - 100} bytes"):
        reader.store_iterator(PRETRAIN, str(copy), sequence_length=LENGTH, batch_size=8)
    path.unlink()
    with pytest.raises(manifest_lib.StoreError, match=f"{shard} is missing"):
        reader.store_iterator(PRETRAIN, str(copy), sequence_length=LENGTH, batch_size=8)


def test_an_interrupted_preparation_resumes_and_writes_the_same_bytes(store, tmp_path):
    copy = _copy(store, tmp_path)
    entry = _manifest(store)["sources"]["embedded_text"]
    (copy / manifest_lib.MANIFEST).unlink()
    lost = copy / entry["shards"][0]["file"]
    lost.unlink()
    with pytest.raises(manifest_lib.StoreError, match="did not finish"):
        reader.store_iterator(PRETRAIN, str(copy), sequence_length=LENGTH, batch_size=8)
    kept = copy / entry["shards"][1]["file"]
    before = kept.stat().st_mtime_ns
    manifest = prepare.prepare_store([PRETRAIN, SFT], str(copy), prepare.settings_for(LENGTH),
                                     num_shards=2)
    assert kept.stat().st_mtime_ns == before  # a finished shard is not written again
    assert manifest["sources"]["embedded_text"]["shards"] == entry["shards"]  # same sha256


def test_preparing_into_a_store_of_other_settings_is_refused(store):
    with pytest.raises(manifest_lib.StoreMismatchError, match="sequence_length: store 64, run 128"):
        prepare.prepare_store([PRETRAIN], store, prepare.settings_for(128))


# ------------------------------------------------------------------------------ the trainer

def _train(args, env=None):
    return subprocess.run([sys.executable, "-m", "codereason_jax.train",
                           "--gin_file=gin/runs/demo_cpu.gin",
                           "--gin.TrainConfig.num_steps=3", "--gin.OptimizerConfig.warmup_steps=1",
                           f"--gin.TrainConfig.sequence_length={LENGTH}",
                           "--gin.TrainConfig.prefetch_batches=0", *args],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


def test_the_trainer_reads_the_store_records_it_and_refuses_a_switch(store, tmp_path):
    run_dir = tmp_path / "run"
    use_store = ["--gin.TrainConfig.data_pipeline='store'",
                 f"--gin.TrainConfig.row_store_dir='{store}'"]
    done = _train([f"--run_dir={run_dir}", *use_store])
    assert done.returncode == 0, done.stderr[-3000:]
    contract = json.loads((run_dir / "run.json").read_text())
    source = contract["data_source"]
    assert source["pipeline"] == "store" and source["row_store_dir"] == store
    assert source["rows"]["embedded_code"] == _manifest(store)["sources"]["embedded_code"]["rows"]
    switched = _train([f"--run_dir={run_dir}", "--gin.TrainConfig.num_steps=4"])
    assert switched.returncode == 2
    assert ("TrainConfig.data_pipeline 'store' -> 'stream' (changes the batches"
            in switched.stderr)
    wrong = _train([f"--run_dir={tmp_path / 'other'}", *use_store,
                    "--gin.TrainConfig.sequence_length=32"])
    assert wrong.returncode == 2 and not (tmp_path / "other").exists()
    assert wrong.stderr.strip().splitlines()[-1].startswith(
        f"error: the row store {store} does not match this run: sequence_length: store 64, "
        "run 32.")


# ---------------------------------------------------------------------------- benchmarks

def test_the_resume_and_pipeline_benchmarks_print_their_lines(store, capsys):
    from codereason_jax import bench
    from codereason_jax.benchmarks import pipeline, resume

    args = bench.parse_args(["--suite=resume", "--pipeline_seq_len=64", "--pipeline_batch=8",
                             "--pipeline_steps=2", f"--store_dir={store}",
                             "--resume_stream_rows=20000"])
    rows = resume.suite_resume(args)
    out = capsys.readouterr().out
    by_path = {(r["path"], r["step"]): r for r in rows if r["kind"] == "resume"}
    assert set(by_path) == {(p, s) for p in ("store", "stream") for s in resume.RESUME_STEPS}
    assert not by_path[("stream", 1000)]["estimated"] and by_path[("stream", 10**6)]["estimated"]
    assert not by_path[("store", 10**6)]["estimated"]
    assert by_path[("store", 10**6)]["rows_skipped"] == 8 * 10**6
    for step in resume.RESUME_STEPS:
        assert f"resume step={step}: first batch " in out
    store_row = rows[0]
    sources = _manifest(store)["sources"].values()
    assert store_row["kind"] == "store" and store_row["bytes_per_token"] == pytest.approx(
        sum(s["bytes"] for s in sources) / sum(s["real_tokens"] for s in sources))

    # Host 0 of 16 reads 1/16 of the rows of each batch on the store path, all of them on the
    # streaming path (it packs the global batch and keeps its slice).
    mine = pipeline.measure_store(PRETRAIN, store, LENGTH, 64, 2, 0, 16)
    assert mine["records_read"] == 3 * 64 // 16


def test_the_beam_pipeline_writes_the_same_shards_as_this_process(store, tmp_path):
    """Apache Beam is optional (its pins clash with ours): where it is installed, the
    DirectRunner must write byte-identical shards."""
    pytest.importorskip("apache_beam")
    manifest = prepare.prepare_store([SFT], str(tmp_path / "beam"), prepare.settings_for(LENGTH),
                                     num_shards=2, beam_runner="DirectRunner")
    stored = _manifest(store)["sources"]
    for task, entry in manifest["sources"].items():
        assert [s["sha256"] for s in entry["shards"]] == [
            s["sha256"] for s in stored[task]["shards"]]
