"""Our default vocabulary: SentencePiece trained on text+code, and the round-trip check.

BPE on raw text with identity normalization and byte fallback, so that ``decode(encode(x)) == x``
for any string (code indentation, tabs, blank lines, unseen characters). Ids: pad 0, eos 1, unk 2,
no bos. ``assert_roundtrip`` checks that promise for any seqio vocabulary.

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

import io
import re
from typing import Iterable, Iterator, Sequence

import seqio
import sentencepiece as spm
import tensorflow as tf

from seqio_tasks.vocabularies.preprocessed import load_processor

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_BYTE_PIECES = 256
# Characters that must be single pieces in our vocabulary whatever the data.
REQUIRED_CHARS = "\n\t"
# pad, eos, unk, the 256 byte pieces, the required characters and at least one more piece.
MIN_VOCAB_SIZE = 3 + NUM_BYTE_PIECES + len(REQUIRED_CHARS) + 1


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
    processor = load_processor(model_path)
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
