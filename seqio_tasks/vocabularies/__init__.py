"""Our SentencePiece vocabulary for text+code, and the paper's two tokenizers as seqio vocabularies.

* ``train_sentencepiece`` / ``code_vocabulary``: our default vocabulary. BPE on raw text with
  identity normalization and byte fallback, so that ``decode(encode(x)) == x`` for any string
  (code indentation, tabs, blank lines, unseen characters). Ids: pad 0, eos 1, unk 2, no bos.
* ``PanGuVocabulary``: PanGu-α's 40k model used the PanGu way (jieba segmentation, space→"▂",
  newline→"▃"); lossy by design of that tokenizer (see the class docstring).
* ``ChatGLMStyleVocabulary``: a model with ChatGLM-6B's whitespace pieces ("<n>", "<|tab|>",
  "<|blank_k|>"), used the way the paper's code model tokenized text.

One module per job: ``sentencepiece_training`` (ours, and the round-trip check), ``preprocessed``
(the base of the two wrappers), ``pangu`` and ``chatglm``. The names below are the public ones.
"""

from __future__ import annotations

from seqio_tasks.vocabularies.chatglm import MAX_BLANK as MAX_BLANK
from seqio_tasks.vocabularies.chatglm import (ChatGLMStyleVocabulary, chatglm_decode_whitespace,
                                              chatglm_encode_whitespace,
                                              chatglm_whitespace_pieces)
from seqio_tasks.vocabularies.pangu import PanGuVocabulary
from seqio_tasks.vocabularies.preprocessed import PreprocessedSentencePieceVocabulary
from seqio_tasks.vocabularies.sentencepiece_training import EOS_ID as EOS_ID
from seqio_tasks.vocabularies.sentencepiece_training import MIN_VOCAB_SIZE as MIN_VOCAB_SIZE
from seqio_tasks.vocabularies.sentencepiece_training import NUM_BYTE_PIECES as NUM_BYTE_PIECES
from seqio_tasks.vocabularies.sentencepiece_training import PAD_ID as PAD_ID
from seqio_tasks.vocabularies.sentencepiece_training import REQUIRED_CHARS as REQUIRED_CHARS
from seqio_tasks.vocabularies.sentencepiece_training import UNK_ID as UNK_ID
from seqio_tasks.vocabularies.sentencepiece_training import (RoundTripError, assert_roundtrip,
                                                             code_vocabulary, split_for_training,
                                                             train_sentencepiece,
                                                             write_vocab_file)

__all__ = ["ChatGLMStyleVocabulary", "PanGuVocabulary", "PreprocessedSentencePieceVocabulary",
           "RoundTripError", "assert_roundtrip", "chatglm_decode_whitespace",
           "chatglm_encode_whitespace", "chatglm_whitespace_pieces", "code_vocabulary",
           "split_for_training", "train_sentencepiece", "write_vocab_file"]
