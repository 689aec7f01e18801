"""Sampling in evaluation/generation.py: temperature, top-k, penalties, seeding, validation.

Distribution checks draw DRAWS rows of the same logits in one ``_choose`` call and compare the
token counts with probabilities computed in float64 numpy by a chi-square test whose false-
failure rate is FALSE_FAILURE (the draws are seeded, so every test is deterministic; the bound
says the seeds were not picked to pass). Each such test also shows the same draws reject a
plausible wrong distribution, so it has the power to catch that mistake.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from codereason_jax.evaluation import generation
from codereason_jax.evaluation.generation import SamplingConfig
from codereason_jax.model import PanGuConfig, PanGuDecoder

DRAWS = 20_000
FALSE_FAILURE = 1e-6


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def _draw(logits, config, seed, counts=None):
    """Token histogram of DRAWS independent draws from one row of logits."""
    logits = jnp.tile(jnp.asarray(logits, jnp.float32), (DRAWS, 1))
    counts = (jnp.zeros_like(logits) if counts is None
              else jnp.tile(jnp.asarray(counts, jnp.float32), (DRAWS, 1)))
    tokens = generation._choose(logits, counts, jax.random.key(seed), config)
    return np.bincount(np.asarray(tokens), minlength=logits.shape[1])


def _chi2(observed, probs):
    """Pearson statistic over the cells with probability > 0 (callers check the others)."""
    keep = probs > 0
    expected = observed.sum() * probs[keep]
    assert expected.min() > 100, "too few expected draws a cell for the chi-square tail"
    return float(np.sum((observed[keep] - expected) ** 2 / expected))


def _critical(probs):
    return float(stats.chi2.isf(FALSE_FAILURE, np.count_nonzero(probs) - 1))


# Every distribution test draws from 8 logits: one shape, so the eager ops compile once.
# Shuffled so that no test can pass by assuming the largest logit comes first.
LOGITS = np.array([0.2, -1.0, 1.0, -0.2, 0.6, -0.6, 0.4, -0.4])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_samples_follow_softmax_of_logits_over_temperature(temperature):
    """Sampling at temperature T draws from softmax(logits / T), every token reachable
    (top_k=0 cuts nothing); the other two temperatures' distributions are rejected."""
    config = SamplingConfig(method="sample", temperature=temperature)
    observed = _draw(LOGITS, config, seed=11)
    assert observed.sum() == DRAWS and np.all(observed > 0)
    expected = _softmax(LOGITS / temperature)
    assert _chi2(observed, expected) < _critical(expected)
    for wrong in {0.5, 1.0, 2.0} - {temperature}:
        assert _chi2(observed, _softmax(LOGITS / wrong)) > _critical(expected), wrong


TOPK_LOGITS = np.array([0.3, 2.0, -0.5, 1.2, 0.9, -1.5, 0.5, 0.0])  # top 3: ids 1, 3, 4


def test_top_k_samples_only_the_k_largest_in_renormalised_proportions():
    """top_k=3 never leaves ids {1, 3, 4}; within them the shares are softmax(logits / T)
    renormalised over the three, not the untempered softmax and not uniform."""
    config = SamplingConfig(method="sample", temperature=1.5, top_k=3)
    observed = _draw(TOPK_LOGITS, config, seed=12)
    outside = np.ones(TOPK_LOGITS.size, bool)
    outside[[1, 3, 4]] = False
    assert observed[outside].sum() == 0
    expected = np.where(outside, 0.0, _softmax(TOPK_LOGITS / 1.5))
    expected /= expected.sum()
    assert _chi2(observed, expected) < _critical(expected)
    untempered = np.where(outside, 0.0, _softmax(TOPK_LOGITS))
    uniform = np.where(outside, 0.0, 1 / 3)
    for wrong in (untempered / untempered.sum(), uniform):
        assert _chi2(observed, wrong) > _critical(expected)


def test_top_k_is_taken_after_the_penalties():
    """A penalised token drops out of the top k: token 0 (logit 3, seen twice, penalised to
    3 - 2*1.0 - 0.5 = 0.5) loses its place to tokens 1, 2 and 3, drawn as e^2.5 : e^2 : e^1.8."""
    config = SamplingConfig(method="sample", top_k=3, frequency_penalty=1.0,
                            presence_penalty=0.5)
    logits = np.array([3.0, 2.5, 2.0, 1.8, 1.0, 0.0, -1.0, -2.0])
    observed = _draw(logits, config, seed=13, counts=[2, 0, 0, 0, 0, 0, 0, 0])
    assert observed[0] == 0 and observed[4:].sum() == 0
    expected = np.array([0.0, *np.exp([2.5, 2.0, 1.8]), 0, 0, 0, 0])
    expected /= expected.sum()
    assert _chi2(observed, expected) < _critical(expected)
    assert _chi2(observed, np.array([0, 1, 1, 1, 0, 0, 0, 0]) / 3) > _critical(expected)


