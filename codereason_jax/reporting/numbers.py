"""Fixed decimals per metric, never scientific notation: a reader compares columns by eye, and
``6.11e-12`` BLEU reads as a number when it means zero."""

from __future__ import annotations

import math

# Accuracy and pass@k in %, BLEU on 0-100, loss in nats per token.
DECIMALS = {"accuracy": 1, "pass@1": 1, "bleu": 2, "loss": 3}
UNITS = {"accuracy": "accuracy (%)", "pass@1": "pass@1 (%)", "bleu": "BLEU (0–100)",
         "loss": "loss (nats/token, lower is better)"}


def family(metric: str) -> str:
    """'bleu_corpus', 'bleu_paper', 'BLEU' -> 'bleu'; 'ACC' -> 'accuracy'; 'loss (...)' -> 'loss'."""
    name = metric.lower()
    if name.startswith("bleu"):
        return "bleu"
    if name.startswith("acc"):
        return "accuracy"
    if name.startswith("loss"):
        return "loss"
    if name.startswith("pass@"):
        return "pass@1"
    return name


def decimals(metric: str) -> int:
    return DECIMALS.get(family(metric), 2)


def unit(metric: str) -> str:
    return UNITS.get(family(metric), metric)


def fmt(value: float | None, metric: str, signed: bool = False) -> str:
    """``value`` with the metric's decimals in plain positional notation ('–' when None)."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "n/a"
    digits = decimals(metric)
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    # -0.00 after rounding reads as a loss; it is a zero.
    if float(text) == 0.0:
        text = ("+" if signed else "") + f"{0.0:.{digits}f}"
    return text


def fmt_ci(ci: list[float] | tuple[float, float] | None, metric: str, signed: bool = False
           ) -> str:
    """'[low, high]' with the metric's decimals, or '' without an interval."""
    if not ci or ci[0] is None:
        return ""
    return f"[{fmt(ci[0], metric, signed)}, {fmt(ci[1], metric, signed)}]"
