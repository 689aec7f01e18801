"""Our SentencePiece vocabulary for text+code, and the paper's two tokenizers as seqio vocabularies.

* ``train_sentencepiece`` / ``code_vocabulary``: our default vocabulary. BPE on raw text with
  identity normalization and byte fallback, so that ``decode(encode(x)) == x`` for any string
  (code indentation, tabs, blank lines, unseen characters). Ids: pad 0, eos 1, unk 2, no bos.
* ``PanGuVocabulary``: PanGu-α's 40k model used the PanGu way (jieba segmentation, space→"▂",
  newline→"▃"); lossy by design of that tokenizer (see the class docstring).
* ``ChatGLMStyleVocabulary``: a model with ChatGLM-6B's whitespace pieces ("<n>", "<|tab|>",
  "<|blank_k|>"), used the way the paper's code model tokenized text.

How newlines are learned (``train_sentencepiece``): SentencePiece treats each training *sentence*
as one unit. Reading files, it splits them on newlines; fed one line at a time, it also learns no
"\\n" piece (checked with sentencepiece 0.2.3), and newlines then fall back to bytes. We therefore
feed whole documents from memory through ``sentence_iterator``; each document is
cut into chunks of whole lines (newlines kept) no longer than ``max_sentence_length`` bytes,
because the trainer silently skips longer sentences. "\\n" and "\\t" are also passed as
``required_chars`` so they are always single pieces, even when rare or absent in the data. BPE
may merge "\\n" with neighbouring characters (pieces like "):\\n" or "\\n\\n"); it never merges
across a space, because words split on whitespace.
"""

from __future__ import annotations

import abc
import io
import logging
import re
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import seqio
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
import tensorflow as tf
import tensorflow_text as tf_text

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_BYTE_PIECES = 256
# Characters that must be single pieces in our vocabulary whatever the data.
REQUIRED_CHARS = "\n\t"
# pad, eos, unk, the 256 byte pieces, the required characters and at least one more piece.
MIN_VOCAB_SIZE = 3 + NUM_BYTE_PIECES + len(REQUIRED_CHARS) + 1


# ----------------------------------------------------------------------------------------------
# Training our default vocabulary.
# ----------------------------------------------------------------------------------------------

def split_for_training(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """Yield training sentences: documents cut at line ends into chunks of <= max_bytes (UTF-8).

    Newlines stay inside the chunks so that the trainer learns them. A single line longer than
    ``max_bytes`` is cut at character boundaries.
    """
    for text in texts:
        chunk: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            line_size = len(line.encode("utf-8"))
            if size + line_size > max_bytes and chunk:
                yield "".join(chunk)
                chunk, size = [], 0
            if line_size > max_bytes:
                yield from _cut_long_line(line, max_bytes)
                continue
            chunk.append(line)
            size += line_size
        if chunk:
            yield "".join(chunk)


def _cut_long_line(line: str, max_bytes: int) -> Iterator[str]:
    start, size = 0, 0
    for i, char in enumerate(line):
        char_size = len(char.encode("utf-8"))
        if size + char_size > max_bytes:
            yield line[start:i]
            start, size = i, 0
        size += char_size
    if start < len(line):
        yield line[start:]


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    model_path: str,
    *,
    character_coverage: float = 0.9995,
    max_sentence_length: int = 16384,
    input_sentence_size: int = 0,
    seed: int = 0,
    num_threads: int = 1,
    user_defined_symbols: Sequence[str] = (),
) -> str:
    """Train our default vocabulary on in-memory documents and write it to ``model_path``.

    BPE; identity normalization and no whitespace cleanup, so text (code) round-trips exactly;
    byte fallback, so characters outside ``character_coverage`` become UTF-8 byte pieces instead
    of unk; ``split_digits`` so numbers are read digit by digit (uniform arithmetic for the
    reasoning tasks); no dummy prefix, so ``encode(a + b)`` splits the same way wherever ``a``
    ends and a text's first word is tokenized as it is after a newline.

    Deterministic: same texts and arguments give a byte-identical file. ``num_threads`` changes
    the result (the trainer's parallel work is not order-independent), so it defaults to 1 and is
    recorded in the model's trainer spec. ``input_sentence_size`` > 0 samples that many chunks
    with the trainer's random generator, seeded by ``seed``.

    Returns ``model_path``. Raises ValueError on empty input or a vocab_size that cannot hold the
    specials, byte pieces and required characters (the message gives the minimum), or that is
    larger than the texts can fill.
    """
    if vocab_size < MIN_VOCAB_SIZE + len(user_defined_symbols):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the minimum is "
            f"{MIN_VOCAB_SIZE + len(user_defined_symbols)} (3 special ids + {NUM_BYTE_PIECES} "
            f"byte-fallback pieces + {len(REQUIRED_CHARS)} required characters + "
            f"{len(user_defined_symbols)} user-defined symbols + 1), plus one piece per "
            "distinct character the data needs.")
    sentences = [s for s in split_for_training(texts, max_sentence_length) if s]
    if not sentences:
        raise ValueError("no training text: every input text is empty.")

    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            required_chars=REQUIRED_CHARS,
            user_defined_symbols=list(user_defined_symbols),
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            byte_fallback=True,
            pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
            max_sentence_length=max_sentence_length,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as err:
        raise _explain_training_error(err, vocab_size) from err
    with tf.io.gfile.GFile(model_path, "wb") as f:
        f.write(model.getvalue())
    return model_path


