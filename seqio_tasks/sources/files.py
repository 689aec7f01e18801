"""Where local dataset copies live, and errors that say exactly what to put where.

Every reader takes an explicit path (tests pass fixtures) or resolves one under the data root:
the directory in $CODEREASON_DATA_DIR, else ~/codereason_data. Nothing here downloads.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from typing import Any, Iterator


class DataFileError(ValueError):
    """A dataset file is missing or malformed; the message names the file, line and field."""


class RowError(DataFileError):
    """One record cannot be used; ``reason`` is the short name it is counted under when
    a reader skips such records (see ``seqio_tasks.sources.rows``)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# A reader runs inside a tf.data pipeline (SeqIO's FunctionDataSource), which hands its
# exception back as a TensorFlow error whose message holds "DataFileError: <message>".
_WRAPPED = re.compile(r"\b(DataFileError|RowError|FileNotFoundError): (.+)$", re.M)


def unwrap_reader_error(err: BaseException) -> BaseException | None:
    """The reader's own error inside a TensorFlow error raised by a pipeline, or None."""
    matches = _WRAPPED.findall(str(err))  # the innermost (last) is the reader's own
    if not matches:
        return None
    kind, message = matches[-1][0], matches[-1][1].strip()
    return FileNotFoundError(message) if kind == "FileNotFoundError" else DataFileError(message)


MISSING_FIELD = "missing field"
WRONG_FIELD_TYPE = "wrong field type"


def data_root() -> str:
    return os.path.expanduser(os.environ.get("CODEREASON_DATA_DIR", "~/codereason_data"))


def require_file(path: str | None, default_relpath: str, dataset: str, how_to_get: str) -> str:
    """Return ``path`` (or data_root()/default_relpath) if it exists, else raise with a recipe."""
    resolved = path or os.path.join(data_root(), default_relpath)
    if not os.path.exists(resolved):
        raise DataFileError(
            f"{dataset}: {resolved} does not exist. {how_to_get} Put the file at {resolved} "
            f"(or set $CODEREASON_DATA_DIR so that {default_relpath} lies under it, or pass "
            "the path explicitly).")
    return resolved


def is_url(path: str) -> bool:
    """``gs://bucket/...`` and other ``scheme://`` paths (read through etils.epath)."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def open_text(path: str):
    """Open a text file, transparently gunzipping ``*.gz``.

    Local paths use the built-in ``open``; ``gs://...`` and other URLs go through
    ``etils.epath`` (TensorFlow's file systems), so the TFDS builders can read a corpus from
    Cloud Storage on Beam workers.
    """
    if is_url(path):
        return _open_url_text(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _open_url_text(path: str):
    from etils import epath  # installed with tensorflow-datasets

    raw = epath.Path(path).open("rb")
    if not path.endswith(".gz"):
        return io.TextIOWrapper(raw, encoding="utf-8")

    class _Gzip(gzip.GzipFile):  # closes the remote file with the gzip stream
        def close(self):
            try:
                super().close()
            finally:
                raw.close()

    return io.TextIOWrapper(_Gzip(fileobj=raw, mode="rb"), encoding="utf-8")


def iter_json_lines(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSON-lines file (.gz ok)."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFileError(f"{path}:{lineno}: not valid JSON ({err.msg}); expected one "
                                    "JSON object per line.") from None
            if not isinstance(obj, dict):
                raise DataFileError(f"{path}:{lineno}: expected a JSON object, got "
                                    f"{type(obj).__name__}.")
            yield lineno, obj


def load_json(path: str) -> Any:
    with open_text(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg}).") from None


def field(record: dict[str, Any], name: str, types: type | tuple[type, ...], where: str) -> Any:
    """``record[name]`` checked for presence and type; ``where`` is 'file:line' for the message."""
    if name not in record:
        raise RowError(f"{where}: missing field {name!r} (fields present: {sorted(record)}).",
                       MISSING_FIELD)
    value = record[name]
    if not isinstance(value, types):
        expected = types.__name__ if isinstance(types, type) else "/".join(
            t.__name__ for t in types)
        raise RowError(f"{where}: field {name!r} should be {expected}, got "
                       f"{type(value).__name__} ({str(value)[:60]!r}).", WRONG_FIELD_TYPE)
    return value
