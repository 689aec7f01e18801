"""Percentile bootstrap intervals of a mean or of a statistic of sums, and paired differences.

Every function is deterministic for a seed (numpy PCG64 via `default_rng(seed)`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Bounds one (resamples x n) index block, so large n does not need n_resamples * n ints at once.
_BOOTSTRAP_BLOCK_ELEMENTS = 1 << 22


def bootstrap_ci(values: Sequence[float], n_resamples: int = 10000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of the mean.

    Resamples with replacement; the same (values, n_resamples, seed) always give the same
    interval (numpy PCG64 via `default_rng(seed)`; drawing in blocks does not change the stream).
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("no values to bootstrap")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    size = data.size
    rows_per_block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // size)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, rows_per_block):
        stop = min(start + rows_per_block, n_resamples)
        means[start:stop] = data[rng.integers(0, size, size=(stop - start, size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(data.mean()), float(low), float(high)


def accuracy_with_ci(correct: Sequence[bool], n_resamples: int = 10000,
                     confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy (a fraction) with its percentile bootstrap interval, see `bootstrap_ci`."""
    return bootstrap_ci(np.asarray(correct, dtype=np.float64), n_resamples, confidence, seed)


def bootstrap_statistic_ci(rows: np.ndarray, statistic: Callable[[np.ndarray], float],
                           n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
                           ) -> tuple[float, float, float]:
    """(value, low, high): percentile bootstrap of ``statistic(column sums of rows)``.

    ``rows`` holds one row of additive statistics per example (e.g. ``example_bleu_counts``, or
    [nll_sum, tokens] per document); examples are resampled with replacement. Deterministic
    for a seed.
    """
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError("need a non-empty [examples, statistics] array")
    rng = np.random.default_rng(seed)
    n = rows.shape[0]
    values = np.empty(n_resamples)
    for k in range(n_resamples):
        values[k] = statistic(rows[rng.integers(0, n, n)].sum(axis=0))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(statistic(rows.sum(axis=0))), float(low), float(high)


def paired_bootstrap_difference(rows_a: np.ndarray, rows_b: np.ndarray,
                                statistic: Callable[[np.ndarray], float],
                                n_resamples: int = 1000, confidence: float = 0.95,
                                seed: int = 0) -> dict[str, float]:
    """statistic(B) - statistic(A) on the same examples, with a paired percentile interval.

    Both systems are resampled with the same example indices, so example difficulty cancels.
    ``p_not_positive`` is the share of resamples where B does not beat A (a one-sided bootstrap
    p-value for "B > A").
    """
    rows_a, rows_b = np.asarray(rows_a, np.float64), np.asarray(rows_b, np.float64)
    if rows_a.shape != rows_b.shape or rows_a.ndim != 2 or rows_a.shape[0] == 0:
        raise ValueError(f"paired rows must have one equal, non-empty shape; got {rows_a.shape} "
                         f"and {rows_b.shape}")
    rng = np.random.default_rng(seed)
    n = rows_a.shape[0]
    diffs = np.empty(n_resamples)
    for k in range(n_resamples):
        index = rng.integers(0, n, n)
        diffs[k] = statistic(rows_b[index].sum(axis=0)) - statistic(rows_a[index].sum(axis=0))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return {"difference": float(statistic(rows_b.sum(axis=0)) - statistic(rows_a.sum(axis=0))),
            "ci_low": float(low), "ci_high": float(high),
            "p_not_positive": float(np.mean(diffs <= 0))}
