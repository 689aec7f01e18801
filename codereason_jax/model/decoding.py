"""Incremental decoding with the key/value cache of ``PanGuDecoder(decode=True)``.

A cache holds, per attention layer, keys, values and segment ids for ``max_length`` positions
and the index of the next free slot. ``extend`` feeds any number of new tokens (a whole prompt,
then one token at a time) and returns their logits; the positions passed in must be the
tokens' absolute per-document positions, which also index the top-query table.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codereason_jax.model.config import ConfigError
from codereason_jax.model.pangu import PanGuDecoder

Cache = Any


def init_cache(model: PanGuDecoder, params: Any, batch_size: int, max_length: int) -> Cache:
    """An empty cache for ``batch_size`` rows of up to ``max_length`` tokens (no forward pass)."""
    if max_length > model.config.max_seq_len:
        raise ConfigError(
            f"Decoding max_length={max_length} exceeds PanGuConfig.max_seq_len="
            f"{model.config.max_seq_len}; generate fewer tokens or use a shorter prompt.")
    tokens = jnp.zeros((batch_size, max_length), jnp.int32)

    def shapes():
        _, variables = model.apply({"params": params}, tokens, positions=tokens, decode=True,
                                   mutable=["cache"])
        return variables["cache"]

    abstract = jax.eval_shape(shapes)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.meta.unbox(abstract))


def extend(model: PanGuDecoder, params: Any, cache: Cache, tokens: jax.Array,
           positions: jax.Array, segment_ids: jax.Array | None = None
           ) -> tuple[jax.Array, Cache]:
    """Append ``tokens`` [batch, n] to the cache; return their float32 logits and the new cache."""
    if segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)
    logits, variables = model.apply(
        {"params": params, "cache": cache}, tokens, positions=positions,
        segment_ids=segment_ids, decode=True, mutable=["cache"])
    return logits, variables["cache"]
