"""The real pre-training corpora, prepared once into sharded TFDS datasets and read by every host.

* ``builders``: ``tfds.core.GeneratorBasedBuilder`` classes for CodeParrot-clean
  (``codereason_codeparrot``) and a directory of text/JSON-lines files
  (``codereason_text_corpus``, configs ``file`` and ``paragraphs``). They read the same files as
  ``seqio_tasks.sources.corpora`` (from a local or ``gs://`` manual dir, never downloading), keep
  a stable ``id`` per document and assign train/validation with ``corpora.split_by_hash`` on the
  key the reader-based tasks use, so a document lands in the same split either way. Generation
  runs as a plain generator, or as an Apache Beam pipeline (DirectRunner, DataflowRunner) when a
  Beam runner or Beam options are given.
* ``prepare``: the command line (``python -m seqio_tasks.tfds_builders.prepare --help``).
* ``seqio_source``: the SeqIO source the ``*_tfds`` tasks read the prepared data with.

This module only names things; importing it imports neither TensorFlow nor TFDS.
"""

CODEPARROT_NAME = "codereason_codeparrot"
TEXT_CORPUS_NAME = "codereason_text_corpus"
VERSION = "1.0.0"
DATASETS = {"codeparrot": CODEPARROT_NAME, "text_corpus": TEXT_CORPUS_NAME}


def tfds_name(dataset: str, config: str | None = None, version: str = VERSION) -> str:
    """``name[/config]:version`` of a prepared dataset; the explicit version makes TFDS read it
    from its files, so readers need neither this package's builder code nor the input."""
    name = DATASETS.get(dataset, dataset)
    return f"{name}{'/' + config if config else ''}:{version}"
