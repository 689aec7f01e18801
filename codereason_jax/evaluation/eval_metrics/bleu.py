"""MBPP BLEU: the paper's number (quirks included), a proper corpus BLEU and sacreBLEU.

Two MBPP BLEU numbers are kept on purpose (docs/evaluation.md, "Why two BLEU numbers"):

* `paper_bleu` copies the paper's notebook (`dureader_mbpp_score.ipynb`), quirks included, so our
  numbers can be set beside Tables 2-6;
* `corpus_bleu` is the same smoothed BLEU-4 with one segment per example, which is what the
  notebook meant to compute; `sacrebleu_corpus` is the standard comparison.

All values are on the 0-100 scale except `BleuStats.bleu`, a fraction.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Tokenizer = Callable[[str], Sequence[str]]


@dataclasses.dataclass(frozen=True)
class BleuStats:
    """What Google NMT's `compute_bleu` returns; `bleu` is a fraction (not x100)."""

    bleu: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    ratio: float
    hypothesis_length: int
    reference_length: int


def _ngram_counts(tokens: Sequence[str], max_order: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for order in range(1, max_order + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start:start + order])] += 1
    return counts


def bleu_stats(reference_corpus: Sequence[Sequence[Sequence[str]]],
               hypothesis_corpus: Sequence[Sequence[str]],
               max_order: int = 4, smooth: bool = True) -> BleuStats:
    """Corpus BLEU as Google NMT / CodeXGLUE `compute_bleu` defines it (our code, same formula).

    `reference_corpus[i]` holds the references (token lists) of hypothesis i. Over the corpus:

    * matches[o]  = sum_i sum_{o-gram g} min(count_hyp_i(g), max_ref count_ref(g))  (clipping)
    * possible[o] = sum_i max(0, len(hyp_i) - o + 1)
    * smooth:   p_o = (matches[o] + 1) / (possible[o] + 1) for EVERY order, unigrams included
      (so an order with no possible n-gram gets p_o = 1);  not smooth: matches / possible, 0 if
      possible is 0.
    * geo_mean = exp(sum_o log(p_o) / max_order), or 0 if any p_o is 0.
    * c = sum len(hyp_i); r = sum of the SHORTEST reference length per example (not the closest).
    * ratio = c / r; BP = 1 if ratio > 1 else exp(1 - 1/ratio)  (= exp(1 - r/c) for c <= r).

    The original raises ZeroDivisionError when c or r is 0; we return BLEU 0 for c = 0 and BP 1
    for r = 0 < c, and raise ValueError for an empty corpus or an example with no references.
    """
    if len(reference_corpus) != len(hypothesis_corpus):
        raise ValueError(f"{len(reference_corpus)} reference sets for "
                         f"{len(hypothesis_corpus)} hypotheses")
    if not hypothesis_corpus:
        raise ValueError("empty corpus: nothing to score")
    totals = example_bleu_counts(reference_corpus, hypothesis_corpus, max_order).sum(axis=0)
    return bleu_from_counts(totals, max_order, smooth)


def example_bleu_counts(reference_corpus: Sequence[Sequence[Sequence[str]]],
                        hypothesis_corpus: Sequence[Sequence[str]],
                        max_order: int = 4) -> np.ndarray:
    """Per-example sufficient statistics of corpus BLEU, [n, 2 * max_order + 2] int64:
    clipped matches per order, possible n-grams per order, hypothesis length, shortest reference
    length. Corpus BLEU is a function of their column sums, so resampling rows resamples the
    corpus (bootstrap intervals and paired comparisons without re-counting n-grams)."""
    counts = np.zeros((len(hypothesis_corpus), 2 * max_order + 2), np.int64)
    for i, (references, hypothesis) in enumerate(zip(reference_corpus, hypothesis_corpus)):
        if not references:
            raise ValueError("every hypothesis needs at least one reference")
        max_ref_counts: collections.Counter = collections.Counter()
        for reference in references:
            max_ref_counts |= _ngram_counts(reference, max_order)
        clipped = _ngram_counts(hypothesis, max_order) & max_ref_counts
        for ngram, count in clipped.items():
            counts[i, len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            counts[i, max_order + order - 1] = max(0, len(hypothesis) - order + 1)
        counts[i, 2 * max_order] = len(hypothesis)
        counts[i, 2 * max_order + 1] = min(len(reference) for reference in references)
    return counts


def bleu_from_counts(totals: Sequence[int] | np.ndarray, max_order: int = 4,
                     smooth: bool = True) -> BleuStats:
    """BLEU from the column sums of ``example_bleu_counts``."""
    totals = [int(x) for x in totals]
    matches, possible = totals[:max_order], totals[max_order:2 * max_order]
    hypothesis_length, reference_length = totals[2 * max_order], totals[2 * max_order + 1]
    if smooth:
        precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    else:
        precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    if min(precisions) > 0:
        geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)
    else:
        geo_mean = 0.0

    if hypothesis_length == 0:
        ratio, brevity_penalty = 0.0, 0.0
    elif reference_length == 0:
        ratio, brevity_penalty = math.inf, 1.0
    else:
        ratio = hypothesis_length / reference_length
        brevity_penalty = 1.0 if ratio > 1.0 else math.exp(1.0 - 1.0 / ratio)
    return BleuStats(bleu=geo_mean * brevity_penalty, precisions=tuple(precisions),
                     brevity_penalty=brevity_penalty, ratio=ratio,
                     hypothesis_length=hypothesis_length, reference_length=reference_length)


