"""Batched generation with the KV cache: greedy, or seeded top-k / temperature sampling.

Prompts of different lengths share a batch left-padded (padding has segment id 0, so the text
never attends to it); each row's positions start at 0 at its first real token, which also
indexes the top-query table. The paper sampled with top-k 3 plus frequency and presence
penalties and no seed; the same settings are available here, reproducibly seeded: a prompt's
sample depends on the seed and the prompt's index, not on the batch size.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from codereason_jax.model import PanGuDecoder, decoding


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    method: str = "greedy"  # "greedy" or "sample"
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int = 0
    max_new_tokens: int = 256

    def __post_init__(self):
        if self.method not in ("greedy", "sample"):
            raise ValueError(f"SamplingConfig.method={self.method!r} must be greedy or sample.")
        if self.method == "sample" and self.temperature <= 0:
            raise ValueError(f"SamplingConfig.temperature={self.temperature} must be > 0.")
        if self.top_k < 0 or self.max_new_tokens <= 0:
            raise ValueError("SamplingConfig.top_k must be >= 0 and max_new_tokens > 0.")


# The paper's decoding (its repo defaults): top-k 3, frequency 1.5, presence 0.3, unseeded.
PAPER_SAMPLING = SamplingConfig(method="sample", top_k=3, frequency_penalty=1.5,
                                presence_penalty=0.3, max_new_tokens=500)


def _choose(logits: jax.Array, counts: jax.Array, key: jax.Array, config: SamplingConfig
            ) -> jax.Array:
    logits = logits - config.frequency_penalty * counts - config.presence_penalty * (counts > 0)
    if config.method == "greedy":
        return jnp.argmax(logits, axis=-1)
    logits = logits / config.temperature
    if config.top_k:
        kth = jax.lax.top_k(logits, config.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


def generate(model: PanGuDecoder, params: Any, prompts: Sequence[Sequence[int]], eos_id: int,
             config: SamplingConfig = SamplingConfig(), batch_size: int = 16
             ) -> list[list[int]]:
    """Continuations of ``prompts`` (token ids), each cut after its first EOS (excluded)."""
    outputs: list[list[int]] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generating", unit="batch", disable=None, leave=False):
        outputs += _generate_batch(model, params, prompts[start:start + batch_size], eos_id,
                                   config, start, batch_size)
    return outputs


# Prompt widths are padded up to a multiple of this, and every batch to ``batch_size`` rows, so
# a whole evaluation compiles a handful of shapes instead of one per batch.
WIDTH_BUCKET = 64


def _bucketed_width(width: int, max_new_tokens: int, max_seq_len: int) -> int:
    return min(-(-width // WIDTH_BUCKET) * WIDTH_BUCKET, max_seq_len - max_new_tokens)


def _generate_batch(model, params, prompts, eos_id, config, first_index, batch_size):
    vocab = model.config.vocab_size
    n = len(prompts)
    longest = max(len(p) for p in prompts)
    if longest + config.max_new_tokens > model.config.max_seq_len:
        raise ValueError(
            f"Prompt of {longest} tokens + max_new_tokens={config.max_new_tokens} exceeds the "
            f"model's context of {model.config.max_seq_len}; shorten the prompt or generate "
            "fewer tokens.")
    width = _bucketed_width(longest, config.max_new_tokens, model.config.max_seq_len)
    rows = max(n, batch_size)
    # Filler rows (a batch smaller than batch_size) hold one token and start finished.
    prompts = list(prompts) + [[0]] * (rows - n)
    tokens = np.zeros((rows, width), np.int32)
    segments = np.zeros((rows, width), np.int32)
    positions = np.zeros((rows, width), np.int32)
    for i, prompt in enumerate(prompts):
        pad = width - len(prompt)
        tokens[i, pad:] = prompt
        segments[i, pad:] = 1
        positions[i, pad:] = np.arange(len(prompt))
    cache = decoding.init_cache(model, params, rows, width + config.max_new_tokens)
    logits, cache = _extend(model, params, cache, tokens, positions, segments)
    next_positions = np.array([len(p) for p in prompts], np.int32)
    finished = np.arange(rows) >= n
    # One key per prompt, from the seed and the prompt's index in the whole list: a sample
    # does not depend on the batch size or on which batch the prompt lands in. The seed is
    # traced, not part of the compiled loop's static config, so new seeds do not recompile.
    row_keys = jax.vmap(jax.random.fold_in, (None, 0))(
        jax.random.key(config.seed), jnp.arange(first_index, first_index + rows))
    generated = np.asarray(_decode(model, params, cache, logits[:, -1],
                                   jnp.zeros((rows, vocab), jnp.float32), row_keys,
                                   next_positions, finished, eos_id,
                                   dataclasses.replace(config, seed=0)))
    results = []
    for row in generated[:n]:
        stop = np.flatnonzero(row == eos_id)
        results.append(row[:stop[0]].tolist() if stop.size else row.tolist())
    return results


@functools.partial(jax.jit, static_argnums=0)
def _extend(model, params, cache, tokens, positions, segments):
    return decoding.extend(model, params, cache, tokens, positions, segments)


@functools.partial(jax.jit, static_argnums=(0, 9))
def _decode(model, params, cache, last_logits, counts, row_keys, next_positions, finished,
            eos_id, config):
    """Up to max_new_tokens tokens a row, in one compiled loop that stops once every row has
    produced EOS (a row's tokens after its EOS are discarded by the caller)."""
    rows = last_logits.shape[0]
    generated = jnp.full((rows, config.max_new_tokens), -1, jnp.int32)

    def not_done(carry):
        step, _, _, _, _, finished = carry
        return (step < config.max_new_tokens) & ~jnp.all(finished)

    def body(carry):
        step, cache, last, counts, generated, finished = carry
        keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, step)
        token = jax.vmap(lambda logits, count, key: _choose(logits[None], count[None], key,
                                                            config)[0])(last, counts, keys)
        token = token.astype(jnp.int32)
        counts = counts.at[jnp.arange(rows), token].add(1.0)
        generated = generated.at[:, step].set(token)
        logits, cache = decoding.extend(model, params, cache, token[:, None],
                                        (next_positions + step)[:, None])
        return step + 1, cache, logits[:, -1], counts, generated, finished | (token == eos_id)

    carry = (jnp.int32(0), cache, last_logits, counts, generated, jnp.asarray(finished))
    return jax.lax.while_loop(not_done, body, carry)[4]
