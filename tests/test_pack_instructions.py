"""TrainConfig.pack_instructions through the training path.

With pack_instructions=True the trainer's input iterator packs whole instruction examples
several to a row (segment ids 1, 2, ..., positions from 0 in each, loss only on responses);
with False it gives one example per row. Packing is only legitimate because attention stays
inside an example and the loss is the same weighted mean: both are checked numerically on the
model, and a resume that flips the setting is refused.
"""

import numpy as np
import pytest
import seqio

from codereason_jax import run_contract, trainer
from codereason_jax.checkpoints import CheckpointConfig, CheckpointError
from codereason_jax.model import PanGuConfig
from codereason_jax.optim import OptimizerConfig
from codereason_jax.preflight import preflight
from codereason_jax.trainer import TrainConfig
from seqio_tasks import mixing, tasks
from seqio_tasks import mixtures  # noqa: F401 (registers the tasks)
from seqio_tasks.sources import embedded, instructions
from test_loss_oracle import EXAMPLES, per_token_nll, train_step_metrics

# The embedded code instructions (docstring summary -> function) are the shortest offline
# instruction task: at 64 tokens about half fit a row, and now and then two fit together.
TASK = "embedded_code_instructions"
LENGTH = 64
BATCH = 4
STEPS = 30  # 120 rows: enough for several packed rows holding two examples
PIPELINE_MODEL = PanGuConfig(vocab_size=8192, num_layers=2, d_model=32, num_heads=4, d_ff=64,
                             max_seq_len=LENGTH)
MESH = (1, 2, 4)  # 2 batch shards over the 8 test devices, so a batch of 4 is allowed
REAL_MIXTURE_ITERATOR = mixing.mixture_iterator


def _train_config(pack: bool, **changes) -> TrainConfig:
    return TrainConfig(TASK, num_steps=STEPS, batch_size=BATCH, sequence_length=LENGTH,
                       mesh_shape=MESH, pack_instructions=pack, prefetch_batches=0, **changes)


class _IteratorRequested(Exception):
    """Raised by the spy to stop trainer.train once it has asked for its input iterator."""


def _trainer_iterator_call(run_dir: str, pack: bool) -> tuple[str, dict]:
    """The (mixture, keyword arguments) with which trainer.train builds its input iterator."""
    calls = []

    def spy(name, **kwargs):
        calls.append((name, kwargs))
        raise _IteratorRequested

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mixing, "mixture_iterator", spy)
        with pytest.raises(_IteratorRequested):
            trainer.train(PIPELINE_MODEL, _train_config(pack), OptimizerConfig(warmup_steps=1),
                          CheckpointConfig(), run_dir)
    (call,) = calls
    return call


