"""Building blocks of the PanGu-α decoder: LayerNorm, projections, attention with a KV cache, FFN.

Every parameter is created with logical axis names (``vocab``, ``embed``, ``mlp``, ``heads``,
``kv``, ``position``) and every large activation is constrained with ``activation_*`` names, so
``codereason_jax.partitioning`` can map both to mesh axes. Parameters and activations use
different names so that FSDP can shard a parameter's ``embed`` dimension while activations keep
theirs whole.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from codereason_jax.model.config import PanGuConfig

# Logical names of the activations (parameters use the bare names).
BATCH, LENGTH, EMBED = "activation_batch", "activation_length", "activation_embed"
HEADS, KV, MLP, VOCAB = "activation_heads", "activation_kv", "activation_mlp", "activation_vocab"

Initializer = Callable[..., jax.Array]


def fast_gelu(x: jax.Array) -> jax.Array:
    """x·σ(1.702x): MindSpore's FastGelu, the activation of the paper's code."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "fast_gelu": fast_gelu,
    "gelu_erf": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


def kernel_std(config: PanGuConfig, output_projection: bool = False) -> float:
    """Standard deviation of a kernel or embedding under the configured init scheme."""
    if config.init_scheme == "paper":
        return 0.01
    return 0.02 / math.sqrt(2 * config.num_layers) if output_projection else 0.02


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh and rules)."""
    return nn.with_logical_constraint(x, tuple(axes))


class LayerNorm(nn.Module):
    """LayerNorm with biased variance, computed in float32 whatever the input dtype."""

    config: PanGuConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        features = x.shape[-1]
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            (features,), cfg.weights_dtype)
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            (features,), cfg.weights_dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + cfg.layer_norm_epsilon)
        y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(cfg.compute_dtype)


class Projection(nn.Module):
    """Affine map contracting the trailing ``len(in_axes)`` dims of x into ``features``.

    The kernel has shape ``x.shape[-n:] + features`` and logical axes ``in_axes + out_axes``;
    the bias has shape ``features``. Matmuls run in the compute dtype.
    """

    config: PanGuConfig
    features: tuple[int, ...]
    in_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    std: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        n_in = len(self.in_axes)
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(self.std),
                                         self.in_axes + self.out_axes),
            x.shape[-n_in:] + self.features, cfg.weights_dtype)
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, self.out_axes),
            self.features, cfg.weights_dtype)
        contract_x = tuple(range(x.ndim - n_in, x.ndim))
        y = jax.lax.dot_general(
            x.astype(cfg.compute_dtype), kernel.astype(cfg.compute_dtype),
            ((contract_x, tuple(range(n_in))), ((), ())))
        return y + bias.astype(cfg.compute_dtype)


def attention_mask(q_index: jax.Array, q_segment_ids: jax.Array, kv_index: jax.Array,
                   kv_segment_ids: jax.Array) -> jax.Array:
    """[batch, 1, q, kv] boolean mask: causal (diagonal included) and within one document."""
    causal = kv_index[None, :] <= q_index[:, None]
    same_doc = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    return (causal[None] & same_doc)[:, None]


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                          dropout: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Softmax attention with float32 scores. q is already scaled by 1/sqrt(head_dim).

    Masked scores are set to the float32 minimum rather than shifted by the paper's additive
    -10000; the two agree unless a row's scores span more than 1e4.
    """
    scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = dropout(jax.nn.softmax(scores, axis=-1))
    return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v)


def _attention_implementation(config: PanGuConfig) -> str:
    """The jax.nn.dot_product_attention implementation for PanGuConfig.attention."""
    if config.attention != "auto":
        return config.attention
    half = config.compute_dtype in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return "cudnn" if jax.default_backend() == "gpu" and half else "xla"


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None,
                    implementation: str) -> jax.Array:
    """Causal attention through jax.nn.dot_product_attention (q already scaled).

    Without segment ids only the causal mask applies (cuDNN's built-in causal mask, no mask
    tensor); with them the document mask is passed too (cuDNN turns it into a bias).
    """
    mask = None
    if segment_ids is not None:
        mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=1.0, is_causal=True,
                                        implementation=implementation)


