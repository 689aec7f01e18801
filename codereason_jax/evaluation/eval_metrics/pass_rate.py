"""Unbiased pass@k of executed samples (fractions in [0, 1])."""

from __future__ import annotations

from collections.abc import Iterable


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:  # every k-subset holds a passing sample
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def mean_pass_at_k(results: Iterable[tuple[int, int]], k: int) -> float:
    """Mean of `pass_at_k` over problems given as (n samples, c correct); a fraction in [0, 1]."""
    scores = [pass_at_k(n, c, k) for n, c in results]
    if not scores:
        raise ValueError("no problems to average")
    return sum(scores) / len(scores)
