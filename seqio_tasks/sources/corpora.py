"""Pre-training corpora as plain iterators of ``{"text": str, ...}`` documents.

Readers take local copies only (nothing downloads) and always visit files in one fixed order,
so a corpus read twice gives the same documents in the same sequence. Anything they leave out
(licence filter, empty documents, file kinds not asked for) is counted in a ``ReadStats`` and
logged, never dropped silently.

Document schemas (every document of one reader has the same keys, as tf.data needs):

* ``read_codeparrot``: ``{"text": file content, "path": "repo_name/path", "license": str}``
* ``read_text_dir``:   ``{"text": str, "id": str}``; ``id`` is ``relpath`` (a whole .txt
  file), ``relpath#N`` (paragraph N of a .txt, from 0) or ``relpath:LINE`` (a JSON-lines
  record, from 1), where ``relpath`` is relative to the corpus directory. It is stable across
  runs, so it is a good key for ``split_by_hash``.
* ``read_tfds_text``:  ``{"text": str}``
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import glob
import hashlib
import logging
import os
import re
from typing import Any, Collection, Iterator, Sequence

from seqio_tasks.sources.files import DataFileError, data_root, field, iter_json_lines, \
    open_text, require_file

Document = dict[str, str]
log = logging.getLogger(__name__)

CODEPARROT_HOW_TO_GET = (
    "Download the data files (file-000000000001.json.gz, ...) of the Hugging Face dataset "
    "codeparrot/codeparrot-clean (or its -train / -valid splits) into one directory.")
CODEPARROT_PATTERNS = ("*.json.gz", "*.jsonl", "*.jsonl.gz")

# Licence values of the GitHub BigQuery dump that allow reuse without copyleft terms. The exact
# value set of codeparrot-clean's `license` column is not documented; values compare in lower case.
PERMISSIVE_LICENSES = frozenset({
    "mit", "apache-2.0", "bsd-2-clause", "bsd-3-clause", "isc", "cc0-1.0", "unlicense"})

TEXT_EXTENSIONS = (".jsonl.gz", ".jsonl", ".txt")  # longest first, for suffix matching
TXT_DOCUMENT_MODES = ("file", "paragraphs")


@dataclasses.dataclass
class ReadStats:
    """What a reader saw and what it left out (reason -> count), so filtering is visible."""

    files: int = 0
    documents: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def summary(self, name: str) -> str:
        skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()))
        return (f"{name}: {self.documents} documents from {self.files} files"
                + (f"; skipped {skipped}" if skipped else ""))


# The last complete read of each corpus in this process (name -> stats), so that a run can
# report what the readers' rules left out (licence filter, empty documents, file kinds).
LAST_READS: dict[str, ReadStats] = {}


def _finished(name: str, stats: ReadStats) -> None:
    log.info(stats.summary(name))
    LAST_READS[name] = stats


def natural_sort_key(path: str) -> list[Any]:
    """Name order with digit runs compared as numbers (``x_2`` before ``x_10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _walk_files(directory: str) -> list[str]:
    """Every file under ``directory`` (recursive), as relative paths in natural order."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found, key=natural_sort_key)


def resolve_data_files(spec: str | Sequence[str] | None, *, default_relpath: str, dataset: str,
                       how_to_get: str, dir_patterns: Sequence[str]) -> list[str]:
    """Turn a file, directory, glob or list of files into a non-empty file list in fixed order.

    Directories and globs come out in natural name order, a list as given. ``None`` means ``data_root()/default_relpath``. In a directory (searched recursively) only
    names matching one of ``dir_patterns`` are taken: data-set downloads carry READMEs and
    metadata next to the data files.
    """
    if spec is None or isinstance(spec, str):
        if spec is not None and any(c in spec for c in "*?["):
            files = sorted(glob.glob(spec, recursive=True), key=natural_sort_key)
            if not files:
                raise DataFileError(f"{dataset}: no files match {spec}. {how_to_get}")
            return files
        path = require_file(spec, default_relpath, dataset, how_to_get)
        if not os.path.isdir(path):
            return [path]
        files = [os.path.join(path, rel) for rel in _walk_files(path)
                 if any(fnmatch.fnmatch(os.path.basename(rel), p) for p in dir_patterns)]
        if not files:
            raise DataFileError(f"{dataset}: {path} holds no files named like "
                                f"{' or '.join(dir_patterns)}. {how_to_get}")
        return files
    files = list(spec)
    if not files:
        raise DataFileError(f"{dataset}: an empty list of files was given.")
    missing = [path for path in files if not os.path.exists(path)]
    if missing:
        raise DataFileError(f"{dataset}: {', '.join(missing)} does not exist. {how_to_get}")
    return files


# ----------------------------------------------------------------------------- CodeParrot


def read_codeparrot(paths: str | Sequence[str] | None = None, *,
                    licenses: Collection[str] | None = None,
                    stats: ReadStats | None = None) -> Iterator[Document]:
    """Python files of codeparrot-clean (gzipped JSON lines), in sorted file order.

    ``paths``: a shard, a directory of shards, a glob or a list; ``None`` means
    ``data_root()/codeparrot-clean``. ``licenses`` keeps only files whose ``license`` value is
    in it (case-insensitive, e.g. ``PERMISSIVE_LICENSES``); the others are counted in
    ``stats.skipped`` as ``"license=<value>"`` and logged.
    """
    files = resolve_data_files(paths, default_relpath="codeparrot-clean",
                               dataset="CodeParrot-clean", how_to_get=CODEPARROT_HOW_TO_GET,
                               dir_patterns=CODEPARROT_PATTERNS)
    keep = None if licenses is None else frozenset(lic.lower() for lic in licenses)
    return _iter_codeparrot(files, keep, stats if stats is not None else ReadStats())


def _iter_codeparrot(files: list[str], keep: frozenset[str] | None,
                     stats: ReadStats) -> Iterator[Document]:
    for path in files:
        for _, document in codeparrot_file_documents(path, keep, stats):
            yield document
    _finished("CodeParrot-clean", stats)


def codeparrot_file_documents(path: str, keep: Collection[str] | None = None,
                              stats: ReadStats | None = None
                              ) -> Iterator[tuple[int, Document]]:
    """(line number, document) for the records of one codeparrot-clean shard, in file order.

    The per-file step of ``read_codeparrot`` (also used by the TFDS builder): ``keep`` is a
    set of lower-case licence values or None, ``stats`` counts the file, documents and skips.
    """
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    for lineno, record in iter_json_lines(path):
        where = f"{path}:{lineno}"
        content = field(record, "content", str, where)
        repo_name = field(record, "repo_name", str, where)
        file_path = field(record, "path", str, where)
        license_ = field(record, "license", str, where)
        if keep is not None and license_.lower() not in keep:
            stats.skipped[f"license={license_}"] += 1
            continue
        stats.documents += 1
        yield lineno, {"text": content, "path": f"{repo_name}/{file_path}", "license": license_}


# ------------------------------------------------------------------------ text directories


def split_paragraphs(text: str) -> list[str]:
    """Split on blank (or whitespace-only) lines, as the paper's preprocessing split documents.

    Paragraph text is kept verbatim (indentation included); empty paragraphs are dropped.
    """
    return [p for p in re.split(r"\n[ \t\r\f\v]*\n(?:[ \t\r\f\v]*\n)*", text) if p.strip()]


def _text_kind(name: str) -> str:
    for ext in TEXT_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return os.path.splitext(name)[1] or "(no extension)"


def read_text_dir(directory: str, *, txt_documents: str = "file", text_field: str = "text",
                  extensions: Collection[str] | None = None,
                  stats: ReadStats | None = None) -> Iterator[Document]:
    """Documents of a directory tree of .txt, .jsonl and .jsonl.gz files, in sorted order.

    ``txt_documents``: ``"file"`` makes each .txt one document, ``"paragraphs"`` makes each
    blank-line-separated paragraph one (the paper's packing unit). JSON-lines records give one
    document each from ``text_field``. A file of any other kind is an error, so that nothing is
    skipped unnoticed; ``extensions`` names the kinds to read and knowingly skips the rest
    (counted in ``stats.skipped``). Whitespace-only documents are skipped and counted.
    """
    check_text_options(txt_documents, extensions)
    if not os.path.isdir(directory):
        raise DataFileError(f"text corpus: {directory} is not a directory.")
    stats = stats if stats is not None else ReadStats()
    selected = select_text_files(directory, _walk_files(directory), extensions, stats)
    return _iter_text_dir(directory, selected, txt_documents, text_field, stats)


def check_text_options(txt_documents: str, extensions: Collection[str] | None) -> set[str]:
    """Validate ``read_text_dir``'s options; returns the file kinds to read."""
    if txt_documents not in TXT_DOCUMENT_MODES:
        raise ValueError(f"txt_documents={txt_documents!r}; choose one of {TXT_DOCUMENT_MODES}.")
    if extensions is None:
        return set(TEXT_EXTENSIONS)
    wanted = {ext if ext.startswith(".") else "." + ext for ext in extensions}
    unsupported = sorted(wanted - set(TEXT_EXTENSIONS))
    if unsupported:
        raise ValueError(f"extensions {unsupported} cannot be read; supported: "
                         f"{', '.join(TEXT_EXTENSIONS)}.")
    return wanted


def select_text_files(directory: str, relpaths: Sequence[str],
                      extensions: Collection[str] | None, stats: ReadStats) -> list[str]:
    """The files of ``relpaths`` (all files under ``directory``, natural order) to read.

    Unknown kinds are an error when ``extensions`` is None, else skipped and counted.
    """
    wanted = check_text_options("file", extensions)
    if not relpaths:
        raise DataFileError(f"text corpus: {directory} contains no files.")
    if extensions is None:
        unknown: dict[str, list[str]] = collections.defaultdict(list)
        for rel in relpaths:
            if _text_kind(rel) not in wanted:
                unknown[_text_kind(rel)].append(rel)
        if unknown:
            listing = "; ".join(f"{kind}: {', '.join(names[:3])}"
                                + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
                                for kind, names in sorted(unknown.items()))
            raise DataFileError(
                f"text corpus: {directory} holds files this reader does not understand "
                f"({listing}). Supported: {', '.join(TEXT_EXTENSIONS)}. Remove them, or pass "
                "extensions=(...) to read only the kinds named there and skip the others.")
    selected = []
    for rel in relpaths:
        if _text_kind(rel) in wanted:
            selected.append(rel)
        else:
            stats.skipped[f"file {_text_kind(rel)}"] += 1
    if not selected:
        raise DataFileError(f"text corpus: {directory} has no {'/'.join(sorted(wanted))} files.")
    return selected


def _iter_text_dir(directory: str, relpaths: list[str], txt_documents: str, text_field: str,
                   stats: ReadStats) -> Iterator[Document]:
    for rel in relpaths:
        yield from text_file_documents(directory, rel, txt_documents, text_field, stats)
    _finished(f"text corpus {directory}", stats)


def text_file_documents(directory: str, rel: str, txt_documents: str = "file",
                        text_field: str = "text", stats: ReadStats | None = None
                        ) -> Iterator[Document]:
    """``{"text", "id"}`` documents of the file ``rel`` under ``directory``, in file order.

    The per-file step of ``read_text_dir`` (also used by the TFDS builder).
    """
    stats = stats if stats is not None else ReadStats()
    path = os.path.join(directory, rel)
    stats.files += 1
    if rel.endswith(".txt"):
        with open_text(path) as f:
            try:
                text = f.read()
            except UnicodeDecodeError as err:
                raise DataFileError(f"{path}: not UTF-8 text ({err.reason} at byte "
                                    f"{err.start}).") from None
        if txt_documents == "paragraphs":
            docs = [(f"{rel}#{i}", p) for i, p in enumerate(split_paragraphs(text))]
        else:
            docs = [(rel, text)]
    else:
        docs = ((f"{rel}:{lineno}", field(record, text_field, str, f"{path}:{lineno}"))
                for lineno, record in iter_json_lines(path))
    for doc_id, text in docs:
        if not text.strip():
            stats.skipped["empty document"] += 1
            continue
        stats.documents += 1
        yield {"text": text, "id": doc_id}


# ------------------------------------------------------------------------------------ TFDS


def default_tfds_data_dir() -> str:
    """$CODEREASON_TFDS_DIR (may be gs://...), else data_root()/tensorflow_datasets."""
    return os.environ.get("CODEREASON_TFDS_DIR") or os.path.join(data_root(),
                                                                  "tensorflow_datasets")


def read_tfds_text(name: str, split: str, data_dir: str | None = None,
                   text_field: str = "text") -> Iterator[Document]:
    """``text_field`` of a prepared TFDS data set, in stored order; never downloads.

    ``data_dir`` defaults to ``data_root()/tensorflow_datasets``. If the data set has not been
    prepared there, the error gives the ``tfds build`` command that prepares it.
    """
    import tensorflow_datasets as tfds  # heavy (imports TensorFlow): only when used

    data_dir = data_dir or default_tfds_data_dir()
    manual_dir = os.path.join(data_dir, "downloads", "manual")
    recipe = (f"Prepare it once with `tfds build {name} --data_dir={data_dir}` (if the data set "
              f"needs a manual download, put its files in {manual_dir} first and add "
              f"`--manual_dir={manual_dir}`), or in Python: tfds.builder({name!r}, "
              f"data_dir={data_dir!r}).download_and_prepare(download_config="
              f"tfds.download.DownloadConfig(manual_dir={manual_dir!r})). This reader never "
              "downloads.")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise DataFileError(f"TFDS {name}: no such registered builder and no prepared data "
                            f"under {data_dir}. Check the name (tfds.list_builders()). "
                            f"{recipe}") from None
    if not builder.is_prepared():
        instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        extra = f" Manual download instructions: {instructions.strip()}" if instructions else ""
        raise DataFileError(f"TFDS {name}: not prepared under {data_dir} (expected "
                            f"{builder.data_dir}). {recipe}{extra}")
    splits = builder.info.splits
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in splits:
            raise DataFileError(f"TFDS {name}: no split {base!r} in {builder.data_dir}; "
                                f"splits: {sorted(splits)}.")
    features = builder.info.features
    if text_field not in features:
        raise DataFileError(f"TFDS {name}: no feature {text_field!r}; features: "
                            f"{sorted(features)}. Pass text_field=.")
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    return _iter_tfds(tfds.as_numpy(dataset), f"TFDS {name}[{split}]", text_field)


def _iter_tfds(examples, where: str, text_field: str) -> Iterator[Document]:
    for index, example in enumerate(examples):
        value = example[text_field]
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise DataFileError(f"{where} example {index}: field {text_field!r} is not "
                                    "UTF-8 text.") from None
        if not isinstance(value, str):
            raise DataFileError(f"{where} example {index}: field {text_field!r} should be "
                                f"text, got {type(value).__name__}.")
        yield {"text": value}


# ---------------------------------------------------------------------------------- splits

# The share of keys that split_by_hash sends to validation in the registered tasks and the TFDS
# builders of sources without a released split (both must agree, so it lives here).
HASH_VALIDATION_FRACTION = 0.005


def split_by_hash(key: str, validation_fraction: float, seed: int = 0) -> str:
    """``"train"`` or ``"validation"`` for ``key``, the same on every machine and run.

    For sources without a held-out split. Uses SHA-256 of ``seed`` and ``key`` (Python's
    ``hash()`` is salted per process); about ``validation_fraction`` of keys go to validation.
    """
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction={validation_fraction} is not in [0, 1].")
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    return "validation" if position < validation_fraction else "train"