def test_penalties_are_subtracted_before_dividing_by_temperature():
    """Sampling draws from softmax((logits - f*counts - p*[counts>0]) / T), the OpenAI-style
    formula, not softmax(logits / T - penalties)."""
    config = SamplingConfig(method="sample", temperature=2.0, frequency_penalty=0.5,
                            presence_penalty=0.25)
    counts = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    observed = _draw(np.zeros(8), config, seed=14, counts=counts)
    penalty = 0.5 * counts + 0.25 * (counts > 0)
    expected = _softmax(-penalty / 2.0)
    assert _chi2(observed, expected) < _critical(expected)
    assert _chi2(observed, _softmax(-penalty)) > _critical(expected)


@pytest.mark.parametrize("frequency, presence, expected", [
    # Token 0 leads token 1 by 1.0; it is chosen while 1 - f*c - p*[c > 0] > 0.
    (0.3, 0.2, [0, 0, 0, 1, 1, 1]),  # c=2: 1-0.6-0.2 = 0.2 > 0; c=3: -0.1
    (0.6, 0.0, [0, 0, 1, 1, 1, 1]),  # c=1: 0.4; c=2: -0.2
    (0.0, 0.6, [0, 0, 0, 0, 0, 0]),  # presence counts once: 0.4 whatever c
    (0.0, 1.2, [0, 1, 1, 1, 1, 1]),  # ... and flips from the first repeat on
], ids=["both", "frequency", "presence-once", "presence-flips"])
def test_greedy_choice_flips_at_the_hand_computed_count(frequency, presence, expected):
    """Frequency penalty grows with the count, presence penalty is paid once."""
    config = SamplingConfig(frequency_penalty=frequency, presence_penalty=presence)
    counts = jnp.asarray([[c, 0] for c in range(6)], jnp.float32)
    logits = jnp.tile(jnp.asarray([1.0, 0.0]), (6, 1))
    chosen = generation._choose(logits, counts, jax.random.key(0), config)
    assert np.asarray(chosen).tolist() == expected


