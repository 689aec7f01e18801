"""Which eval examples share an n-gram with a training corpus (the GPT-3 contamination check)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

Tokenizer = Callable[[str], Sequence[str]]

# Odd multiplier for the polynomial window hash (any odd constant is invertible mod 2**64).
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)


@functools.lru_cache(maxsize=1 << 18)
def _token_digest(token: str) -> bytes:
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _token_hashes(tokens: Sequence[str]) -> np.ndarray:
    """A 64-bit blake2b hash per token: fixed across processes, unlike the salted `hash()`."""
    return np.frombuffer(b"".join(_token_digest(token) for token in tokens), dtype="<u8")


def _window_hashes(token_hashes: np.ndarray, length: int) -> np.ndarray:
    """sum_j t[i+j] * BASE**(length-1-j) mod 2**64 for every window i (uint64 arithmetic wraps)."""
    count = token_hashes.size - length + 1
    if length < 1 or count < 1:
        return np.empty(0, dtype=np.uint64)
    hashes = token_hashes[:count].astype(np.uint64)  # a copy: the buffer is read-only
    for offset in range(1, length):
        hashes *= _HASH_BASE
        hashes += token_hashes[offset:offset + count]
    return hashes


def ngram_overlap(eval_texts: Iterable[str], corpus_texts: Iterable[str], n: int = 13,
                  tokenize: Tokenizer = str.split) -> dict[str, Any]:
    """Which eval examples share an n-gram of tokens with the corpus (13 = the GPT-3 check).

    An example of k < n tokens (k >= 1) counts as one k-gram: it is contaminated when its whole
    token sequence occurs in one corpus text. An example with no tokens is never contaminated.
    N-grams never span two corpus texts.

    Memory: eval n-grams are hashed (blake2b per token, then a polynomial hash per window; 64 bits,
    deterministic across processes) into a sorted uint64 array, and the corpus is streamed once
    against it, so only the eval side is held (8 bytes per distinct eval n-gram); the answer is the
    same as indexing the corpus, up to 64-bit hash collisions.

    Returns n, num_examples, num_contaminated, fraction (contaminated / examples) and per-example
    lists: contaminated (bool), overlap (fraction of the example's n-grams seen) and short
    (fewer than n tokens).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    example_hashes: list[np.ndarray] = []
    window_lengths: list[int] = []
    for text in eval_texts:
        token_hashes = _token_hashes(tokenize(text))
        length = min(n, token_hashes.size)
        window_lengths.append(length)
        example_hashes.append(_window_hashes(token_hashes, length))
    if not example_hashes:
        raise ValueError("no eval examples")

    # One sorted key array (and a "seen" flag per key) for each window length in use.
    index: dict[int, np.ndarray] = {}
    for length in set(window_lengths) - {0}:
        index[length] = np.unique(np.concatenate(
            [h for h, k in zip(example_hashes, window_lengths) if k == length]))
    seen = {length: np.zeros(keys.size, dtype=bool) for length, keys in index.items()}

    for text in corpus_texts:
        token_hashes = _token_hashes(tokenize(text))
        for length, keys in index.items():
            hashes = _window_hashes(token_hashes, length)
            if hashes.size == 0:
                continue
            positions = np.minimum(np.searchsorted(keys, hashes), keys.size - 1)
            hits = keys[positions] == hashes
            seen[length][positions[hits]] = True

    contaminated: list[bool] = []
    overlap: list[float] = []
    for hashes, length in zip(example_hashes, window_lengths):
        if length == 0:
            contaminated.append(False)
            overlap.append(0.0)
            continue
        flags = seen[length][np.searchsorted(index[length], hashes)]
        contaminated.append(bool(flags.any()))
        overlap.append(float(flags.mean()))
    num_contaminated = sum(contaminated)
    return {
        "n": n,
        "num_examples": len(contaminated),
        "num_contaminated": num_contaminated,
        "fraction": num_contaminated / len(contaminated),
        "contaminated": contaminated,
        "overlap": overlap,
        "short": [length < n for length in window_lengths],
    }
