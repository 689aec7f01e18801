"""TFDS builders for CodeParrot-clean and a text corpus directory, as generators or on Beam.

Both read a *manual dir* (a local directory or ``gs://...``; nothing is downloaded) with the
per-file readers of ``seqio_tasks.sources.corpora``, so a document has exactly the content the
reader-based tasks ``codeparrot`` and ``text_corpus`` give it. Each example keeps a stable
``id`` (``relpath:LINE`` for JSON-lines records; ``relpath`` or ``relpath#N`` for .txt files,
``relpath`` relative to the manual dir) that is also its TFDS key, and the split is
``corpora.split_by_hash`` of the same key the reader-based tasks use (CodeParrot: ``path`` =
``repo_name/path``; text: ``id``) with ``corpora.HASH_VALIDATION_FRACTION``.

Generation: ``_generate_examples`` returns a plain generator, unless the ``DownloadConfig``
names a ``beam_runner`` or ``beam_options``: then it returns a Beam ``PTransform`` (files are
distributed over workers, one file per work item, and read through ``etils.epath``, so inputs on
``gs://`` work on Dataflow). Both paths yield the same (key, example) pairs, so they write the
same examples in the same order (TFDS orders a split by a hash of the keys).

Each split reads all input files and keeps its own documents (the input is read once per split).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import inspect
import logging
import re
from typing import Any, Callable, Iterable, Iterator, Sequence

import tensorflow_datasets as tfds
from etils import epath

from seqio_tasks.sources import corpora
from seqio_tasks.sources.corpora import ReadStats, natural_sort_key
from seqio_tasks.sources.files import DataFileError
from seqio_tasks.tfds_builders import CODEPARROT_NAME, TEXT_CORPUS_NAME
from seqio_tasks.tfds_builders import VERSION as _VERSION

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
BEAM_MISSING = (
    "Beam generation was requested (a Beam runner or Beam options were given) but apache_beam "
    "is not importable. Install it in the environment that prepares the data: pip install "
    "'apache-beam[gcp]' (or the project's extra: pip install -e '.[beam]'); the plain-generator "
    "path needs neither.")
Example = tuple[str, dict[str, str]]


def beam_is_available() -> bool:
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        return False
    return True


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel


def list_files(root: str) -> list[str]:
    """Every file under ``root`` (local or ``gs://``), relative to it, in natural order."""
    base = epath.Path(root)
    found = []
    for directory, _, names in base.walk():
        for name in names:
            found.append((directory / name).relative_to(base).as_posix())
    return sorted(found, key=natural_sort_key)


def codeparrot_input_files(root: str) -> list[str]:
    """The shards under ``root`` that ``read_codeparrot`` would read from that directory."""
    files = [rel for rel in list_files(root)
             if any(fnmatch.fnmatch(rel.rsplit("/", 1)[-1], p)
                    for p in corpora.CODEPARROT_PATTERNS)]
    if not files:
        raise DataFileError(
            f"CodeParrot-clean: the manual dir {root} holds no files named like "
            f"{' or '.join(corpora.CODEPARROT_PATTERNS)}. {corpora.CODEPARROT_HOW_TO_GET} "
            f"Put them directly in {root} (or pass --manual_dir=THAT_DIRECTORY).")
    return files


def text_input_files(root: str, extensions: Sequence[str] | None = None) -> list[str]:
    """The files under ``root`` that ``read_text_dir`` would read (same checks and errors)."""
    return corpora.select_text_files(root, list_files(root), extensions, ReadStats())


# --- per-file readers (module level: Beam pickles them by reference) -----------------------


def codeparrot_examples(rel: str, *, root: str, split: str, validation_fraction: float,
                        stats: ReadStats | None = None) -> Iterator[Example]:
    """(key, example) of the documents of shard ``rel`` that fall in ``split``."""
    for lineno, doc in corpora.codeparrot_file_documents(_join(root, rel), stats=stats):
        if corpora.split_by_hash(doc["path"], validation_fraction) == split:
            key = f"{rel}:{lineno}"
            yield key, {**doc, "id": key}


def text_examples(rel: str, *, root: str, split: str, validation_fraction: float,
                  txt_documents: str, text_field: str, stats: ReadStats | None = None
                  ) -> Iterator[Example]:
    """(key, example) of the documents of file ``rel`` that fall in ``split``."""
    for doc in corpora.text_file_documents(root, rel, txt_documents, text_field, stats):
        if corpora.split_by_hash(doc["id"], validation_fraction) == split:
            yield doc["id"], doc


def _read_counting(rel: str, read: Callable[..., Iterator[Example]], split: str
                   ) -> Iterator[Example]:
    """One Beam work item: a file's examples, with what was read and skipped as counters."""
    beam = tfds.core.lazy_imports.apache_beam
    stats = ReadStats()
    examples = 0
    for example in read(rel, stats=stats):
        examples += 1
        yield example
    beam.metrics.Metrics.counter("codereason", f"{split} examples").inc(examples)
    for reason, n in stats.skipped.items():
        beam.metrics.Metrics.counter("codereason", f"{split} skipped {reason}").inc(n)


def _generate(relpaths: Sequence[str], read: Callable[..., Iterator[Example]], split: str,
              where: str) -> Iterator[Example]:
    stats = ReadStats()
    examples = 0
    for rel in relpaths:
        for example in read(rel, stats=stats):
            examples += 1
            yield example
    log.info("%s [%s]: %d examples; %s", where, split, examples, stats.summary("read"))
    if not examples:
        raise DataFileError(
            f"{where}: no document of the {stats.documents} read falls in the {split!r} split "
            f"(split_by_hash sends about {corpora.HASH_VALIDATION_FRACTION:.1%} of the keys to "
            "validation): the input is too small for this split.")


class _HashSplitCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared machinery: manual dir, input listing, split by hash, generator or Beam."""

    VERSION = tfds.core.Version(_VERSION)
    RELEASE_NOTES = {_VERSION: "Initial release: the corpus split by a stable hash (0.5% "
                              "validation), one example per document with a stable id."}
    _use_beam = False

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 resolves the code path of a builder defined in a package through
        # `importlib_resources`, which it declares only for Python < 3.9; the file is enough.
        return epath.Path(inspect.getfile(cls))

    def _download_and_prepare(self, dl_manager, download_config):
        # The builder cannot see the DownloadConfig in `_split_generators`: remember here
        # whether the caller asked for Beam (as TFDS itself decides whether to build a pipeline).
        self._use_beam = (download_config.beam_runner is not None
                          or download_config.beam_options is not None)
        if self._use_beam and not beam_is_available():
            raise ImportError(BEAM_MISSING)
        return super()._download_and_prepare(dl_manager, download_config)

    def _manual_root(self, dl_manager) -> str:
        try:
            return str(dl_manager.manual_dir)
        except AssertionError as err:  # TFDS: missing/empty manual dir, with our instructions
            raise DataFileError(f"{self.name}: {err}") from None

    def _input_files(self, root: str) -> list[str]:
        raise NotImplementedError

    def _reader(self, root: str, split: str) -> Callable[..., Iterator[Example]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        root = self._manual_root(dl_manager)
        relpaths = self._input_files(root)
        log.info("%s: %d input files under %s", self.name, len(relpaths), root)
        return {split: self._generate_examples(relpaths=relpaths,
                                               read=self._reader(root, split), split=split)
                for split in SPLITS}

    def _generate_examples(self, relpaths: Sequence[str], read: Callable[..., Iterator[Example]],
                           split: str):
        if self._use_beam:
            beam = tfds.core.lazy_imports.apache_beam
            return (beam.Create(list(relpaths))
                    | "DistributeFiles" >> beam.Reshuffle()
                    | "ReadFiles" >> beam.FlatMap(_read_counting, read=read, split=split))
        return _generate(relpaths, read, split, self.name)


class CodereasonCodeparrot(_HashSplitCorpus):
    """CodeParrot-clean (the paper's ~50 GB of Python), from its released .json.gz shards."""

    name = CODEPARROT_NAME
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"{corpora.CODEPARROT_HOW_TO_GET} Put the shards (file-000000000001.json.gz, ...; "
        ".jsonl and .jsonl.gz also work; subdirectories are searched too) in the manual dir, "
        "e.g. --manual_dir=$CODEREASON_DATA_DIR/codeparrot-clean (may be gs://...).")

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return self.dataset_info_from_configs(
            description=(
                "codeparrot/codeparrot-clean as read by seqio_tasks.sources.corpora."
                "read_codeparrot (no licence filter; `license` is kept): `text` = content, "
                "`path` = repo_name/path (the split key), `id` = SHARD:LINE."),
            features=tfds.features.FeaturesDict(
                {"text": text, "id": text, "path": text, "license": text}),
            homepage="https://huggingface.co/datasets/codeparrot/codeparrot-clean",
        )

    def _input_files(self, root: str) -> list[str]:
        return codeparrot_input_files(root)

    def _reader(self, root, split):
        return functools.partial(codeparrot_examples, root=root, split=split,
                                 validation_fraction=corpora.HASH_VALIDATION_FRACTION)


@dataclasses.dataclass(eq=False)
class TextCorpusConfig(tfds.core.BuilderConfig):
    """``read_text_dir``'s options: .txt as whole files or paragraphs, the JSON text field, and
    the file kinds to read (None: all supported kinds, any other kind is an error)."""

    txt_documents: str = "file"
    text_field: str = "text"
    extensions: tuple[str, ...] | None = None


def text_corpus_config(txt_documents: str = "file", text_field: str = "text",
                       extensions: Iterable[str] | None = None) -> TextCorpusConfig:
    """A config named after its options (``file``, ``paragraphs``, ``file-content``, ...)."""
    exts = None if extensions is None else tuple(sorted(
        e if e.startswith(".") else "." + e for e in extensions))
    corpora.check_text_options(txt_documents, exts)
    name = txt_documents
    if text_field != "text":
        name += "-" + re.sub(r"[^A-Za-z0-9_]", "_", text_field)
    if exts is not None:
        name += "-" + "_".join(e.lstrip(".").replace(".", "_") for e in exts)
    return TextCorpusConfig(
        name=name, txt_documents=txt_documents, text_field=text_field, extensions=exts,
        description=(f"read_text_dir(txt_documents={txt_documents!r}, text_field={text_field!r}"
                     f", extensions={exts!r})"))


class CodereasonTextCorpus(_HashSplitCorpus):
    """A text corpus directory (.txt, .jsonl, .jsonl.gz), as ``read_text_dir`` reads it."""

    name = TEXT_CORPUS_NAME
    BUILDER_CONFIGS = [text_corpus_config("file"), text_corpus_config("paragraphs")]
    DEFAULT_CONFIG_NAME = "file"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put your text corpus (any tree of .txt, .jsonl, .jsonl.gz files; JSON-lines records "
        "carry the text in the field 'text' unless the config says otherwise) in the manual "
        "dir, e.g. --manual_dir=$CODEREASON_DATA_DIR/text_corpus (may be gs://...). Any other "
        "file kind is an error unless the config names the kinds to read.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "A text corpus directory as read by seqio_tasks.sources.corpora.read_text_dir: "
                "`text`, and `id` = relpath (a .txt file), relpath#N (paragraph N) or "
                "relpath:LINE (a JSON-lines record), the split key."),
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "id": tfds.features.Text()}),
        )

    def _input_files(self, root: str) -> list[str]:
        return text_input_files(root, self.builder_config.extensions)

    def _reader(self, root, split):
        config = self.builder_config
        return functools.partial(text_examples, root=root, split=split,
                                 validation_fraction=corpora.HASH_VALIDATION_FRACTION,
                                 txt_documents=config.txt_documents,
                                 text_field=config.text_field)


BUILDERS: dict[str, type[_HashSplitCorpus]] = {
    "codeparrot": CodereasonCodeparrot, "text_corpus": CodereasonTextCorpus}


def make_builder(dataset: str, data_dir: str, *, config: Any = None,
                 file_format: str | None = None) -> _HashSplitCorpus:
    """The builder of ``dataset`` (``codeparrot`` or ``text_corpus``) writing under data_dir."""
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(BUILDERS)}.")
    kwargs: dict[str, Any] = {"data_dir": data_dir}
    if config is not None:
        # TFDS refuses a config object named like one of the class's own: pass the name then
        # (names are derived from the options, so the same name means the same options).
        known = {c.name for c in BUILDERS[dataset].BUILDER_CONFIGS}
        kwargs["config"] = config.name if getattr(config, "name", None) in known else config
    if file_format is not None:
        kwargs["file_format"] = file_format
    return BUILDERS[dataset](**kwargs)
