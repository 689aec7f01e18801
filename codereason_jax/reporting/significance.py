"""Paired bootstrap differences between two runs on the same examples: the one test behind
every bold number, panel mark and claim, so that a 'best' is only shown where it is real."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from codereason_jax.evaluation.eval_metrics.bleu import bleu_from_counts
from codereason_jax.evaluation.eval_metrics.bootstrap import paired_bootstrap_difference

# The smallest difference that counts (accuracy points, BLEU points, nats per token): corpus
# BLEU of near-empty outputs differs by 1e-100 with a tight interval, meaning nothing.
MIN_DIFFERENCE = {"multiple_choice": 0.0, "generation": 0.01, "execution": 0.0,
                  "language_modelling": 0.001}


def example_rows(task_result: dict[str, Any]
                 ) -> tuple[np.ndarray, Callable[[np.ndarray], float], bool, str] | None:
    """Per-example additive statistics, the statistic on their sums, higher-is-better and the
    kind; None when the results keep no per-example data."""
    kind, examples = task_result.get("kind"), task_result.get("examples")
    if not examples:
        return None
    if kind == "multiple_choice":
        rows = np.array([[float(e["prediction"] in e["labels"]), 1.0] for e in examples])
        return rows, lambda t: 100 * t[0] / t[1], True, kind
    if kind == "language_modelling":
        rows = np.array([[e["nll_sum"], e["tokens"]] for e in examples])
        return rows, lambda t: t[0] / t[1], False, kind
    if kind == "generation" and all(e.get("execution") for e in examples):
        rows = np.array([[float(e["execution"][0] == "passed"), 1.0] for e in examples])
        return rows, lambda t: 100 * t[0] / t[1], True, "execution"
    if kind == "generation":
        rows = np.array([e["bleu_counts"] for e in examples], np.float64)
        return rows, lambda t: 100 * bleu_from_counts(t).bleu, True, kind
    return None


def _same_examples(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ea, eb = a.get("examples") or [], b.get("examples") or []
    if len(ea) != len(eb) or a.get("kind") != b.get("kind"):
        return False
    ids_a = [e.get("example_id") for e in ea]
    return ids_a == [e.get("example_id") for e in eb]


def paired(result_a: dict[str, Any], result_b: dict[str, Any], resamples: int = 1000
           ) -> dict[str, Any] | None:
    """B's improvement over A (> 0: B better; for loss, lower) with its paired 95% interval and
    ``sign``: +1 B significantly better, -1 A significantly better, 0 within noise. None when
    the two results do not hold the same examples."""
    if not _same_examples(result_a, result_b):
        return None
    a, b = example_rows(result_a), example_rows(result_b)
    if a is None or b is None:
        return None
    rows_a, statistic, higher, kind = a
    sign = 1.0 if higher else -1.0
    d = paired_bootstrap_difference(rows_a, b[0], lambda t: sign * statistic(t),
                                    n_resamples=resamples)
    resolution = MIN_DIFFERENCE[kind]
    verdict = 0
    if d["ci_low"] > 0 and d["difference"] >= resolution:
        verdict = 1
    elif d["ci_high"] < 0 and d["difference"] <= -resolution:
        verdict = -1
    return {"improvement": d["difference"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
            "sign": verdict, "a_value": statistic(rows_a.sum(axis=0)),
            "b_value": statistic(b[0].sum(axis=0)), "higher_is_better": higher}