def smoothed_bleu4(references: Sequence[Sequence[str]],
                   hypotheses: Sequence[Sequence[str]]) -> float:
    """Smoothed BLEU-4 x 100 (CodeXGLUE `compute_bleu(max_order=4, smooth=True)`), unrounded.

    One reference token list per hypothesis token list; each pair is one segment.
    """
    return 100.0 * bleu_stats([[reference] for reference in references], hypotheses).bleu


def _text_file_lines(text: str) -> list[str]:
    """The lines `readlines()` gives back for `text` written to a text file and read again."""
    return io.StringIO(text, newline=None).readlines()  # universal newlines: \n, \r, \r\n


def paper_bleu(references: Sequence[str], predictions: Sequence[Any],
               tokenize: Tokenizer) -> float:
    """The MBPP BLEU of the paper's notebook, quirk included, rounded to 2 decimals.

    Step by step, as `dureader_mbpp_score.ipynb` does it:

    1. A prediction that is not a string (its `.strip()` raises) is skipped together with its
       reference: it leaves the score rather than counting as 0.
    2. `ans_i = " ".join(tokenize(reference_i))` (reference NOT stripped) and
       `pre_i = " ".join(tokenize(prediction_i.strip()))`.
    3. Quirk: both lists go through `writelines` with no newline, so the files hold
       `ans_1 + ans_2 + ...` and `pre_1 + pre_2 + ...`: the last token of one example and the
       first token of the next become ONE token (`"... x" + "y ..."` gives `"xy"`), and n-gram
       clipping runs across all examples.
    4. The files are read back with `readlines()`, zipped line by line (the shorter file wins),
       and each line is `.strip().split()`. With tokenizers that never emit a raw newline (the
       ChatGLM tokenizer writes "<n>"), each file is a single line, so the corpus is ONE segment
       pair; we copy the line handling exactly anyway.
    5. `compute_bleu(max_order=4, smooth=True)` on those segments, x100, `round(_, 2)`.

    Raises ValueError when nothing is left to score (the notebook divides by zero there).
    """
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references for {len(predictions)} predictions")
    reference_file: list[str] = []
    prediction_file: list[str] = []
    for reference, prediction in zip(references, predictions):
        if not isinstance(prediction, str):
            continue
        reference_file.append(" ".join(tokenize(reference)))
        prediction_file.append(" ".join(tokenize(prediction.strip())))
    segments = list(zip(_text_file_lines("".join(reference_file)),
                        _text_file_lines("".join(prediction_file))))
    stats = bleu_stats([[ref_line.strip().split()] for ref_line, _ in segments],
                       [pred_line.strip().split() for _, pred_line in segments])
    return round(100.0 * stats.bleu, 2)


def corpus_bleu(references: Sequence[str], predictions: Sequence[Any],
                tokenize: Tokenizer) -> float:
    """Proper corpus BLEU: the same smoothed BLEU-4, one segment per example, unrounded x100.

    Preprocessing matches `paper_bleu` (reference as is, prediction stripped) so the two differ
    only in segmentation; a non-string prediction counts as an empty one instead of being dropped.
    """
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references for {len(predictions)} predictions")
    return smoothed_bleu4(
        [list(tokenize(reference)) for reference in references],
        [list(tokenize(p.strip() if isinstance(p, str) else "")) for p in predictions])


def sacrebleu_corpus(references: Sequence[str], predictions: Sequence[Any],
                     tokenize: Tokenizer | None = None) -> float:
    """Standard corpus BLEU (x100) for comparison with the literature, computed by T5's
    ``t5.evaluation.metrics.bleu`` (sacreBLEU underneath).

    Default: raw strings with the usual published signature (13a tokenizer, 'exp' smoothing).
    With `tokenize` given, both sides are pre-tokenized, joined with spaces and scored without
    further tokenization, which isolates the effect of smoothing and segmentation against
    `corpus_bleu` on the same tokens. Non-string predictions count as "".
    """
    import gin

    with gin.unlock_config():  # importing t5 registers its gin configurables
        from t5.evaluation import metrics as t5_metrics  # here: only this comparison needs it

    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references for {len(predictions)} predictions")
    hyps = [p.strip() if isinstance(p, str) else "" for p in predictions]
    refs = list(references)
    if not refs:
        return 0.0
    if tokenize is None:
        return float(t5_metrics.bleu(refs, hyps, tokenizer="13a")["bleu"])
    hyps = [" ".join(tokenize(h)) for h in hyps]
    refs = [" ".join(tokenize(r)) for r in refs]
    return float(t5_metrics.bleu(refs, hyps, tokenizer="none")["bleu"])
