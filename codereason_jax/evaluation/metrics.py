"""Scores for generated text and code: BLEU (paper-faithful and proper), pass@k, DuReader EM/F1,
bootstrap confidence intervals and an n-gram contamination check.

Two MBPP BLEU numbers are kept on purpose (evaluation.md §7, §12.3; paper.md §6.2):

* `paper_bleu` copies the paper's notebook (`dureader_mbpp_score.ipynb`), quirks included, so our
  numbers can be set beside Tables 2-6;
* `corpus_bleu` is the same smoothed BLEU-4 with one segment per example, which is what the
  notebook meant to compute; `sacrebleu_corpus` is the standard comparison.

The DuReader metric copies the notebook's DuReader-robust scorer (not the CMRC2018 one, which splits
English with nltk): see `dureader_tokenize`. All BLEU values are on the 0-100 scale; pass@k and
bootstrap values are fractions in [0, 1].
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import io
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

Tokenizer = Callable[[str], Sequence[str]]

# ------------------------------------------------------------------------------------- BLEU


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
    """Standard sacreBLEU corpus score (x100) for comparison with the literature.

    Default: raw strings with sacreBLEU's own defaults (13a tokenizer, 'exp' smoothing), the
    usual published signature. With `tokenize` given, both sides are pre-tokenized, joined with
    spaces and scored with `tokenize="none"`, which isolates the effect of smoothing and
    segmentation against `corpus_bleu` on the same tokens. Non-string predictions count as "".
    """
    import sacrebleu  # imported here: only this comparison needs it

    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references for {len(predictions)} predictions")
    hyps = [p.strip() if isinstance(p, str) else "" for p in predictions]
    refs = list(references)
    if tokenize is None:
        return float(sacrebleu.corpus_bleu(hyps, [refs]).score)
    hyps = [" ".join(tokenize(h)) for h in hyps]
    refs = [" ".join(tokenize(r)) for r in refs]
    return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score)


# ------------------------------------------------------------------------------------ pass@k


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


# -------------------------------------------------------------------------------- DuReader

# The punctuation DuReader-robust's `_normalize` drops, copied as a fact. Quirks kept: "……" is two
# characters and so never matches a single character; ASCII . ? ! ; ' " and "-" are NOT dropped.
DUREADER_PUNCTUATION = frozenset([
    ":", "_", "`", "，", "。", "：", "？", "！", "(", ")",
    "“", "”", "；", "’", "《", "》", "……", "·", "、", ",",
    "「", "」", "（", "）", "－", "～", "『", "』", "|",
])

# BERT's "Chinese character" code-point blocks, as DuReader-robust's `_is_chinese_char` uses them.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def dureader_normalize(text: str) -> str:
    """Lower-case and drop `DUREADER_PUNCTUATION`; no stripping (only predictions are stripped)."""
    return "".join(char for char in text.lower() if char not in DUREADER_PUNCTUATION)


def dureader_tokenize(text: str) -> list[str]:
    """DuReader-robust segmentation: each CJK character and each "=" is a token, and every run of
    other characters between them is ONE token, spaces included ("new york" is one token)."""
    tokens: list[str] = []
    run = ""
    for char in text:
        if _is_cjk(char) or char == "=":
            if run:
                tokens.append(run)
                run = ""
            tokens.append(char)
        else:
            run += char
    if run:
        tokens.append(run)
    return tokens


def longest_common_substring_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of tokens shared by a and b (not a subsequence)."""
    best = 0
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0] * (len(b) + 1)
        for j, token_b in enumerate(b):
            if token_a == token_b:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def dureader_scores(prediction: Any, references: str | Sequence[str],
                    truncate_to: int | None = None) -> tuple[int, float]:
    """(EM, F1) of one prediction, each a max over references, as fractions.

    The prediction is stripped, then cut to its first `truncate_to` characters (the notebook's
    `flag=True` uses 20). F1 = 2PR/(P+R) with P = lcs/len(pred tokens), R = lcs/len(ref tokens),
    lcs the longest common SUBSTRING of `dureader_tokenize(dureader_normalize(.))`; 0 when lcs = 0.
    EM compares the normalized strings. A non-string prediction scores (0, 0.0). A bare string
    `references` is one reference (the notebook would have iterated its characters).
    """
    if isinstance(references, str):
        references = [references]
    if not references:
        raise ValueError("every prediction needs at least one reference")
    if not isinstance(prediction, str):
        return 0, 0.0
    prediction = prediction.strip()
    if truncate_to is not None:
        prediction = prediction[:truncate_to]
    normalized_prediction = dureader_normalize(prediction)
    prediction_tokens = dureader_tokenize(normalized_prediction)
    exact, f1 = 0, 0.0
    for reference in references:
        normalized_reference = dureader_normalize(reference)
        if normalized_reference == normalized_prediction:
            exact = 1
        reference_tokens = dureader_tokenize(normalized_reference)
        lcs = longest_common_substring_length(reference_tokens, prediction_tokens)
        if lcs:
            precision = lcs / len(prediction_tokens)
            recall = lcs / len(reference_tokens)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return exact, f1


def dureader_em_f1(predictions: Sequence[Any], references_list: Sequence[str | Sequence[str]],
                   truncate_to: int | None = None) -> dict[str, float]:
    """Corpus DuReader-robust {"em", "f1"}: per-example means x 100, as the paper's notebook.

    Non-string predictions stay in the denominator with 0 (the notebook skips them but still
    counts them). Use `dureader_scores` for per-example values (e.g. for `bootstrap_ci`).
    """
    if len(predictions) != len(references_list):
        raise ValueError(f"{len(predictions)} predictions for {len(references_list)} examples")
    if not predictions:
        raise ValueError("no examples to score")
    total_em = total_f1 = 0.0
    for prediction, references in zip(predictions, references_list):
        exact, f1 = dureader_scores(prediction, references, truncate_to)
        total_em += exact
        total_f1 += f1
    return {"em": 100.0 * total_em / len(predictions), "f1": 100.0 * total_f1 / len(predictions)}


# ------------------------------------------------------------------------------- bootstrap

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


# --------------------------------------------------------------------------- contamination

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
