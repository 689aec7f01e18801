"""The train step's loss against an independent float64 NumPy cross-entropy.

The oracle takes the model's logits (``model.apply``) and the instruction-tuning loss weights
(prompt 0, response 1, padding 0) and computes the weighted mean negative log-likelihood in
float64, without ``codereason_jax.losses``. A step that averaged over prompt or padding tokens,
shifted the targets, or ignored the paper's denominator epsilon would not match it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax import partitioning
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.optim import OptimizerConfig
from codereason_jax.trainer import TrainConfig, make_train_step

CONFIG = PanGuConfig(vocab_size=64, max_seq_len=16, num_layers=2, d_model=16, num_heads=2,
                     d_ff=32, dropout_rate=0.0)
LENGTH = 12
PAD = 0
# (prompt, response) token ids of each row; the response ends with EOS (1).
EXAMPLES = [
    ([5, 9, 13, 2], [40, 41, 17, 1]),
    ([7, 8, 3, 22, 30, 31], [11, 60, 1]),
    ([50, 4], [6, 6, 6, 6, 25, 33, 1]),
    ([12, 19, 44, 45, 46], [1]),
]


def instruction_batch(examples=EXAMPLES, length=LENGTH):
    """One example per row, padded: the layout of seqio_tasks.packing's instruction packers,
    written out here by hand (target t is the token after input t; weight 1 only where the
    target is a response token)."""
    rows = {k: np.zeros((len(examples), length), np.int32)
            for k in ("inputs", "targets", "positions", "segment_ids")}
    rows["loss_weights"] = np.zeros((len(examples), length), np.float32)
    for r, (prompt, response) in enumerate(examples):
        sequence = prompt + response
        m = len(sequence) - 1
        rows["inputs"][r, :m] = sequence[:-1]
        rows["targets"][r, :m] = sequence[1:]
        rows["inputs"][r, m:] = rows["targets"][r, m:] = PAD
        rows["positions"][r, :m] = np.arange(m)
        rows["segment_ids"][r, :m] = 1
        for t in range(m):
            rows["loss_weights"][r, t] = 1.0 if t + 1 >= len(prompt) else 0.0
    return rows


def _params():
    """Embeddings scaled up from the 0.01 init so that the logits, and the per-token losses,
    differ clearly between tokens (at the init every token costs about log V)."""
    model = PanGuDecoder(CONFIG)
    params = nn.meta.unbox(model.init(jax.random.key(3), jnp.zeros((1, LENGTH), jnp.int32))
                           ["params"])
    params = dict(params)
    params["word_embeddings"] = params["word_embeddings"] * 40.0
    params["position_embeddings"] = params["position_embeddings"] * 20.0
    return model, params


def train_step_metrics(batch, epsilon=0.0, accumulation=1):
    """The loss and token count of one (unsharded) train step on ``batch``."""
    model, params = _params()
    mesh = partitioning.make_mesh((1, 1, 1), jax.devices()[:1])
    config = TrainConfig(mixture="unused", num_steps=1, batch_size=len(batch["inputs"]),
                         sequence_length=LENGTH, loss_denominator_epsilon=epsilon,
                         grad_accumulation=accumulation)
    optimizer, _ = OptimizerConfig(peak_learning_rate=1e-3, warmup_steps=0).build(1)
    step = jax.jit(make_train_step(model, optimizer, config, partitioning.DEFAULT_RULES))
    with jax.set_mesh(mesh):
        _, _, metrics = step(params, optimizer.init(params), batch, 0)
    return float(metrics["loss"]), float(metrics["loss_tokens"])


def nll_from_logits(logits, targets):
    """float64 -log softmax(logits)[target] per position."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(-1))
    return log_z - np.take_along_axis(shifted, np.asarray(targets)[..., None], -1)[..., 0]


def per_token_nll(batch):
    """float64 -log softmax(logits)[target] for every position, from model.apply's logits."""
    model, params = _params()
    logits = model.apply({"params": params}, batch["inputs"], batch["positions"],
                         batch["segment_ids"])
    return nll_from_logits(logits, batch["targets"])


def oracle_loss(batch, epsilon=0.0):
    nll = per_token_nll(batch)
    weights = batch["loss_weights"].astype(np.float64)
    return float((nll * weights).sum() / (weights.sum() + epsilon))