def _explain_training_error(err: RuntimeError, vocab_size: int) -> Exception:
    """Turn the trainer's size checks into ValueErrors that say what to change."""
    message = str(err)
    too_small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_small:
        needed = int(too_small.group(2))
        return ValueError(
            f"vocab_size={vocab_size} is too small for these texts: the minimum is {needed} "
            f"(3 special ids + {NUM_BYTE_PIECES} byte-fallback pieces + "
            f"{needed - 3 - NUM_BYTE_PIECES} characters kept by character_coverage); raise "
            "vocab_size or lower character_coverage.")
    too_high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)",
                         message)
    if too_high:
        return ValueError(
            f"vocab_size={vocab_size} is too large for these texts: they support at most "
            f"{too_high.group(2)} pieces; give more text or a smaller vocab_size.")
    return err


def write_vocab_file(model_path: str, vocab_path: str) -> None:
    """Write a human-readable ``piece<TAB>score`` list, escaping \\\\, \\n, \\r and \\t.

    SentencePiece's own .vocab format writes pieces raw, which breaks on pieces holding a newline
    or a tab; the .model file is the source of truth, this file is for reading.
    """
    processor = _load_processor(model_path)
    escapes = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
    with tf.io.gfile.GFile(vocab_path, "w") as f:
        for i in range(processor.get_piece_size()):
            f.write(f"{processor.id_to_piece(i).translate(escapes)}\t{processor.get_score(i):g}\n")


def code_vocabulary(model_path: str, extra_ids: int = 0) -> seqio.SentencePieceVocabulary:
    """Our default vocabulary as seqio sees it (python and TF encode/decode agree).

    seqio caches a loaded model by file path for the life of the process: write a retrained model
    to a new path rather than over one already used.
    """
    return seqio.SentencePieceVocabulary(model_path, extra_ids=extra_ids)


class RoundTripError(AssertionError):
    """decode(encode(text)) differs from text; the message shows the first difference."""


def assert_roundtrip(vocab: seqio.Vocabulary, texts: Iterable[str], *,
                     use_tf: bool = False) -> None:
    """Raise RoundTripError at the first text whose decode(encode(text)) is not text.

    With ``use_tf`` the check goes through ``encode_tf``/``decode_tf`` (the input pipeline's
    path) instead of the python methods.
    """
    for index, text in enumerate(texts):
        if use_tf:
            ids = vocab.encode_tf(tf.constant(text))
            decoded = vocab.decode_tf(ids).numpy().decode("utf-8")
        else:
            decoded = vocab.decode(vocab.encode(text))
        if decoded != text:
            raise RoundTripError(_describe_difference(index, text, decoded))


def _describe_difference(index: int, expected: str, got: str) -> str:
    pos = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b),
               min(len(expected), len(got)))
    want = repr(expected[pos]) if pos < len(expected) else "end of text"
    have = repr(got[pos]) if pos < len(got) else "end of text"
    return (f"text #{index}: decode(encode(text)) differs at character {pos}: expected {want}, "
            f"got {have}; context {expected[max(0, pos - 20):pos + 20]!r} became "
            f"{got[max(0, pos - 20):pos + 20]!r} (lengths {len(expected)} vs {len(got)}).")


# ----------------------------------------------------------------------------------------------
# Wrappers for the paper's tokenizers.
# ----------------------------------------------------------------------------------------------

def _load_processor(model_path: str) -> spm.SentencePieceProcessor:
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
            self._processor = _load_processor(self._model_path)
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
