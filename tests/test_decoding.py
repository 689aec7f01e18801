"""Incremental decoding with the KV cache gives the logits of a full forward pass."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax.model import ConfigError, PanGuDecoder
from codereason_jax.model import decoding
from test_model import init, random_tokens, trained_scale


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cached_decoding_equals_full_forward(tiny_config, scan_layers):
    cfg = dataclasses.replace(tiny_config, scan_layers=scan_layers)
    model, params = init(cfg)
    params = trained_scale(params)  # attention far from uniform, so cache mistakes show
    length, prompt = 12, 5
    tokens = random_tokens(cfg, (2, length))
    positions = jnp.broadcast_to(jnp.arange(length), (2, length))
    full = np.asarray(model.apply({"params": params}, tokens))

    cache = decoding.init_cache(model, params, batch_size=2, max_length=length)
    extend = jax.jit(decoding.extend, static_argnums=0)
    logits, cache = extend(model, params, cache, tokens[:, :prompt], positions[:, :prompt])
    pieces = [np.asarray(logits)]
    for i in range(prompt, length):
        logits, cache = extend(model, params, cache, tokens[:, i:i + 1], positions[:, i:i + 1])
        pieces.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5)


def test_left_padded_batch_matches_unpadded_rows(tiny_config):
    """Prompts of different lengths in one batch: pads (segment 0) are invisible to the text."""
    model, params = init(tiny_config)
    params = trained_scale(params)
    short, long_ = random_tokens(tiny_config, (1, 4), seed=7), random_tokens(
        tiny_config, (1, 7), seed=8)
    pad = 7 - 4
    tokens = jnp.concatenate([jnp.pad(short, ((0, 0), (pad, 0))), long_], axis=0)
    segment_ids = jnp.array([[0] * pad + [1] * 4, [1] * 7])
    positions = jnp.array([[0] * pad + list(range(4)), list(range(7))])

    cache = decoding.init_cache(model, params, batch_size=2, max_length=9)
    logits, cache = decoding.extend(model, params, cache, tokens, positions, segment_ids)
    next_tokens = jnp.array([[3], [5]])
    step, _ = decoding.extend(model, params, cache, next_tokens,
                              jnp.array([[4], [7]]), jnp.ones((2, 1), jnp.int32))

    want_short = model.apply({"params": params}, jnp.concatenate([short, next_tokens[:1]], 1))
    want_long = model.apply({"params": params}, jnp.concatenate([long_, next_tokens[1:]], 1))
    np.testing.assert_allclose(logits[0, pad:], want_short[0, :4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1], want_long[0, :7], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(step[0, 0], want_short[0, 4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(step[1, 0], want_long[0, 7], rtol=1e-5, atol=1e-5)


def test_cache_longer_than_position_table_is_refused(tiny_config):
    model, params = init(tiny_config)
    # The whole table is usable: a cache of exactly max_seq_len positions is accepted.
    cache = decoding.init_cache(model, params, batch_size=1, max_length=tiny_config.max_seq_len)
    assert {leaf.shape[1] for leaf in jax.tree.leaves(cache) if leaf.ndim >= 2} == {
        tiny_config.max_seq_len}
    with pytest.raises(ConfigError, match="max_seq_len"):
        decoding.init_cache(model, params, batch_size=1, max_length=tiny_config.max_seq_len + 1)


def test_decode_requires_positions(tiny_config):
    model, params = init(tiny_config)
    cache = decoding.init_cache(model, params, batch_size=1, max_length=8)
    with pytest.raises(ValueError, match="absolute positions"):
        PanGuDecoder(tiny_config).apply({"params": params, "cache": cache},
                                        jnp.zeros((1, 1), jnp.int32), decode=True,
                                        mutable=["cache"])