def test_the_batch_masks_prompts_and_padding_as_written_by_hand():
    """The fixture itself: row 0 is prompt [5 9 13 2] + response [40 41 17 1], so the weighted
    targets are 40 41 17 1 and the prompt's next tokens 9 13 2 are not."""
    batch = instruction_batch()
    row = batch["targets"][0]
    assert row.tolist() == [9, 13, 2, 40, 41, 17, 1, 0, 0, 0, 0, 0]
    assert batch["loss_weights"][0].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    # Response lengths 4 + 3 + 7 + 1 are the loss tokens.
    assert batch["loss_weights"].sum() == 15


def test_train_step_loss_equals_float64_weighted_cross_entropy():
    batch = instruction_batch()
    loss, tokens = train_step_metrics(batch)
    assert tokens == 15
    assert loss == pytest.approx(oracle_loss(batch), rel=2e-6)


def test_the_oracle_has_power_ignoring_the_weights_changes_the_loss():
    """Averaging over every real token (prompts included), or over every position (padding
    included), gives values far outside the tolerance above: a step that ignored the loss
    weights would fail the previous test."""
    batch = instruction_batch()
    loss, _ = train_step_metrics(batch)
    nll = per_token_nll(batch)
    real = batch["segment_ids"] > 0
    unmasked_prompts = float(nll[real].mean())
    unmasked_everything = float(nll.mean())
    for wrong in (unmasked_prompts, unmasked_everything):
        assert abs(wrong - loss) > 1e-2 * loss, (wrong, loss)
    # Per-token losses really differ between tokens (the model is not at a uniform init).
    assert nll[real].std() > 0.5


def test_shifting_targets_by_one_would_change_the_loss():
    """The oracle also tells the targets from the inputs: scoring inputs instead of targets
    (an off-by-one) gives another value."""
    batch = instruction_batch()
    loss, _ = train_step_metrics(batch)
    off_by_one = dict(batch, targets=batch["inputs"])
    assert abs(oracle_loss(off_by_one) - loss) > 1e-2 * loss


def test_loss_denominator_epsilon_divides_by_tokens_plus_epsilon():
    """The paper's quirk: loss = sum / (tokens + 1e-5). On a batch with one loss token the
    epsilon moves the loss by 1e-5 relative, which float32 resolves (~1e-7)."""
    batch = instruction_batch([([12, 19, 44, 45, 46], [1])])
    assert batch["loss_weights"].sum() == 1
    plain, _ = train_step_metrics(batch)
    paper, tokens = train_step_metrics(batch, epsilon=1e-5)
    assert tokens == 1
    assert paper == pytest.approx(oracle_loss(batch, epsilon=1e-5), rel=1e-6)
    assert plain == pytest.approx(oracle_loss(batch), rel=1e-6)
    # The ratio is exactly 1 / (1 + 1e-5) up to float32 rounding, and 1e-5 away from 1.
    assert paper / plain == pytest.approx(1 / (1 + 1e-5), abs=5e-7)
    assert abs(paper / plain - 1) > 5e-6


def test_loss_denominator_epsilon_on_the_full_batch():
    """An epsilon large enough to see on a many-token batch: sum / (tokens + 0.5)."""
    batch = instruction_batch()
    tokens = batch["loss_weights"].sum()
    loss, _ = train_step_metrics(batch, epsilon=0.5)
    plain, _ = train_step_metrics(batch)
    assert loss == pytest.approx(oracle_loss(batch, epsilon=0.5), rel=2e-6)
    assert loss / plain == pytest.approx(tokens / (tokens + 0.5), rel=1e-6)



def test_accumulated_micro_batches_weight_every_token_equally():
    """Two micro-batches (rows 0, 2 and rows 1, 3: 11 and 4 loss tokens) give the per-token
    mean over the whole batch, not the mean of the two micro-batch means."""
    batch = instruction_batch()
    loss, tokens = train_step_metrics(batch, accumulation=2)
    assert tokens == 15
    assert loss == pytest.approx(oracle_loss(batch), rel=2e-6)
    nll, weights = per_token_nll(batch), batch["loss_weights"].astype(np.float64)
    means = [(nll[rows] * weights[rows]).sum() / weights[rows].sum() for rows in ([0, 2], [1, 3])]
    assert abs(np.mean(means) - loss) > 1e-2 * loss
