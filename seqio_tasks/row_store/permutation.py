"""A keyed pseudo-random permutation of [0, n), evaluated one index at a time.

The row store's per-epoch shuffle must be a pure function of (key, index): a run resumed at
step s, or a host that reads only its own rows, computes where row k of an epoch lives without
visiting rows 0..k-1 (a buffered shuffle cannot do that). A balanced Feistel network is a
bijection on [0, 2^(2h)); walking the cycle until the value falls below n makes it a bijection
on [0, n) (Black & Rogaway's cycle walking). The domain is at most 4n, so a walk takes fewer
than four rounds on average. Integer arithmetic only: the same permutation on every machine.
"""

from __future__ import annotations

import hashlib

import numpy as np

ROUNDS = 6
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def permutation_key(*parts: object) -> int:
    """A 64-bit key from any labels (seed, task, epoch): the same on every host."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a fast bijective scrambling of 64-bit words."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _feistel(values: np.ndarray, half_bits: int, round_keys: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << half_bits) - 1)
    left, right = values >> np.uint64(half_bits), values & mask
    for round_key in round_keys:
        left, right = right, left ^ (_mix(right ^ round_key) & mask)
    return (left << np.uint64(half_bits)) | right


def permute(indices: np.ndarray | int, n: int, key: int) -> np.ndarray:
    """Where each of ``indices`` (in [0, n)) goes under the permutation of [0, n) named by
    ``key``; vectorised, O(len(indices)) whatever n is."""
    if n <= 0:
        raise ValueError(f"A permutation of [0, {n}) is empty.")
    values = np.atleast_1d(np.asarray(indices, np.int64))
    if values.size and (values.min() < 0 or values.max() >= n):
        raise IndexError(f"indices must lie in [0, {n}).")
    if n == 1:
        return np.zeros(values.shape, np.int64)
    bits = max(2, int(n - 1).bit_length())
    half_bits = (bits + 1) // 2
    with np.errstate(over="ignore"):
        base = np.uint64(key & 0xFFFFFFFFFFFFFFFF)
        round_keys = _mix(base + _GOLDEN * np.arange(1, ROUNDS + 1, dtype=np.uint64))
        out = values.astype(np.uint64)
        pending = np.ones(out.shape, bool)
        while pending.any():
            out[pending] = _feistel(out[pending], half_bits, round_keys)
            pending = out >= np.uint64(n)
    return out.astype(np.int64)