class Attention(nn.Module):
    """Multi-head attention whose queries and keys/values may come from different inputs.

    With ``decode=True`` keys, values and segment ids are written into a ``cache`` collection
    at ``cache_index`` and the chunk's queries attend to everything cached so far. The first
    decode call (the cache does not exist yet) only creates the cache, sized by the input
    length, and runs as a plain forward pass.
    """

    config: PanGuConfig
    deterministic: bool
    decode: bool = False
    # False: every row is one document (the caller gave no segment ids), so the fused
    # attention paths need the causal mask only.
    packed: bool = True

    @nn.compact
    def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array,
                 segment_ids: jax.Array) -> jax.Array:
        cfg = self.config
        heads = (cfg.num_heads, cfg.head_dim)

        def project(name: str) -> Projection:
            return Projection(cfg, heads, ("embed",), ("heads", "kv"), kernel_std(cfg),
                              name=name)

        scale = jnp.asarray(1.0 / math.sqrt(cfg.head_dim), cfg.compute_dtype)
        q = constrain(project("query")(inputs_q) * scale, (BATCH, LENGTH, HEADS, KV))
        k = constrain(project("key")(inputs_kv), (BATCH, LENGTH, HEADS, KV))
        v = constrain(project("value")(inputs_kv), (BATCH, LENGTH, HEADS, KV))

        length = inputs_q.shape[1]
        q_index = jnp.arange(length)
        kv_index, kv_segment_ids = q_index, segment_ids
        if self.decode:
            k, v, kv_segment_ids, q_index, kv_index = self._update_cache(k, v, segment_ids)

        dropout_active = not self.deterministic and cfg.dropout_rate > 0
        if cfg.attention != "einsum" and not self.decode and not dropout_active:
            out = fused_attention(q, k, v, segment_ids if self.packed else None,
                                  _attention_implementation(cfg))
        else:
            mask = attention_mask(q_index, segment_ids, kv_index, kv_segment_ids)
            dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=())
            out = dot_product_attention(
                q, k, v, mask, lambda p: dropout(p, deterministic=self.deterministic))
        out = constrain(out, (BATCH, LENGTH, HEADS, KV))
        projected = Projection(cfg, (cfg.d_model,), ("heads", "kv"), ("embed",),
                               kernel_std(cfg, output_projection=True), name="output")(out)
        return constrain(projected, (BATCH, LENGTH, EMBED))

    def _update_cache(self, k: jax.Array, v: jax.Array, segment_ids: jax.Array):
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        cached_segments = self.variable("cache", "cached_segment_ids", jnp.zeros,
                                        segment_ids.shape, jnp.int32)
        cache_index = self.variable("cache", "cache_index",
                                    lambda: jnp.zeros((), jnp.int32))
        length = k.shape[1]
        if not initialized:
            index = jnp.arange(length)
            return k, v, segment_ids, index, index
        start = cache_index.value
        max_length = cached_key.value.shape[1]
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k, (0, start, 0, 0))
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v,
                                                          (0, start, 0, 0))
        cached_segments.value = jax.lax.dynamic_update_slice(
            cached_segments.value, segment_ids.astype(jnp.int32), (0, start))
        cache_index.value = start + length
        return (cached_key.value, cached_value.value, cached_segments.value,
                start + jnp.arange(length), jnp.arange(max_length))


class FeedForward(nn.Module):
    """d -> d_ff -> d with biases on both maps and no dropout in between."""

    config: PanGuConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = Projection(cfg, (cfg.d_ff,), ("embed",), ("mlp",), kernel_std(cfg),
                       name="wi")(x)
        h = constrain(ACTIVATION_FNS[cfg.activation](h), (BATCH, LENGTH, MLP))
        out = Projection(cfg, (cfg.d_model,), ("mlp",), ("embed",),
                         kernel_std(cfg, output_projection=True), name="wo")(h)
        return constrain(out, (BATCH, LENGTH, EMBED))


def materialize(x: jax.Array) -> jax.Array:
    """x, computed once: a fusion boundary that survives XLA:CPU (which drops optimization
    barriers before fusing). A conditional on a runtime predicate cannot be fused into or
    simplified away, and its transpose is again a conditional, so the gradient is cut too.
    On a sharded batch the predicate's one element is broadcast from its device per block."""
    predicate = x.reshape(-1)[0] > 0  # any runtime value: both branches are the identity
    return jax.lax.cond(predicate, lambda y: y, lambda y: y * 1, x)


class DecoderBlock(nn.Module):
    """Pre-LN transformer block; with ``query_inputs`` it is PanGu-α's query layer.

    Ordinary block: u = h + drop(Attn(LN1(h))); h' = u + drop(FFN(LN2(u))).
    Query layer: the attention's queries come from ``query_inputs`` (the raw top-query
    embedding, no LayerNorm) while keys/values are LN1(h) and the residual stream is h.
    """

    config: PanGuConfig
    deterministic: bool
    decode: bool = False
    packed: bool = True

    @nn.compact
    def __call__(self, h: jax.Array, segment_ids: jax.Array,
                 query_inputs: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        drop = nn.Dropout(cfg.dropout_rate)
        x = LayerNorm(cfg, name="ln_1")(h)
        q_in = x if query_inputs is None else query_inputs.astype(cfg.compute_dtype)
        a = Attention(cfg, self.deterministic, self.decode, self.packed, name="attention")(
            q_in, x, segment_ids)
        h = h + drop(a, deterministic=self.deterministic)
        m = FeedForward(cfg, name="mlp")(LayerNorm(cfg, name="ln_2")(h))
        h = h + drop(m, deterministic=self.deterministic)
        if cfg.block_barrier:
            h = materialize(h)
        return constrain(h, (BATCH, LENGTH, EMBED))


class ScannedBlock(DecoderBlock):
    """DecoderBlock with the (carry, x) -> (carry, y) signature nn.scan needs."""

    @nn.compact
    def __call__(self, h: jax.Array, segment_ids: jax.Array):  # type: ignore[override]
        return super().__call__(h, segment_ids), None