def test_greedy_choice_is_the_argmax_of_the_penalised_logits():
    """Across random logits and counts, greedy picks argmax(logits - f*counts - p*[counts>0])
    as computed in float64 (rows within 1e-3 of a tie are skipped)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(512, 16)).astype(np.float32)
    counts = rng.integers(0, 4, size=logits.shape) * (rng.random(logits.shape) < 0.5)
    config = SamplingConfig(frequency_penalty=0.7, presence_penalty=0.4)
    chosen = np.asarray(generation._choose(jnp.asarray(logits), jnp.asarray(counts, jnp.float32),
                                           jax.random.key(0), config))
    penalised = logits.astype(np.float64) - 0.7 * counts - 0.4 * (counts > 0)
    top2 = np.sort(penalised, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3
    assert clear.sum() > 450
    want = np.argmax(penalised, axis=-1)
    np.testing.assert_array_equal(chosen[clear], want[clear])
    assert np.sum(want != np.argmax(logits, axis=-1)) > 100  # the penalties do change choices


# A two-layer model small enough to compile in a second, with weights large enough (std 0.2)
# that greedy decoding falls into repeats: each of these prompts does in its first 6 tokens,
# starting with a token of the prompt.
MODEL_CONFIG = PanGuConfig(vocab_size=64, num_layers=2, d_model=16, num_heads=2, d_ff=32,
                           max_seq_len=16, dropout_rate=0.0)
PROMPTS = [[55, 53, 20], [11, 10, 24], [3, 46, 34, 55], [44, 48, 50, 56]]  # left-padded
NEW = 6


@pytest.fixture(scope="module")
def model_and_params():
    """Parameters drawn in numpy from the shapes alone: model.init itself takes seconds."""
    model = PanGuDecoder(MODEL_CONFIG)
    shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
        jax.random.key(0), jnp.zeros((1, MODEL_CONFIG.max_seq_len), jnp.int32))["params"]))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        fill = {"scale": np.ones, "bias": np.zeros}.get(path[-1].key)
        return (fill(leaf.shape, np.float32) if fill
                else rng.normal(0.0, 0.2, leaf.shape).astype(np.float32))
    return model, jax.tree_util.tree_map_with_path(draw, shapes)


@functools.partial(jax.jit, static_argnums=0)
def _full_forward(model, params, tokens):
    return model.apply({"params": params}, tokens)


def _reference_greedy(model, params, prompts, frequency, presence):
    """The decoding loop re-done without the KV cache: the full forward over each whole
    sequence every step, penalties in float64 on counts of the generated tokens only.
    Sequences are right-padded to one width, which a causal model cannot see."""
    sequences = [list(p) for p in prompts]
    counts = np.zeros((len(prompts), MODEL_CONFIG.vocab_size))
    for _ in range(NEW):
        tokens = np.zeros((len(prompts), MODEL_CONFIG.max_seq_len), np.int32)
        for i, s in enumerate(sequences):
            tokens[i, :len(s)] = s
        logits = np.asarray(_full_forward(model, params, tokens), np.float64)
        for i, s in enumerate(sequences):
            penalised = logits[i, len(s) - 1] - frequency * counts[i] - presence * (counts[i] > 0)
            token = int(np.argmax(penalised))
            s.append(token)
            counts[i, token] += 1
    return [s[len(p):] for s, p in zip(sequences, prompts)]


@pytest.mark.parametrize("frequency, presence", [(0.0, 0.0), (100.0, 0.0), (0.2, 0.2)],
                         ids=["plain", "huge-frequency", "moderate-both"])
def test_greedy_generate_equals_an_uncached_reference_with_the_same_penalties(
        model_and_params, frequency, presence):
    """generate's per-row counts hold exactly the tokens generated so far in that row (not
    the prompt's, not other rows'), so its greedy output equals the full-forward reference.
    The moderate setting lets tokens repeat a few times, so it depends on the counts being
    counts (frequency) and on presence being paid once."""
    model, params = model_and_params
    config = SamplingConfig(frequency_penalty=frequency, presence_penalty=presence,
                            max_new_tokens=NEW)
    got = generation.generate(model, params, PROMPTS, eos_id=-1, config=config,
                              batch_size=len(PROMPTS))
    assert got == _reference_greedy(model, params, PROMPTS, frequency, presence)
    # Every row starts by repeating a prompt token: penalising prompt tokens would change it.
    assert all(g[0] in p for g, p in zip(got, PROMPTS))
    if frequency == 0.0:
        assert all(len(set(g)) < NEW for g in got)  # unpenalised greedy repeats itself
    if frequency == 100.0:
        assert all(len(set(g)) == NEW for g in got)  # ... and the penalty stops that


def _sample(model, params, seed, batch_size=4):
    config = SamplingConfig(method="sample", temperature=5.0, seed=seed, max_new_tokens=NEW)
    # One prompt five times in batches of 4 (the greedy tests' shapes, so only the loop
    # compiles again): rows 0-3 share batch 0, row 4 is batch 1.
    return generation.generate(model, params, [PROMPTS[0]] * 5, eos_id=-1, config=config,
                               batch_size=batch_size)


def test_sampling_is_reproducible_per_seed_with_independent_rows_and_batches(
        model_and_params):
    """A seed fixes every sample, whatever the batch size (each prompt's key folds in its
    index in the whole list); another seed changes them; copies of one prompt in the same
    batch, or in another batch, get their own draws, and so does every step (the key folds in
    the step). At temperature 5 each next-token
    probability is below 0.025, so equal 6-token samples could only come from shared
    randomness, and a row with 3 or fewer distinct tokens from noise replayed every step."""
    model, params = model_and_params
    first = _sample(model, params, seed=3)
    assert _sample(model, params, seed=3) == first
    assert _sample(model, params, seed=3, batch_size=2) == first
    assert len({tuple(s) for s in first}) == 5
    other = _sample(model, params, seed=4)
    assert all(a != b for a, b in zip(first, other))
    assert all(len(set(s)) >= 4 for s in first + other)


def _message(text):
    return "^" + re.escape(text) + r"\Z"


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="beam"), "SamplingConfig.method='beam' must be greedy or sample."),
    (dict(method="sample", temperature=0.0), "SamplingConfig.temperature=0.0 must be > 0."),
    (dict(method="sample", temperature=-0.5), "SamplingConfig.temperature=-0.5 must be > 0."),
    (dict(top_k=-1), "SamplingConfig.top_k must be >= 0 and max_new_tokens > 0."),
    (dict(max_new_tokens=0), "SamplingConfig.top_k must be >= 0 and max_new_tokens > 0."),
    (dict(max_new_tokens=-3), "SamplingConfig.top_k must be >= 0 and max_new_tokens > 0."),
], ids=["unknown-method", "zero-temperature", "negative-temperature", "negative-top-k",
        "zero-new-tokens", "negative-new-tokens"])
def test_invalid_sampling_configs_are_refused_with_their_message(kwargs, message):
    with pytest.raises(ValueError, match=_message(message)):
        SamplingConfig(**kwargs)


def test_boundary_sampling_configs_are_accepted():
    """Greedy ignores the temperature, top_k=0 means no cut, one new token is enough."""
    SamplingConfig(method="greedy", temperature=0.0)
    SamplingConfig(method="sample", temperature=1e-3, top_k=0, max_new_tokens=1)


def test_paper_sampling_is_the_papers_decoding():
    """The paper's repo defaults: sampling at temperature 1 with top-k 3, frequency penalty
    1.5, presence penalty 0.3, up to 500 new tokens."""
    assert generation.PAPER_SAMPLING == SamplingConfig(
        method="sample", temperature=1.0, top_k=3, frequency_penalty=1.5, presence_penalty=0.3,
        seed=0, max_new_tokens=500)
