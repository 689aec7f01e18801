"""Multiple-choice scoring by (per-token) likelihood of a scored span, batched.

Each candidate is a (prompt, scored span) pair of strings (``seqio_tasks.eval_templates``). Four
rules pick the answer:

- ``paper``: the released scorer bit for bit. The full text and the prompt are tokenized
  separately; with P = len(tokens(prompt)) and L = len(tokens(full)), the loss mask sits on
  *input* positions P..L-1 while labels are the inputs shifted left, so the terms are
  log p(x[P+1] | x<=P) ... log p(pad | x<=L-1): the span's first token is skipped and one
  "predict padding after the end" term is added. Score = mean NLL over those terms (the paper
  takes exp, which does not change the argmin); lowest wins; ties go to the first candidate.
  Inputs longer than the context are cut on the right, as the paper did.
- ``corrected``: mean NLL of exactly the span's tokens given the prompt (prompt and span
  tokenized separately and concatenated, so the span is exact); lowest wins.
- ``loglik``: total log-likelihood of the span (lm-eval's ``acc``); highest wins.
- ``loglik_norm``: total log-likelihood divided by the span's characters (lm-eval's
  ``acc_norm``); highest wins.

All candidates of many questions are scored in padded batches of rows, one forward pass per
batch, with row lengths bucketed to powers of two to bound recompilation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from codereason_jax.model import PanGuDecoder

MODES = ("paper", "corrected", "loglik", "loglik_norm")


@dataclasses.dataclass(frozen=True)
class ScoringRow:
    """One candidate as model input: tokens and the weight of each next-token prediction."""
    tokens: np.ndarray   # [n] int32; the model reads tokens[:-1] and predicts tokens[1:]
    weights: np.ndarray  # [n - 1] float32
    truncated: bool


def paper_row(prompt_ids: Sequence[int], full_ids: Sequence[int], pad_id: int,
              max_length: int) -> ScoringRow:
    """The released scorer's row: mask on input positions P..L-1, labels shifted left."""
    truncated = len(full_ids) > max_length
    full = list(full_ids)[:max_length]
    # The paper pads every row to the context length, so the label after the last input token
    # is padding (unless the row filled the context).
    tokens = np.array(full + [pad_id], np.int32)
    length, start = len(full), min(len(prompt_ids), len(full))
    weights = np.zeros(length, np.float32)
    weights[start:length] = 1.0  # input positions P..L-1 predict tokens P+1..L (L = pad)
    return ScoringRow(tokens, weights, truncated)


def span_row(prompt_ids: Sequence[int], span_ids: Sequence[int], max_length: int
             ) -> ScoringRow:
    """Exactly the span's tokens given the prompt; a long prompt loses its left end."""
    prompt, span = list(prompt_ids), list(span_ids)
    truncated = False
    if len(prompt) + len(span) > max_length + 1:
        truncated = True
        keep = max(1, max_length + 1 - len(span))
        prompt = prompt[-keep:]
        span = span[:max_length + 1 - len(prompt)]
    tokens = np.array(prompt + span, np.int32)
    weights = np.zeros(len(tokens) - 1, np.float32)
    weights[len(prompt) - 1:] = 1.0
    return ScoringRow(tokens, weights, truncated)


def _bucket(length: int, max_length: int) -> int:
    return min(max_length, 1 << max(4, (length - 1).bit_length()))


