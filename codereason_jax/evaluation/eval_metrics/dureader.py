"""DuReader EM/F1, copying the paper notebook's DuReader-robust scorer.

Not the CMRC2018 scorer, which splits English with nltk: see `dureader_tokenize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
