"""Document structure of packed rows: segment ids and per-document positions.

SeqIO's packing emits ``*_segment_ids`` and ``*_positions`` directly; this derives the same two
arrays from end-of-document tokens, as the paper's ``eod_reset`` data did. The EOD token belongs
to the document it ends; the next token starts a new document at position 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segments_from_eod(tokens: jax.Array, eod_id: int,
                      pad_id: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Return (segment_ids, positions), both int32 [batch, length].

    Segment ids count documents from 1 within each row; pad tokens (if ``pad_id`` is given)
    get segment 0, so they attend only to each other and never to a real document.
    """
    tokens = jnp.asarray(tokens)
    is_eod = tokens == eod_id
    starts_doc = jnp.pad(is_eod[:, :-1], ((0, 0), (1, 0)))  # previous token was an EOD
    segment_ids = 1 + jnp.cumsum(starts_doc, axis=1, dtype=jnp.int32)
    index = jnp.arange(tokens.shape[1], dtype=jnp.int32)
    doc_start = jax.lax.cummax(jnp.where(starts_doc, index, 0), axis=1)
    positions = index - doc_start
    if pad_id is not None:
        segment_ids = jnp.where(tokens == pad_id, 0, segment_ids)
    return segment_ids, positions
