"""The default vocabulary: SentencePiece trained on the embedded text+code corpora.

Every cell of the experiment matrix uses one tokenizer by default, so text-only and code models
share it (the paper's did not). The model file is trained on first use from the embedded
corpora's train split (a few seconds) and cached; the cache key covers the corpus fingerprint,
the size and the trainer settings, so a different Python version or setting trains a new one.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile

import seqio

from seqio_tasks import vocabularies
from seqio_tasks.sources import embedded

DEFAULT_VOCAB_SIZE = 8192


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("CODEREASON_CACHE_DIR", "~/.cache/codereason_jax"))


def _settings_key(vocab_size: int) -> str:
    trainer = inspect.getsource(vocabularies)  # any change to the training code retrains
    return hashlib.sha256(f"{vocab_size}/{embedded.corpus_fingerprint()}/{trainer}".encode()
                          ).hexdigest()[:12]


def default_model_path(vocab_size: int = DEFAULT_VOCAB_SIZE) -> str:
    return os.path.join(cache_dir(), "vocab", f"embedded_{vocab_size}_{_settings_key(vocab_size)}"
                        ".model")


def ensure_default_model(vocab_size: int = DEFAULT_VOCAB_SIZE) -> str:
    """Train and cache the embedded vocabulary if it is not cached yet; return its path."""
    path = default_model_path(vocab_size)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    texts = [d["text"] for d in embedded.prose_documents("train")]
    texts += [d["text"] for d in embedded.code_documents("train")]
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=".tmp",
                                     delete=False) as tmp:
        tmp_path = tmp.name
    try:
        vocabularies.train_sentencepiece(texts, vocab_size, tmp_path)
        os.replace(tmp_path, path)  # atomic: concurrent trainers write identical files
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    return path


class EmbeddedVocabulary(seqio.SentencePieceVocabulary):
    """seqio.SentencePieceVocabulary whose model file is trained on first use."""

    def __init__(self, vocab_size: int = DEFAULT_VOCAB_SIZE):
        self._target_size = vocab_size
        super().__init__(default_model_path(vocab_size))

    def _model_context(self):
        ensure_default_model(self._target_size)
        return super()._model_context()


_DEFAULT: EmbeddedVocabulary | None = None


def default_vocabulary() -> EmbeddedVocabulary:
    """The process-wide default vocabulary (one object, so SeqIO sees one vocabulary)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = EmbeddedVocabulary()
    return _DEFAULT
