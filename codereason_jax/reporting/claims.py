"""The paper's three claims, each marked reproduced, contradicted or not resolved from paired
comparisons: the question a reproduction answers is the direction, and noise must not decide it.

A claim is **reproduced** when at least one of its comparisons is significant in the paper's
direction and none against; **contradicted** when at least one is significant against and none
for; otherwise (nothing significant, or both directions) **not resolved** at this scale.
"""

from __future__ import annotations

from typing import Any, Sequence

from codereason_jax.reporting import numbers, significance

REPRODUCED, CONTRADICTED, NOT_RESOLVED = "reproduced", "contradicted", "not resolved"

# Tasks the paper calls code-related (†), ours and their embedded stand-ins.
CODE_TASKS = frozenset({"eval_cosqa", "eval_mbpp", "eval_embedded_codeqa",
                        "eval_embedded_codegen", "eval_embedded_codecomplete"})

# (claim, [(A, B): the paper says B beats A], tasks: "all" or "code"). Held-out loss is not a
# reasoning task: it is shown in the comparisons, never counted for a claim.
CLAIMS: tuple[tuple[str, tuple[tuple[str, str], ...], str], ...] = (
    ("Code in pre-training helps reasoning (Table 2: CODE beats NL)",
     (("NL", "CODE"),), "all"),
    ("Code in instruction tuning helps code-related tasks (Table 3: NC beats NN; CC beats CN, "
     "the cell the paper skipped)", (("NN", "NC"), ("CN", "CC")), "code"),
    ("Stepwise Decrease is the best mixing strategy (Table 6)",
     (("Uniform", "Stepwise Dec."), ("Stepwise Inc.", "Stepwise Dec.")), "all"),
)


def _counts(comparison: dict[str, Any], scope: str) -> bool:
    if numbers.family(comparison["metric"]) == "loss":
        return False
    return scope == "all" or comparison["task"] in CODE_TASKS


def claim_comparisons(runs: dict[str, dict[str, Any]], resamples: int = 1000
                      ) -> list[dict[str, Any]]:
    """Paired comparisons for every claim pair whose two labels are among ``runs`` (label ->
    results), on every task both hold."""
    out = []
    for _, pairs, _ in CLAIMS:
        for a, b in pairs:
            if a not in runs or b not in runs:
                continue
            for task, result_a in runs[a]["tasks"].items():
                result_b = runs[b]["tasks"].get(task)
                d = None if result_b is None else significance.paired(result_a, result_b,
                                                                      resamples)
                if d is not None:
                    kind = result_a["kind"]
                    out.append({"a": a, "b": b, "task": task, "metric": {
                        "multiple_choice": "accuracy", "generation": "BLEU",
                        "language_modelling": "loss"}.get(kind, kind), **d})
    return out


def claim_marks(comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim's mark from comparisons carrying a, b, task, metric and sign (+1: B
    significantly better, -1: A, 0: within noise)."""
    out = []
    for claim, pairs, scope in CLAIMS:
        evidence = [c for c in comparisons if (c["a"], c["b"]) in pairs and _counts(c, scope)]
        support = [f"{c['b']} > {c['a']} on {c['task']}" for c in evidence if c["sign"] > 0]
        against = [f"{c['a']} > {c['b']} on {c['task']}" for c in evidence if c["sign"] < 0]
        if support and not against:
            mark = REPRODUCED
        elif against and not support:
            mark = CONTRADICTED
        else:
            mark = NOT_RESOLVED
        if not evidence:
            why = "no comparison of these models in the results"
        elif not support and not against:
            why = f"all {len(evidence)} comparisons within noise"
        else:
            why = "; ".join(["for: " + ", ".join(support)] * bool(support)
                            + ["against: " + ", ".join(against)] * bool(against))
            why += f" ({len(evidence) - len(support) - len(against)} within noise)"
        out.append({"claim": claim, "mark": mark, "evidence": why,
                    "comparisons": len(evidence)})
    return out
