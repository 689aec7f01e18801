"""The PanGu-α decoder with its top query layer (Zeng et al. 2021; Ma et al. 2024).

Forward pass (docs/model.md gives it in words, with the sizes):

    h0 = Dropout(E[x] + P[t])                  t: per-document position ids (EOD reset)
    h  = Block_{L-1}(...Block_1(h0))           pre-LN blocks, causal and document-local
    g  = LN_f(h)
    o  = QueryLayer(g, Q_top[t])               queries from the top-query table
    z  = o E^T                                 tied head, no bias, no LayerNorm after

With ``use_query_layer=False`` the model is a plain GPT: L ordinary blocks, LN_f, tied head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codereason_jax.model import layers
from codereason_jax.model.config import ConfigError, PanGuConfig

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _embedding_table(module: nn.Module, name: str, rows: int, config: PanGuConfig,
                     axes: tuple[str, str]) -> jax.Array:
    return module.param(
        name,
        nn.with_logical_partitioning(nn.initializers.normal(layers.kernel_std(config)), axes),
        (rows, config.d_model), config.weights_dtype)


def _lookup(table: jax.Array, ids: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """Row lookup; an out-of-range id yields NaN instead of a silently clamped row."""
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan).astype(dtype)


@jax.custom_vjp
def tied_head(h: jax.Array, word: jax.Array) -> jax.Array:
    """float32 logits h·Eᵀ whose backward forms the table gradient as (hᵀ·dz)ᵀ.

    Autodiff contracts the token axis of the logit gradient dz [tokens, vocab] directly, for
    which XLA:CPU first transposes all of dz; this transposes h [tokens, d] and the [d, vocab]
    product instead (vocab/d times fewer bytes). The same sums, in another order. With a
    bf16/fp16 compute dtype, dz is rounded to it for the two backward matmuls (as every other
    matmul of the model runs), where autodiff would run them in float32 (TF32 GEMMs on a GPU).
    """
    return jnp.einsum("btd,vd->btv", h, word, preferred_element_type=jnp.float32)


def _tied_head_fwd(h, word):
    return tied_head(h, word), (h, word)


def _tied_head_bwd(residuals, dz):
    h, word = residuals
    dz = dz.astype(h.dtype)  # a no-op in float32
    dh = jnp.einsum("btv,vd->btd", dz, word)
    dword = jnp.einsum("btd,btv->dv", h, dz).T
    return dh.astype(h.dtype), dword.astype(word.dtype)


tied_head.defvjp(_tied_head_fwd, _tied_head_bwd)


class PanGuDecoder(nn.Module):
    """PanGu-α decoder returning float32 logits of shape [batch, length, vocab].

    Args of ``__call__``:
      tokens: int [batch, length] input ids.
      positions: int [batch, length] per-document position ids (restart at 0 after each
        end-of-document token). Default: 0..length-1. Required when ``decode=True``, where
        they must be the absolute positions of the chunk's tokens.
      segment_ids: int [batch, length] document ids; attention never crosses documents.
        Default: one document per row.
      deterministic: disable dropout.
      decode: incremental decoding with a ``cache`` collection (see ``decoding.py``).
    """

    config: PanGuConfig

    def _blocks(self, deterministic: bool, decode: bool, packed: bool) -> Any:
        """The ordinary blocks: a list of modules, or one scanned module."""
        cfg = self.config
        block_cls: Any = layers.ScannedBlock if cfg.scan_layers else layers.DecoderBlock
        if cfg.remat_policy != "none":
            block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[cfg.remat_policy],
                                 prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            scanned = nn.scan(
                block_cls,
                variable_axes={"params": 0, "cache": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,),
                length=cfg.num_ordinary_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            return scanned(cfg, deterministic, decode, packed, name="blocks")
        return [block_cls(cfg, deterministic, decode, packed, name=f"block_{i}")
                for i in range(cfg.num_ordinary_layers)]

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, *, deterministic: bool = True,
                 decode: bool = False) -> jax.Array:
        cfg = self.config
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}.")
        batch, length = tokens.shape
        if length > cfg.max_seq_len:
            raise ConfigError(
                f"Sequence length {length} exceeds PanGuConfig.max_seq_len={cfg.max_seq_len} "
                "(rows of the position and top-query tables); shorten the sequences or raise "
                "PanGuConfig.max_seq_len.")
        if positions is None:
            if decode:
                raise ValueError("decode=True needs explicit absolute positions of the chunk.")
            positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        packed = segment_ids is not None or decode
        if segment_ids is None:
            segment_ids = jnp.ones((batch, length), jnp.int32)

        word = _embedding_table(self, "word_embeddings", cfg.vocab_size, cfg, ("vocab", "embed"))
        position = _embedding_table(self, "position_embeddings", cfg.max_seq_len, cfg,
                                    ("position", "embed"))
        h = _lookup(word, tokens, cfg.compute_dtype) + _lookup(position, positions,
                                                                 cfg.compute_dtype)
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        h = layers.constrain(h, (layers.BATCH, layers.LENGTH, layers.EMBED))

        blocks = self._blocks(deterministic, decode, packed)
        if cfg.scan_layers:
            h, _ = blocks(h, segment_ids)
        else:
            for block in blocks:
                h = block(h, segment_ids)

        h = layers.LayerNorm(cfg, name="ln_f")(h)
        if cfg.use_query_layer:
            top_query = _embedding_table(self, "top_query_embeddings", cfg.max_seq_len, cfg,
                                         ("position", "embed"))
            query = _lookup(top_query, positions, cfg.compute_dtype)
            h = layers.DecoderBlock(cfg, deterministic, decode, packed, name="query_layer")(
                h, segment_ids, query)

        if cfg.head_vjp:
            logits = tied_head(h, word.astype(cfg.compute_dtype))
        else:
            logits = jnp.einsum("btd,vd->btv", h, word.astype(cfg.compute_dtype),
                                preferred_element_type=jnp.float32)
        if cfg.used_vocab_size is not None and cfg.used_vocab_size < cfg.vocab_size:
            used = jnp.arange(cfg.vocab_size) < cfg.used_vocab_size
            logits = jnp.where(used, logits, jnp.finfo(jnp.float32).min)
        return layers.constrain(logits, (layers.BATCH, layers.LENGTH, layers.VOCAB))
