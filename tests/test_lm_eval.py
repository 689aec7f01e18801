"""Held-out loss of a language-modelling task (task_eval._language_modelling): its windowing of
long documents and its per-token loss, against a float64 numpy forward pass of each window."""

import math

import jax
import numpy as np
import pytest

import numpy_reference
from codereason_jax.evaluation import task_eval
from codereason_jax.evaluation.eval_config import EvalConfig
from test_model import init, trained_scale

# Document lengths in tokens, for a context of 32 (tiny_config): 75 needs three windows (the
# last one short), 34 two (the second scores one token), 33 exactly one full window, 9 one.
LENGTHS = (75, 9, 34, 33)


def _documents(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab_size, n).astype(np.int32) for n in LENGTHS]


def _expected_nll(params, config, tokens, size=None):
    """(sum of per-token NLL, number of scored tokens) of one document, float64.

    The rule, written out: windows start at 0, S, 2S, ... (S = max_seq_len unless ``size``
    says otherwise) while a next token is left; the window at s reads tokens[s:s+S] (fewer at
    the end) with positions 0, 1, ... and one document, and scores the next token of each
    input. So token j >= 1 is scored once, with the window's tokens before it (at most S) as
    context; token 0 never.
    """
    size = size or config.max_seq_len
    nll, targets = 0.0, []
    for start in range(0, len(tokens) - 1, size):
        inputs = tokens[start:min(start + size, len(tokens) - 1)]
        n = len(inputs)
        logits = numpy_reference.forward(params, config, inputs, np.arange(n), np.ones(n, int))
        logits = logits - logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        target = tokens[start + 1:start + 1 + n]
        nll -= log_probs[np.arange(n), target].sum()
        targets.extend(range(start + 1, start + 1 + n))
    assert targets == list(range(1, len(tokens)))  # every token after the first, once
    return nll, len(targets)


def test_language_modelling_windows_and_per_token_loss(tiny_config):
    """Loss, perplexity and token counts of documents shorter and longer than the context, on
    weights scaled up so that the context (and hence the windowing) moves the loss."""
    model, params = init(tiny_config)
    params = trained_scale(params, 10.0)
    documents = _documents(tiny_config.vocab_size)
    rows = [{"targets": d} for d in documents]
    # batch_size 4 < 7 windows: two padded batches.
    result = task_eval._language_modelling(rows, model, params, EvalConfig(batch_size=4))

    params64 = jax.tree.map(np.asarray, params)
    want = [_expected_nll(params64, tiny_config, d) for d in documents]
    assert [tokens for _, tokens in want] == [n - 1 for n in LENGTHS]
    assert result["kind"] == "language_modelling" and result["n"] == len(LENGTHS)
    assert result["unscored"] == {"fewer than 2 tokens": 0}
    assert result["chance"] == pytest.approx(math.log(tiny_config.vocab_size))
    got = result["examples"]
    assert [e["tokens"] for e in got] == [n - 1 for n in LENGTHS]
    np.testing.assert_allclose([e["nll_sum"] for e in got], [nll for nll, _ in want],
                               rtol=2e-5)
    metrics = result["metrics"]
    assert metrics["tokens"] == sum(LENGTHS) - len(LENGTHS)
    loss = sum(nll for nll, _ in want) / (sum(LENGTHS) - len(LENGTHS))
    assert metrics["loss"] == pytest.approx(loss, rel=2e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(loss), rel=5e-5)
    # The comparison has power: windows of half the context (other context for most tokens)
    # would give a loss that differs far beyond the tolerance.
    half = sum(_expected_nll(params64, tiny_config, d, tiny_config.max_seq_len // 2)[0]
               for d in documents) / (sum(LENGTHS) - len(LENGTHS))
    assert abs(half - loss) > 1e-3 * loss
    per_document = [nll / tokens for nll, tokens in want]
    # A ratio of resampled sums lies between the smallest and largest per-document ratio.
    low, high = metrics["loss_ci95"]
    assert min(per_document) - 1e-9 <= low <= high <= max(per_document) + 1e-9

    # max_examples keeps the first documents.
    first = task_eval._language_modelling(rows, model, params,
                                          EvalConfig(batch_size=4, max_examples=1))
    assert first["n"] == 1 and first["metrics"]["tokens"] == LENGTHS[0] - 1
    assert first["metrics"]["loss"] == pytest.approx(per_document[0], rel=2e-5)


def test_documents_with_nothing_to_predict_are_counted_not_averaged(tiny_config):
    """Documents of 0 or 1 tokens predict no token: they are counted as unscored and leave the
    loss and its interval as they are; a split of only such documents is an error."""
    model, params = init(tiny_config)
    documents = _documents(tiny_config.vocab_size)[1:2]  # the 9-token one
    alone = task_eval._language_modelling([{"targets": documents[0]}], model, params,
                                          EvalConfig(batch_size=4))
    rows = [{"targets": np.zeros(0, np.int32)}, {"targets": documents[0]},
            {"targets": np.array([5], np.int32)}]
    result = task_eval._language_modelling(rows, model, params, EvalConfig(batch_size=4))
    assert result["n"] == 1 and result["unscored"] == {"fewer than 2 tokens": 2}
    assert result["metrics"]["tokens"] == 8
    assert result["metrics"]["loss"] == pytest.approx(alone["metrics"]["loss"], rel=1e-12)
    assert all(math.isfinite(v) for v in result["metrics"]["loss_ci95"])
    assert result["examples"] == alone["examples"]
    with pytest.raises(ValueError, match="none of the 2 documents has 2 or more tokens"):
        task_eval._language_modelling(rows[::2], model, params, EvalConfig(batch_size=4))
