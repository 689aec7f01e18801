"""Turn a stream of tokenized examples into fixed-length training rows (numpy, host side).

A row has five int32/float32 arrays of length L: ``inputs``, ``targets`` (inputs shifted by one),
``segment_ids`` (1, 2, ... per document in the row, 0 on padding), ``positions`` (restart at 0
for each document) and ``loss_weights``. Three packers:

- ``ConcatPacker``, the paper's pre-training packing: documents (each ending in EOS) are
  concatenated into one stream and cut into chunks of L+1 tokens; a document may continue in
  the next row, where its positions restart (as the paper's EOD-reset did). Every real target
  token has weight 1, the rows are 100% dense, and nothing is dropped.
- ``OnePerRowPacker``, the paper's instruction tuning: one (prompt, response) example per row,
  padded; loss only on the response and its EOS.
- ``GreedyPacker``: instruction examples packed whole, in order, several per row.

Examples longer than a row are handled by an explicit ``overlong`` policy and counted; none is
cut or dropped without appearing in ``stats``.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

ROW_FIELDS = ("inputs", "targets", "segment_ids", "positions", "loss_weights")
OVERLONG_POLICIES = ("drop", "truncate", "error")

Row = dict[str, np.ndarray]


class OverlongExampleError(ValueError):
    """An example does not fit in one row and the policy is 'error'."""


@dataclasses.dataclass
class PackingStats:
    row_length: int
    examples: int = 0
    rows: int = 0
    real_tokens: int = 0      # input positions holding a real token
    loss_tokens: float = 0.0  # sum of loss weights
    truncated: int = 0
    dropped: int = 0

    @property
    def efficiency(self) -> float:
        """Share of row positions holding a real token (1.0 = no padding)."""
        return self.real_tokens / max(1, self.rows * self.row_length)


def _empty_row(length: int) -> Row:
    return {"inputs": np.zeros(length, np.int32), "targets": np.zeros(length, np.int32),
            "segment_ids": np.zeros(length, np.int32), "positions": np.zeros(length, np.int32),
            "loss_weights": np.zeros(length, np.float32)}


class ConcatPacker:
    """Dense concat-and-chunk packing of documents (each already ending in EOS)."""

    def __init__(self, length: int, pad_id: int = 0):
        self.length = length
        self.pad_id = pad_id
        self.stats = PackingStats(length)
        self._tokens: list[np.ndarray] = []
        self._doc_ids: list[np.ndarray] = []
        self._buffered = 0
        self._next_doc = 0

    def add(self, tokens: np.ndarray) -> Iterator[Row]:
        tokens = np.asarray(tokens, np.int32)
        if tokens.size == 0:
            return
        self.stats.examples += 1
        self._tokens.append(tokens)
        self._doc_ids.append(np.full(tokens.size, self._next_doc, np.int64))
        self._next_doc += 1
        self._buffered += tokens.size
        n = self.length + 1
        if self._buffered < n:
            return
        # One concatenation per document, then slices: a document of D tokens costs O(D), not
        # O(D^2 / length) as re-concatenating the remainder for every row would.
        pending, docs = self._take_all()
        full = pending.size // n
        rest = full * n
        if rest < pending.size:
            self._tokens, self._doc_ids = [pending[rest:]], [docs[rest:]]
            self._buffered = pending.size - rest
        for i in range(full):
            yield self._row(pending[i * n:(i + 1) * n], docs[i * n:(i + 1) * n])

    def flush(self) -> Iterator[Row]:
        """Pad out the last partial chunk (at the end of a finite stream)."""
        if self._buffered >= 2:
            yield self._row(*self._take_all())
        self._tokens, self._doc_ids, self._buffered = [], [], 0

    def _take_all(self) -> tuple[np.ndarray, np.ndarray]:
        """The buffered tokens and their document ids, leaving the buffer empty."""
        tokens, docs = np.concatenate(self._tokens), np.concatenate(self._doc_ids)
        self._tokens, self._doc_ids, self._buffered = [], [], 0
        return tokens, docs

    def _row(self, chunk: np.ndarray, chunk_docs: np.ndarray) -> Row:
        """A row from a chunk of at most length + 1 tokens (inputs and targets shifted by one)."""
        row = _empty_row(self.length)
        m = chunk.size - 1
        row["inputs"][:m] = chunk[:-1]
        row["targets"][:m] = chunk[1:]
        row["inputs"][m:] = self.pad_id
        row["targets"][m:] = self.pad_id
        in_docs = chunk_docs[:-1]
        starts = np.concatenate([[True], in_docs[1:] != in_docs[:-1]])
        row["segment_ids"][:m] = np.cumsum(starts)
        index = np.arange(m)
        row["positions"][:m] = index - np.maximum.accumulate(np.where(starts, index, 0))
        row["loss_weights"][:m] = 1.0
        self.stats.rows += 1
        self.stats.real_tokens += m
        self.stats.loss_tokens += m
        return row


class _ExamplePacker:
    """Shared handling of (prompt, response) examples for the instruction packers."""

    def __init__(self, length: int, pad_id: int = 0, overlong: str = "drop"):
        if overlong not in OVERLONG_POLICIES:
            raise ValueError(f"overlong={overlong!r} is not one of {OVERLONG_POLICIES}.")
        self.length = length
        self.pad_id = pad_id
        self.overlong = overlong
        self.stats = PackingStats(length)

    def _prepare(self, prompt: np.ndarray, response: np.ndarray):
        """(inputs, targets, weights) of one example, or None if it is dropped."""
        sequence = np.concatenate([np.asarray(prompt, np.int32), np.asarray(response, np.int32)])
        self.stats.examples += 1
        if sequence.size - 1 > self.length:
            if self.overlong == "error":
                raise OverlongExampleError(
                    f"An example of {sequence.size} tokens (prompt {len(prompt)}) does not fit "
                    f"a row of {self.length}+1; choose overlong='drop' or 'truncate' or a longer "
                    "sequence length.")
            if self.overlong == "drop":
                self.stats.dropped += 1
                return None
            if len(prompt) >= self.length + 1:
                self.stats.dropped += 1  # the prompt alone fills the row: nothing to learn
                return None
            self.stats.truncated += 1
            sequence = sequence[:self.length + 1]
        weights = (np.arange(1, sequence.size) >= len(prompt)).astype(np.float32)
        return sequence[:-1], sequence[1:], weights

    def _place(self, row: Row, start: int, segment: int, example) -> int:
        inputs, targets, weights = example
        end = start + inputs.size
        row["inputs"][start:end] = inputs
        row["targets"][start:end] = targets
        row["segment_ids"][start:end] = segment
        row["positions"][start:end] = np.arange(inputs.size)
        row["loss_weights"][start:end] = weights
        self.stats.real_tokens += inputs.size
        self.stats.loss_tokens += float(weights.sum())
        return end


class OnePerRowPacker(_ExamplePacker):
    """One instruction example per row, right-padded (the paper's instruction tuning)."""

    def add(self, prompt: np.ndarray, response: np.ndarray) -> Iterator[Row]:
        example = self._prepare(prompt, response)
        if example is None:
            return
        row = _empty_row(self.length)
        row["inputs"][:] = self.pad_id
        row["targets"][:] = self.pad_id
        self._place(row, 0, 1, example)
        self.stats.rows += 1
        yield row

    def flush(self) -> Iterator[Row]:
        return iter(())


class GreedyPacker(_ExamplePacker):
    """Whole instruction examples, in arrival order, as many per row as fit."""

    def __init__(self, length: int, pad_id: int = 0, overlong: str = "drop"):
        super().__init__(length, pad_id, overlong)
        self._pending: list = []
        self._used = 0

    def add(self, prompt: np.ndarray, response: np.ndarray) -> Iterator[Row]:
        example = self._prepare(prompt, response)
        if example is None:
            return
        if self._used + example[0].size > self.length:
            yield from self.flush()
        self._pending.append(example)
        self._used += example[0].size

    def flush(self) -> Iterator[Row]:
        if not self._pending:
            return
        row = _empty_row(self.length)
        row["inputs"][:] = self.pad_id
        row["targets"][:] = self.pad_id
        start = 0
        for segment, example in enumerate(self._pending, start=1):
            start = self._place(row, start, segment, example)
        self._pending, self._used = [], 0
        self.stats.rows += 1
        yield row