class RowScorer:
    """Sum of weighted next-token NLL per row, on padded batches through one jitted forward."""

    def __init__(self, model: PanGuDecoder, params: Any, batch_size: int = 32):
        self.params = params
        self.batch_size = batch_size
        self.max_length = model.config.max_seq_len

        def nll_sums(params, tokens, weights, segment_ids):
            inputs = tokens[:, :-1]
            logits = model.apply({"params": params}, inputs, segment_ids=segment_ids)
            log_probs = jax.nn.log_softmax(logits, axis=-1)
            nll = -jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
            return jnp.sum(nll * weights, axis=-1)

        self._nll_sums = jax.jit(nll_sums)

    def __call__(self, rows: Sequence[ScoringRow]) -> np.ndarray:
        sums = np.zeros(len(rows), np.float64)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].tokens))
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="scoring", unit="batch", disable=None, leave=False):
            chunk = order[start:start + self.batch_size]
            width = _bucket(max(len(rows[i].tokens) - 1 for i in chunk), self.max_length)
            tokens = np.zeros((self.batch_size, width + 1), np.int32)
            weights = np.zeros((self.batch_size, width), np.float32)
            segments = np.zeros((self.batch_size, width), np.int32)
            for r, i in enumerate(chunk):
                n = len(rows[i].tokens)
                tokens[r, :n] = rows[i].tokens
                weights[r, :n - 1] = rows[i].weights
                segments[r, :n - 1] = 1
            out = np.asarray(self._nll_sums(self.params, tokens, weights, segments))
            for r, i in enumerate(chunk):
                sums[i] = out[r]
        return sums


@dataclasses.dataclass
class MultipleChoiceResult:
    example_id: str
    prediction: int
    label: int
    labels: tuple[int, ...]
    # Per candidate, lower is better in every mode: mean NLL (paper, corrected), total NLL
    # (loglik) or NLL per character of the span (loglik_norm).
    scores: list[float]
    truncated: bool

    @property
    def correct(self) -> bool:
        """Correct iff the prediction is a gold answer (several for some JEC-QA questions)."""
        return self.prediction in self.labels


def score_multiple_choice(examples: Iterable[dict[str, Any]], vocabulary: Any,
                          scorer: RowScorer, mode: str) -> list[MultipleChoiceResult]:
    """Score candidate rows grouped by ``example_id`` (the eval tasks' row format: inputs,
    targets as strings or *_pretokenized, candidate, label, labels)."""
    if mode not in MODES:
        raise ValueError(f"Unknown scoring mode {mode!r}; choose one of {MODES}.")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for example in examples:
        grouped.setdefault(_text(example["example_id"]), []).append(example)
    rows, spans = [], []
    for candidates in grouped.values():
        candidates.sort(key=lambda c: int(c["candidate"]))
        for c in candidates:
            prompt = _text(c.get("inputs_pretokenized", c["inputs"]))
            scored = _text(c.get("targets_pretokenized", c["targets"]))
            prompt_ids = vocabulary.encode(prompt)
            if mode == "paper":
                rows.append(paper_row(prompt_ids, vocabulary.encode(prompt + scored),
                                      vocabulary.pad_id, scorer.max_length))
            else:
                rows.append(span_row(prompt_ids, vocabulary.encode(scored), scorer.max_length))
            spans.append(max(1, len(scored)))
    sums = scorer(rows)
    results, index = [], 0
    for example_id, candidates in grouped.items():
        n = len(candidates)
        group_rows, group_sums = rows[index:index + n], sums[index:index + n]
        chars = spans[index:index + n]
        index += n
        if mode in ("paper", "corrected"):
            scores = [s / max(1.0, float(r.weights.sum())) for s, r in zip(group_sums, group_rows)]
            prediction = int(np.argmin(scores))  # first minimum: ties to the first candidate
        elif mode == "loglik":
            scores = [float(s) for s in group_sums]
            prediction = int(np.argmin(scores))  # highest log-likelihood
        else:
            scores = [float(s) / c for s, c in zip(group_sums, chars)]
            prediction = int(np.argmin(scores))
        first = candidates[0]
        labels = tuple(int(x) for x in _text(first["labels"]).split(",") if x != "")
        results.append(MultipleChoiceResult(
            example_id, prediction, int(first["label"]), labels or (int(first["label"]),),
            [float(s) for s in scores], any(r.truncated for r in group_rows)))
    return results


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
