"""The base of the paper's tokenizers: a SentencePiece model behind a text transformation."""

from __future__ import annotations

import abc
from typing import Any, Iterable, Sequence

import numpy as np
import seqio
import sentencepiece as spm
import tensorflow as tf


def load_processor(model_path: str) -> spm.SentencePieceProcessor:
    """A SentencePiece model read through tf.io.gfile, so that gs:// paths work too."""
    with tf.io.gfile.GFile(model_path, "rb") as f:
        return spm.SentencePieceProcessor(model_proto=f.read())


class PreprocessedSentencePieceVocabulary(seqio.Vocabulary, metaclass=abc.ABCMeta):
    """A SentencePiece model used behind a text transformation (``preprocess``/``postprocess``).

    End-of-document and pad ids are looked up by piece name, because they are properties of the
    model file. Decoding drops pad and eos ids (these models may hold them as user-defined pieces,
    which SentencePiece would otherwise print). The default TF methods run the python ones through
    ``tf.py_function``: they work in tf.data pipelines but cannot be saved into a SavedModel.
    Loaded lazily and picklable (gin deep-copies vocabularies); equal when built from the same file
    and arguments (seqio mixtures compare their tasks' vocabularies).
    """

    def __init__(self, model_path: str, *, eos_piece: str, pad_piece: str):
        self._model_path = model_path
        self._eos_piece = eos_piece
        self._pad_piece = pad_piece
        self._processor: spm.SentencePieceProcessor | None = None
        super().__init__(extra_ids=0)

    # -- model access --------------------------------------------------------------------------
    @property
    def model_path(self) -> str:
        return self._model_path

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        if self._processor is None:
            self._processor = load_processor(self._model_path)
        return self._processor

    def piece_id(self, piece: str) -> int:
        """The id of ``piece``; ValueError if the model does not hold it."""
        piece_id = self.processor.piece_to_id(piece)
        if self.processor.id_to_piece(piece_id) != piece:
            raise ValueError(f"SentencePiece model {self._model_path} has no piece {piece!r}; "
                             "pass the piece name this model uses for it.")
        return piece_id

    @property
    def eos_id(self) -> int:
        return self.piece_id(self._eos_piece)

    @property
    def pad_id(self) -> int:
        return self.piece_id(self._pad_piece)

    @property
    def unk_id(self) -> int | None:
        unk = self.processor.unk_id()
        return unk if unk >= 0 else None

    @property
    def bos_id(self) -> int | None:
        return None

    @property
    def _base_vocab_size(self) -> int:
        return self.processor.get_piece_size()

    # -- text transformation -------------------------------------------------------------------
    @abc.abstractmethod
    def preprocess(self, text: str) -> str:
        """Text as the SentencePiece model expects it."""

    @abc.abstractmethod
    def postprocess(self, text: str) -> str:
        """Inverse of preprocess applied to SentencePiece's decoded text."""

    def _encode(self, s: str) -> Sequence[int]:
        return self.processor.encode(self.preprocess(s))

    def _decode(self, ids: Iterable[int]) -> str:
        drop = {self.pad_id, self.eos_id}
        size = self._base_vocab_size
        unk = self.unk_id
        kept = [int(i) if int(i) < size else unk for i in ids if int(i) not in drop]
        return self.postprocess(self.processor.decode([i for i in kept if i is not None]))

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """Scalar string → 1-D int32 ids; 1-D strings → ragged ids (via tf.py_function)."""
        s = tf.convert_to_tensor(s, dtype=tf.string)
        if s.shape.rank == 0:
            ids = tf.py_function(
                lambda x: np.asarray(self._encode(x.numpy().decode("utf-8")), np.int32),
                [s], tf.int32)
            ids.set_shape([None])
            return ids

        def encode_batch(batch: tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
            rows = [self._encode(x.decode("utf-8")) for x in batch.numpy().tolist()]
            values = np.asarray([i for row in rows for i in row], np.int32)
            return values, np.asarray([len(row) for row in rows], np.int64)

        values, lengths = tf.py_function(encode_batch, [s], [tf.int32, tf.int64])
        values.set_shape([None])
        lengths.set_shape(s.shape)
        return tf.RaggedTensor.from_row_lengths(values, lengths)

    def _decode_tf(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """1-D ids → scalar string; 2-D (dense or ragged) → 1-D strings (via tf.py_function)."""
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=self.pad_id)
        ids = tf.convert_to_tensor(ids)
        if ids.shape.rank == 1:
            text = tf.py_function(lambda x: self._decode(x.numpy().tolist()).encode("utf-8"),
                                  [ids], tf.string)
            text.set_shape([])
            return text
        texts = tf.py_function(
            lambda x: np.asarray([self._decode(row).encode("utf-8")
                                  for row in x.numpy().tolist()], dtype=object),
            [ids], tf.string)
        texts.set_shape(ids.shape[:1])
        return texts

    # -- identity ------------------------------------------------------------------------------
    def _identity(self) -> tuple[Any, ...]:
        return (type(self), self._model_path, self._eos_piece, self._pad_piece)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PreprocessedSentencePieceVocabulary):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_processor"] = None
        return state

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self._model_path!r}, eos_piece={self._eos_piece!r}, "
                f"pad_piece={self._pad_piece!r})")
