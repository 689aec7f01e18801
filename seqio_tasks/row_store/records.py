"""One packed row as a record of tokens, and the row rebuilt from it at read time.

A row of ``seqio_tasks.packing`` has five arrays of length L; the store keeps only what cannot
be derived (2 bytes a token when the vocabulary has at most 65,536 ids):

- ``concat`` rows (pre-training, ``ConcatPacker``): the chunk of m+1 tokens the row was cut
  from. Inputs and targets are the chunk shifted by one; a new document (segment) starts after
  each end-of-document token, and positions restart there; every real position has weight 1.
- ``examples`` rows (instruction tuning, ``OnePerRowPacker`` / ``GreedyPacker``): each example's
  tokens (prompt + response + EOS) and its prompt length, behind a small uint32 header
  ``[count, prompt_1, length_1, ...]``; weights are 1 from the last prompt token's target on.

``encode_row`` and ``decode_row`` are inverses on every row the packers make; the preparation
checks that on each row it writes, so a source whose documents do not end in EOS (where the
segments could not be derived) is refused rather than stored wrongly.
"""

from __future__ import annotations

import numpy as np

from seqio_tasks import packing

KINDS = ("concat", "examples")
_HEADER = np.dtype("<u4")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies of at most 65,536 ids, else uint32 (little-endian on disk)."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def packing_kind(packer: object) -> str:
    return "concat" if isinstance(packer, packing.ConcatPacker) else "examples"


def encode_row(row: packing.Row, kind: str, dtype: np.dtype) -> bytes:
    """The record of one packed row (see the module docstring)."""
    real = int(np.count_nonzero(row["segment_ids"]))
    if kind == "concat":
        chunk = np.append(row["inputs"][:real], row["targets"][real - 1])
        return chunk.astype(dtype).tobytes()
    header, tokens = [], []
    segments = row["segment_ids"][:real]
    for segment in np.unique(segments):
        where = np.flatnonzero(segments == segment)
        weights = row["loss_weights"][where]
        sequence = np.append(row["inputs"][where], row["targets"][where[-1]])
        weighted = np.flatnonzero(weights > 0)
        prompt = int(weighted[0]) + 1 if weighted.size else sequence.size
        header += [prompt, sequence.size]
        tokens.append(sequence)
    head = np.asarray([len(header) // 2, *header], _HEADER).tobytes()
    return head + np.concatenate(tokens).astype(dtype).tobytes()


def decode_row(record: bytes, kind: str, dtype: np.dtype, length: int, pad_id: int,
               eos_id: int) -> packing.Row:
    """The five arrays of the row stored as ``record``."""
    row = {"inputs": np.full(length, pad_id, np.int32),
           "targets": np.full(length, pad_id, np.int32),
           "segment_ids": np.zeros(length, np.int32), "positions": np.zeros(length, np.int32),
           "loss_weights": np.zeros(length, np.float32)}
    if kind == "concat":
        chunk = np.frombuffer(record, dtype).astype(np.int32)
        m = chunk.size - 1
        row["inputs"][:m], row["targets"][:m] = chunk[:-1], chunk[1:]
        starts = np.ones(m, bool)
        starts[1:] = chunk[:m - 1] == eos_id
        row["segment_ids"][:m] = np.cumsum(starts)
        index = np.arange(m)
        row["positions"][:m] = index - np.maximum.accumulate(np.where(starts, index, 0))
        row["loss_weights"][:m] = 1.0
        return row
    count = int(np.frombuffer(record, _HEADER, 1)[0])
    header = np.frombuffer(record, _HEADER, 2 * count, _HEADER.itemsize).reshape(count, 2)
    tokens = np.frombuffer(record, dtype, offset=_HEADER.itemsize * (1 + 2 * count))
    start = offset = 0
    for segment, (prompt, size) in enumerate(header.tolist(), start=1):
        sequence = tokens[offset:offset + size].astype(np.int32)
        offset += size
        end = start + size - 1
        row["inputs"][start:end], row["targets"][start:end] = sequence[:-1], sequence[1:]
        row["segment_ids"][start:end] = segment
        row["positions"][start:end] = np.arange(size - 1)
        row["loss_weights"][start:end] = np.arange(1, size) >= prompt
        start = end
    return row


def rows_equal(a: packing.Row, b: packing.Row) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in packing.ROW_FIELDS)
