"""PanGu-α's 40k SentencePiece model used the PanGu way (jieba segmentation, "▂"/"▃")."""

from __future__ import annotations

import logging
from typing import Any

from seqio_tasks.vocabularies.preprocessed import PreprocessedSentencePieceVocabulary


class PanGuVocabulary(PreprocessedSentencePieceVocabulary):
    """PanGu-α's SentencePiece model applied the PanGu way.

    Encode: jieba word segmentation; inside each segment " "→"▂" and "\\n"→"▃"; segments joined
    with " " and SentencePiece-encoded. Decode: SentencePiece decode, delete every space, then
    "▂"→" " and "▃"→"\\n". The real model (unigram, nmt_nfkc, no byte fallback) loses whatever its
    normalizer changes (tabs, NFKC variants such as full-width "，"→",", U+3000 → space → deleted)
    and characters outside its vocabulary (decoded as " ⁇ ", then deleted spaces); literal "▂"/"▃"
    in the input decode as space/newline. The id of "<eot>" is both eos and EOD (PanGu's document
    separator, 9 in the released model); pad is "<pad>" (6). Note seqio's own padding writes 0,
    which is "<unk>" in this model: rely on loss weights and segment ids, not on ``ids == pad``.
    """

    SPACE, NEWLINE = "\u2582", "\u2583"  # "▂", "▃"

    def __init__(self, model_path: str, *, eod_piece: str = "<eot>", pad_piece: str = "<pad>",
                 hmm: bool = True):
        super().__init__(model_path, eos_piece=eod_piece, pad_piece=pad_piece)
        self._hmm = hmm
        self._jieba: Any = None
        self._to_pangu = str.maketrans({" ": self.SPACE, "\n": self.NEWLINE})
        self._from_pangu = str.maketrans({" ": None, self.SPACE: " ", self.NEWLINE: "\n"})

    @property
    def eod_id(self) -> int:
        return self.eos_id

    def _segmenter(self) -> Any:
        """A private jieba tokenizer: global jieba state (user words) cannot change our ids."""
        if self._jieba is None:
            import jieba  # Deferred: only PanGu runs need it, and it loads a dictionary.
            jieba.setLogLevel(logging.WARNING)
            self._jieba = jieba.Tokenizer()
        return self._jieba

    def preprocess(self, text: str) -> str:
        segments = self._segmenter().cut(text, cut_all=False, HMM=self._hmm)
        return " ".join(segment.translate(self._to_pangu) for segment in segments)

    def postprocess(self, text: str) -> str:
        return text.translate(self._from_pangu)

    def _identity(self) -> tuple[Any, ...]:
        return super()._identity() + (self._hmm,)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_jieba"] = None
        return state
