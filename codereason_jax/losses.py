"""Token-level cross-entropy on float32 logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, targets: jax.Array,
                  weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Return (sum of weighted per-token losses, sum of weights).

    Callers divide the two; returning both lets gradient accumulation and multi-host reductions
    weight every token equally, whatever the microbatch.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    if weights is None:
        weights = jnp.ones_like(nll)
    weights = weights.astype(jnp.float32)
    return jnp.sum(nll * weights), jnp.sum(weights)
