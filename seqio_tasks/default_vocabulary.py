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
import sys
import tempfile
from typing import Any

import seqio

from seqio_tasks import vocabularies
from seqio_tasks.sources import embedded
from seqio_tasks.vocabularies import sentencepiece_training

DEFAULT_VOCAB_SIZE = 8192


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("CODEREASON_CACHE_DIR", "~/.cache/codereason_jax"))


def _settings_key(vocab_size: int) -> str:
    # any change to the training code retrains
    trainer = inspect.getsource(sentencepiece_training)
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
        self._trained = False
        super().__init__(default_model_path(vocab_size))

    def _model_context(self):
        # Every encode, decode and id lookup comes through here: check the file once.
        if not self._trained:
            ensure_default_model(self._target_size)
            self._trained = True
        return super()._model_context()


_EMBEDDED: dict[int, EmbeddedVocabulary] = {}


def default_vocabulary(vocab_size: int = DEFAULT_VOCAB_SIZE) -> EmbeddedVocabulary:
    """The process-wide embedded vocabulary of this size (one object per size, so SeqIO sees
    one vocabulary)."""
    if vocab_size not in _EMBEDDED:
        _EMBEDDED[vocab_size] = EmbeddedVocabulary(vocab_size)
    return _EMBEDDED[vocab_size]


# Which vocabulary the tasks tokenize with, chosen before ``seqio_tasks.tasks`` is imported:
# "embedded" (the default above), or KIND:PATH with KIND one of the keys below.
VOCABULARY_ENV = "CODEREASON_VOCABULARY"
_KINDS = {
    "pangu": lambda path: vocabularies.PanGuVocabulary(path),
    "chatglm": lambda path: vocabularies.ChatGLMStyleVocabulary(path),
    "sentencepiece": lambda path: seqio.SentencePieceVocabulary(path),
}


def vocabulary_spec() -> str:
    return os.environ.get(VOCABULARY_ENV, "").strip() or "embedded"


def task_vocabulary(spec: str | None = None) -> seqio.Vocabulary:
    """The vocabulary named by ``spec`` (default: $CODEREASON_VOCABULARY, else "embedded").

    "embedded" is our SentencePiece model of 8,192 pieces trained on the embedded corpora;
    "embedded:N" the same with N pieces (trained and cached on first use). "pangu:PATH" is the
    released PanGu-α tokenizer (vocab.model, 40,000 pieces) that the converted PanGu-α weights
    need; "chatglm:PATH" the paper's CodePanGu tokenizer; "sentencepiece:PATH" any plain
    SentencePiece model.
    """
    spec = vocabulary_spec() if spec is None else spec
    if spec == "embedded":
        return default_vocabulary()
    kind, _, path = spec.partition(":")
    if kind == "embedded":
        if not path.isdigit() or not 256 <= int(path) <= 65536:
            raise ValueError(f"vocabulary {spec!r}: the size after 'embedded:' must be an "
                             "integer in [256, 65536], e.g. 'embedded:4096'.")
        return default_vocabulary(int(path))
    if kind not in _KINDS or not path:
        raise ValueError(f"vocabulary {spec!r} (from ${VOCABULARY_ENV} or a `vocabulary` gin "
                         f"binding) is not 'embedded', 'embedded:SIZE' or KIND:PATH with KIND in "
                         f"{sorted(_KINDS)}.")
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"vocabulary file {path!r} (from {spec!r}) does not exist; put "
                                "the SentencePiece model there or fix the `vocabulary` binding.")
    return _KINDS[kind](path)


def vocabulary_identity(vocabulary: Any, spec: str | None) -> dict[str, Any]:
    """What identifies the token ids: the vocabulary's kind, size and a digest of its
    SentencePiece model (the same file read as PanGu-α's or ChatGLM's pieces gives other ids,
    so the kind is part of it). Runs and row stores record it and compare it."""
    from etils import epath

    model = getattr(vocabulary, "sp_model", None)
    if not isinstance(model, bytes):
        path = (getattr(vocabulary, "model_path", None)
                or getattr(vocabulary, "sentencepiece_model_file", None))
        model = epath.Path(path).read_bytes() if path else repr(vocabulary).encode()
    return {"spec": spec or "embedded", "kind": type(vocabulary).__name__,
            "size": int(vocabulary.vocab_size), "sha256": hashlib.sha256(model).hexdigest()[:16]}


def use_vocabulary(spec: str | None) -> None:
    """Make the tasks tokenize with ``spec``: call before ``seqio_tasks.tasks`` is imported.

    SeqIO tasks are registered once per process, so a process that already registered them
    with another vocabulary cannot switch: that is an error, not a silent mismatch.
    """
    if spec is None:
        return
    registered = sys.modules.get("seqio_tasks.tasks")
    if registered is not None and registered.VOCABULARY_SPEC != spec:
        raise ValueError(f"the tasks of this process were registered with vocabulary "
                         f"{registered.VOCABULARY_SPEC!r}, not {spec!r}; run a new process.")
    os.environ[VOCABULARY_ENV] = spec
