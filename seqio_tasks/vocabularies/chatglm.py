"""ChatGLM-6B's whitespace pieces ("<n>", "<|tab|>", "<|blank_k|>") and a vocabulary using them."""

from __future__ import annotations

import re

import tensorflow as tf
import tensorflow_text as tf_text
from sentencepiece import sentencepiece_model_pb2

from seqio_tasks.vocabularies.preprocessed import PreprocessedSentencePieceVocabulary

MAX_BLANK = 80  # ChatGLM-6B's longest "<|blank_k|>" piece.


def chatglm_whitespace_pieces(max_blank: int = MAX_BLANK) -> list[str]:
    """The pieces a ChatGLM-style model needs: "<n>", "<|tab|>", "<|blank_2|>".."<|blank_80|>"."""
    return ["<n>", "<|tab|>"] + [f"<|blank_{k}|>" for k in range(2, max_blank + 1)]


_RUN_OF_SPACES = re.compile(" {2,}")
_BLANK = re.compile(r"<\|blank_(\d+)\|>")


def chatglm_encode_whitespace(text: str) -> str:
    """ChatGLM-6B's whitespace substitution: newline, tab and runs of 2..80 spaces become pieces."""
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    return _RUN_OF_SPACES.sub(_blank_run, text)


def chatglm_decode_whitespace(text: str) -> str:
    """Inverse of chatglm_encode_whitespace (a literal "<n>" in the input also becomes "\\n")."""
    return _BLANK.sub(_unblank, text).replace("<n>", "\n").replace("<|tab|>", "\t")


def _blank_run(match: re.Match) -> str:
    full, rest = divmod(len(match.group(0)), MAX_BLANK)
    tail = f"<|blank_{rest}|>" if rest >= 2 else " " * rest
    return f"<|blank_{MAX_BLANK}|>" * full + tail


def _unblank(match: re.Match) -> str:
    k = int(match.group(1))
    return " " * k if 2 <= k <= MAX_BLANK else match.group(0)


class ChatGLMStyleVocabulary(PreprocessedSentencePieceVocabulary):
    """A SentencePiece model behind ChatGLM-6B's whitespace substitution.

    Encode: "\\n"→"<n>", "\\t"→"<|tab|>", each run of k spaces → "<|blank_80|>" × (k // 80) then
    "<|blank_r|>" for the rest r (2 ≤ r), a single leftover space stays a space (the same as
    ChatGLM's longest-first replacement). Decode reverses it; a literal "<n>", "<|tab|>" or
    "<|blank_k|>" in the input decodes as whitespace (as in ChatGLM). Eos and pad are looked up by
    piece name: ChatGLM-6B ends texts with "<eop>" (130005 in the paper's scripts) and pads with
    "<pad>" (3). The model must hold the pieces of ``chatglm_whitespace_pieces()``. The TF methods
    are graph ops (regex replacements and tf_text's SentencePiece), so unlike PanGu's they can be
    saved into a SavedModel.
    """

    def __init__(self, model_path: str, *, eos_piece: str = "<eop>", pad_piece: str = "<pad>"):
        super().__init__(model_path, eos_piece=eos_piece, pad_piece=pad_piece)

    def check_pieces(self) -> None:
        """ValueError naming the first whitespace piece the model lacks."""
        for piece in chatglm_whitespace_pieces():
            self.piece_id(piece)

    def preprocess(self, text: str) -> str:
        return chatglm_encode_whitespace(text)

    def postprocess(self, text: str) -> str:
        return chatglm_decode_whitespace(text)

    # -- graph-native TF path ------------------------------------------------------------------
    def _tf_tokenizer(self) -> tf_text.SentencepieceTokenizer:
        return tf_text.SentencepieceTokenizer(model=self.processor.serialized_model_proto())

    @staticmethod
    def preprocess_tf(s: tf.Tensor) -> tf.Tensor:
        s = tf.strings.regex_replace(s, "\n", "<n>")
        s = tf.strings.regex_replace(s, "\t", "<|tab|>")
        # Longest first, as ChatGLM does: after the k = 80 pass every remaining run is shorter,
        # and each shorter run is replaced whole by the pass with its own length.
        for k in range(MAX_BLANK, 1, -1):
            s = tf.strings.regex_replace(s, f" {{{k}}}", f"<|blank_{k}|>")
        return s

    @staticmethod
    def postprocess_tf(s: tf.Tensor) -> tf.Tensor:
        for k in range(2, MAX_BLANK + 1):
            s = tf.strings.regex_replace(s, re.escape(f"<|blank_{k}|>"), " " * k)
        s = tf.strings.regex_replace(s, "<n>", "\n")
        return tf.strings.regex_replace(s, re.escape("<|tab|>"), "\t")

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        return self._tf_tokenizer().tokenize(self.preprocess_tf(s))

    def _decode_tf(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Like _decode, in graph ops: 1-D ids → scalar string; 2-D (dense or ragged) → 1-D.

        tf_text's detokenizer strips *every* leading "▁" of a text whose model adds a dummy
        prefix, where python SentencePiece strips the dummy prefix only: one "▁" at the start of
        the first non-control piece. To agree with ``_decode``, decode behind a "<n>" sentinel
        (so tf_text strips nothing), drop the sentinel, then strip that one space ourselves.
        """
        rank = ids.shape.rank
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(
                tf.convert_to_tensor(ids)[tf.newaxis] if rank == 1 else ids)
        drop, starts_with_space = self._tf_piece_tables()
        ids = tf.ragged.map_flat_values(
            lambda v: tf.where(v < self._base_vocab_size, v, self.unk_id), ids)
        kept = tf.ragged.boolean_mask(ids, tf.ragged.map_flat_values(
            lambda v: tf.logical_not(tf.gather(drop, v)), ids))
        sentinel = tf.fill([kept.nrows(), 1], tf.cast(self.piece_id("<n>"), kept.dtype))
        with_sentinel = tf.concat([tf.RaggedTensor.from_tensor(sentinel), kept], axis=1)
        text = self._tf_tokenizer().detokenize(with_sentinel)
        text = tf.strings.regex_replace(text, "^<n>", "", replace_global=False)
        if self._adds_dummy_prefix():
            first = kept.to_tensor(default_value=-1, shape=[None, 1])[:, 0]
            strip = tf.logical_and(first >= 0, tf.gather(starts_with_space, tf.maximum(first, 0)))
            text = tf.where(strip, tf.strings.regex_replace(text, "^ ", "", replace_global=False),
                            text)
        text = self.postprocess_tf(text)
        return text[0] if rank == 1 else text

    def _tf_piece_tables(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Per id: dropped when decoding (control, pad, eos)? piece starts with "▁"?"""
        processor = self.processor
        size = processor.get_piece_size()
        drop = [processor.is_control(i) for i in range(size)]
        drop[self.pad_id] = drop[self.eos_id] = True
        starts = [processor.id_to_piece(i).startswith("\u2581") for i in range(size)]
        return tf.constant(drop), tf.constant(starts)

    def _adds_dummy_prefix(self) -> bool:
        proto = sentencepiece_model_pb2.ModelProto.FromString(
            self.processor.serialized_model_proto())
        return proto.normalizer_spec.add_dummy_prefix