@pytest.fixture(scope="module")
def trainer_rows(tmp_path_factory):
    """pack -> (the iterator's keyword arguments, the rows of its first STEPS batches, in
    order), the iterator built exactly as trainer.train asked for it."""
    result = {}
    steps = STEPS
    for pack in (True, False):
        name, kwargs = _trainer_iterator_call(str(tmp_path_factory.mktemp("run")), pack)
        iterator = REAL_MIXTURE_ITERATOR(name, **kwargs)
        rows = []
        for _ in range(steps):
            batch = next(iterator)
            rows += [{k: batch[k][r] for k in batch} for r in range(BATCH)]
        result[pack] = kwargs, rows
        # Enough one-example rows for every example the packed rows took.
        steps = -(-sum(int(row["segment_ids"].max()) for row in rows) // BATCH)
    return result


@pytest.fixture(scope="module")
def task_examples():
    """full token sequence (prompt + response + EOS) -> prompt length, for every training
    record of the task, tokenized here from the raw records (not through SeqIO)."""
    vocab = seqio.get_mixture_or_task(TASK).output_features["targets"].vocabulary
    table = {}
    for record in embedded.code_instructions("train"):
        prompt, response = instructions.format_prompt(record, tasks.INSTRUCTION_TEMPLATE)
        prompt_ids = vocab.encode(prompt)
        table[tuple(prompt_ids + vocab.encode(response) + [vocab.eos_id])] = len(prompt_ids)
    return table


def _segments(row) -> list[tuple[int, int]]:
    """[start, end) of each example in a row, from its segment ids."""
    ids = row["segment_ids"]
    spans = []
    for segment in range(1, int(ids.max()) + 1):
        where = np.flatnonzero(ids == segment)
        assert (np.diff(where) == 1).all(), f"segment {segment} is not contiguous"
        spans.append((int(where[0]), int(where[-1]) + 1))
    return spans


def _full_sequence(row, start, end) -> tuple[int, ...]:
    """The example's tokens: its inputs and the last target."""
    return tuple(row["inputs"][start:end].tolist()) + (int(row["targets"][end - 1]),)


def _check_row_layout(row, examples) -> int:
    """Assert the layout of one row; return how many examples it holds."""
    ids, positions, weights = row["segment_ids"], row["positions"], row["loss_weights"]
    spans = _segments(row)
    assert spans, "a row without any example"
    # Segments 1..n, contiguous and in order, from position 0 of the row; padding after.
    assert spans[0][0] == 0
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start == end
    used = spans[-1][1]
    assert (ids[:used] > 0).all() and (ids[used:] == 0).all()
    assert (weights[used:] == 0).all() and (row["inputs"][used:] == 0).all()
    for start, end in spans:
        np.testing.assert_array_equal(positions[start:end], np.arange(end - start))
        # Inside an example, target t is input t + 1.
        np.testing.assert_array_equal(row["targets"][start:end - 1], row["inputs"][start + 1:end])
        sequence = _full_sequence(row, start, end)
        assert sequence in examples, "a segment that is no example of the task"
        prompt_length = examples[sequence]
        # Weight 1 exactly where the target is a response token (or its EOS), 0 on the prompt.
        expected = (np.arange(end - start) + 1 >= prompt_length).astype(np.float32)
        np.testing.assert_array_equal(weights[start:end], expected)
    # The weighted targets, in order, are the responses of the row's examples, in order.
    sequences = [_full_sequence(row, start, end) for start, end in spans]
    responses = [t for sequence in sequences for t in sequence[examples[sequence]:]]
    assert row["targets"][weights > 0].tolist() == responses
    return len(spans)


def test_the_trainer_asks_its_iterator_for_the_configured_packing(trainer_rows):
    """trainer.train passes TrainConfig.pack_instructions (and the row length) to the
    iterator it trains on."""
    for pack in (True, False):
        kwargs, _ = trainer_rows[pack]
        assert kwargs["pack_instructions"] is pack
        assert (kwargs["sequence_length"], kwargs["batch_size"]) == (LENGTH, BATCH)


def test_packed_rows_hold_several_examples_with_restarting_positions_and_response_weights(
        trainer_rows, task_examples):
    """Every packed row is examples of the task laid out whole (segments 1..n, positions from
    0 in each, weight 1 on response targets only, padding weightless), and some rows hold
    more than one."""
    _, rows = trainer_rows[True]
    counts = [_check_row_layout(row, task_examples) for row in rows]
    assert max(counts) >= 2 and sum(c >= 2 for c in counts) >= 2, counts


def test_unpacked_rows_hold_exactly_one_example(trainer_rows, task_examples):
    """pack_instructions=False: one example per row, the same layout otherwise."""
    _, rows = trainer_rows[False]
    assert [_check_row_layout(row, task_examples) for row in rows] == [1] * len(rows)


def test_packing_regroups_the_same_examples_in_order_and_greedily(trainer_rows):
    """The packed rows take the examples the unpacked rows show, in the same order, each
    row as many as fit: the next example would not have fitted in the row before."""
    packed = [[_full_sequence(row, *span) for span in _segments(row)]
              for row in trainer_rows[True][1]]
    flat = [example for row in packed for example in row]
    single = [_full_sequence(row, *_segments(row)[0]) for row in trainer_rows[False][1]]
    assert len(flat) > len(packed) and len(single) >= len(flat)
    assert flat == single[:len(flat)]
    for row, following in zip(packed, packed[1:]):
        used = sum(len(example) - 1 for example in row)
        assert used + len(following[0]) - 1 > LENGTH


# --- the model on packed rows ----------------------------------------------------------------
# test_loss_oracle's tiny model (16 positions, embeddings scaled up so that tokens, positions
# and what a token attends to move the logits clearly) and its float64 per-token loss, shared
# by both tests below so that the model is built and traced once.

def _pack(examples, length: int, pack: bool):
    """Rows of (prompt, response) examples from the packer the trainer's iterator uses."""
    packer = mixing.default_packer_factory(seqio.get_mixture_or_task(TASK), length, pack)()
    rows = [row for prompt, response in examples
            for row in packer.add(np.array(prompt), np.array(response))]
    rows += list(packer.flush())
    return {k: np.stack([row[k] for row in rows]) for k in rows[0]}


def _as_one_document(batch):
    """The same rows with every real token in segment 1: attention free to cross examples."""
    return dict(batch, segment_ids=(batch["segment_ids"] > 0).astype(np.int32))


def _rows(*batches):
    return {k: np.concatenate([batch[k] for batch in batches]) for k in batches[0]}


def test_a_packed_example_sees_only_itself():
    """The second example of a packed row gets the per-token loss it gets alone in its own
    row (positions from 0): attention does not cross the example boundary. The same row read
    as one document changes it, so the comparison has power."""
    rng = np.random.default_rng(0)
    first = (rng.integers(3, 64, 3).tolist(), rng.integers(3, 64, 3).tolist() + [1])
    second = (rng.integers(3, 64, 3).tolist(), rng.integers(3, 64, 4).tolist() + [1])
    packed = _pack([first, second], 16, pack=True)
    assert packed["segment_ids"].max(axis=1).tolist() == [2]
    start = int(np.flatnonzero(packed["segment_ids"][0] == 2)[0])
    size = len(second[0]) + len(second[1]) - 1
    # One forward pass: packed, the second alone, packed as one document, the first alone.
    batch = _rows(packed, _pack([second], 16, pack=False), _as_one_document(packed),
                  _pack([first], 16, pack=False))
    nll = per_token_nll(batch)
    in_row, by_itself = nll[0, start:start + size], nll[1, :size]
    np.testing.assert_allclose(in_row, by_itself, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nll[0, :start], nll[3, :start], rtol=1e-5, atol=1e-5)
    weights = batch["loss_weights"][1, :size]
    assert weights.sum() == len(second[1])
    assert (in_row * weights).sum() == pytest.approx((by_itself * weights).sum(), rel=1e-5)
    # 100 times the tolerance above (the leak moves these losses by about 7e-3).
    assert np.abs(nll[2, start:start + size] - by_itself).max() > 1e-3


def test_train_step_loss_on_a_packed_batch_equals_the_float64_oracle():
    """test_loss_oracle's examples packed two to a row (16 tokens) by the packer the trainer
    uses: the step's loss is the float64 weighted cross-entropy (test_loss_oracle's
    per_token_nll) of the model's logits over the same 15 response tokens. The oracle reads
    the batch's segment ids: a step that dropped them would be off by far more than the
    tolerance, as the same batch read as one document per row shows."""
    packed = _pack(EXAMPLES, 16, pack=True)
    assert packed["segment_ids"].max(axis=1).tolist() == [2, 2]
    loss, tokens = train_step_metrics(packed)
    assert tokens == 15 == packed["loss_weights"].sum()
    nll = per_token_nll(_rows(packed, _as_one_document(packed)))
    weights = packed["loss_weights"].astype(np.float64)
    oracle, as_one_document = ((nll[rows] * weights).sum() / weights.sum()
                               for rows in (slice(0, 2), slice(2, 4)))
    assert loss == pytest.approx(oracle, rel=2e-6)
    assert abs(as_one_document - loss) > 10 * 2e-6 * loss


# --- the run contract ------------------------------------------------------------------------

def test_a_resume_that_flips_pack_instructions_is_refused(tmp_path):
    """pack_instructions changes every batch, so the run directory's contract refuses a
    resume with the other value (in preflight, before anything is written); a harmless
    change is accepted."""
    run_dir = str(tmp_path / "run")
    optimizer = OptimizerConfig(warmup_steps=1)
    started = preflight(PIPELINE_MODEL, _train_config(False), optimizer, CheckpointConfig(),
                        run_dir)
    tmp_path.joinpath("run").mkdir()
    run_contract.write(run_dir, None, started.contract, {}, 0)
    saved = tmp_path.joinpath("run", run_contract.RUN_FILE).read_text()
    with pytest.raises(CheckpointError, match=r"TrainConfig.pack_instructions False -> True "
                                              r"\(changes the batches"):
        preflight(PIPELINE_MODEL, _train_config(True), optimizer, CheckpointConfig(), run_dir)
    assert tmp_path.joinpath("run", run_contract.RUN_FILE).read_text() == saved
    harmless = preflight(PIPELINE_MODEL, _train_config(False, log_every=3), optimizer,
                         CheckpointConfig(), run_dir)
    assert harmless.changes == {"TrainConfig.log_every": (10, 3)}
