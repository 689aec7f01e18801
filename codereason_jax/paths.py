"""Run-directory paths: local paths and URLs (``gs://``, ...) through one small layer.

Every operation on a run directory (checkpoints, ``metrics.jsonl``, ``eval.jsonl``,
``config.gin``, evaluation results, converted weights) goes through this module, so a run
directory may be a local path or a URL that every host of a TPU slice shares:

- A local path (no ``scheme://``) is made absolute with ``os.path.abspath`` and handled with
  ``os`` and ``open``, exactly as before.
- A URL is kept as given (never ``abspath``-ed: ``gs://b/r`` must not become
  ``<cwd>/gs:/b/r``) and handled by ``etils.epath`` for the schemes it registers (``gs://``,
  ``s3://``, ``az://``, ``hf://``: the layer Orbax itself uses, through ``tf.io.gfile`` for
  ``gs://`` when TensorFlow is installed), or else by ``tf.io.gfile`` directly (TensorFlow's
  other file systems, e.g. the in-memory ``ram://`` the tests use).

Object stores cannot append to an object, so records of a run go through :class:`StepLog`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import time
import uuid
from typing import Any, Callable

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL.match(os.fspath(path)))


def resolve(path: str) -> str:
    """The canonical form of ``path``: absolute for a local path, the URL itself (without a
    trailing slash) for a URL."""
    path = os.fspath(path)
    if is_url(path):
        stripped = path.rstrip("/")
        return path if stripped.endswith(":") else stripped  # "gs://" itself stays
    return os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    """``base/part/...``: ``os.path.join`` for local paths, '/'-joined for URLs."""
    base = os.fspath(base)
    if is_url(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def dirname(path: str) -> str:
    """The parent of ``path`` (a URL's parent stays a URL)."""
    path = os.fspath(path)
    if is_url(path):
        return posixpath.dirname(path.rstrip("/"))
    return os.path.dirname(path)


class _GfilePath:
    """The few ``epath.Path`` methods this module uses, over ``tf.io.gfile``: for URL schemes
    that etils does not register (``ram://``, ``hdfs://``, ...)."""

    def __init__(self, path: str):
        import tensorflow as tf  # only for such URLs

        self._gfile = tf.io.gfile
        self._path = path

    def exists(self) -> bool:
        return self._gfile.exists(self._path)

    def is_dir(self) -> bool:
        return self._gfile.isdir(self._path)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        del parents, exist_ok  # makedirs: both
        self._gfile.makedirs(self._path)

    def iterdir(self) -> list[str]:
        return [posixpath.join(self._path, name.rstrip("/"))
                for name in self._gfile.listdir(self._path)]

    def read_bytes(self) -> bytes:
        with self._gfile.GFile(self._path, "rb") as f:
            return f.read()

    def write_bytes(self, data: bytes) -> None:
        # A fresh file renamed over the target: TF's ram:// does not truncate a file opened for
        # writing (GCS replaces the object), and where rename is atomic, so is the write.
        tmp = f"{self._path}.tmp-{uuid.uuid4().hex}"
        with self._gfile.GFile(tmp, "wb") as f:
            f.write(data)
        self._gfile.rename(tmp, self._path, overwrite=True)

    def unlink(self) -> None:
        self._gfile.remove(self._path)


def _url_path(url: str) -> Any:
    """An ``epath.Path`` for the URL, or a ``_GfilePath`` where etils has no such scheme."""
    from etils import epath

    try:
        return epath.Path(url)
    except KeyError:  # etils: unregistered scheme
        return _GfilePath(url)


def exists(path: str) -> bool:
    return _url_path(path).exists() if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _url_path(path).is_dir() if is_url(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    """Create ``path`` and its parents if missing (``exist_ok``)."""
    if is_url(path):
        _url_path(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    """The names (not paths) of the entries of a directory."""
    if is_url(path):
        return sorted(posixpath.basename(str(p).rstrip("/")) for p in _url_path(path).iterdir())
    return os.listdir(path)


def remove(path: str) -> None:
    """Delete one file."""
    if is_url(path):
        _url_path(path).unlink()
    else:
        os.remove(path)


def move(source: str, target: str) -> None:
    """Move a file or directory tree: a rename locally; on an object store (no directory
    rename), a copy of every file followed by the deletion of the source."""
    if not is_url(source):
        os.replace(source, target)
        return
    if not isdir(source):
        _url_path(target).write_bytes(read_bytes(source))
        remove(source)
        return
    makedirs(target)
    for name in listdir(source):
        move(join(source, name), join(target, name))
    import tensorflow as tf  # an emptied "directory" of an object store

    if tf.io.gfile.exists(source):
        tf.io.gfile.rmtree(source)


def read_bytes(path: str) -> bytes:
    if is_url(path):
        return _url_path(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole, replacing what was there, atomically: locally through
    a temporary file and ``os.replace``; an object store's object (``gs://``) changes only when
    its upload completes; other ``tf.io.gfile`` file systems through a temporary file renamed
    over the target."""
    if is_url(path):
        try:
            _url_path(path).write_bytes(text.encode("utf-8"))
        except Exception as err:  # noqa: BLE001 (the storage client's own error types)
            if not _storage_error(err):
                raise
            from codereason_jax.cli import RunWriteError

            raise RunWriteError(f"could not write {path}: {type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}. Fix the "
                                "bucket (space, permissions, quota) and rerun.") from err
        return
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)  # the old file is untouched; leave no half-written copy either
        from codereason_jax.cli import RunWriteError

        raise RunWriteError(f"could not write {path}: {err.strerror or err}. Free space (or fix "
                            "permissions or quota) and rerun.") from err


class StepLog:
    """A JSONL file of records keyed by ``"step"`` (``metrics.jsonl``, ``eval.jsonl``) that
    holds each step once across resumes.

    Opened with ``drop_from``, the first step a (resumed) run will write, it forgets the
    records of steps >= ``drop_from`` (the run recomputes them) and rewrites the file
    without them.

    - Local path: each record is appended to the file at once, as it always was.
    - URL (``gs://``, ...): an object store cannot append to an object (``tf.io.gfile``'s
      append on GCS downloads and re-uploads the whole object), so the records are kept in
      memory and :meth:`flush` rewrites the whole file. The trainer flushes before every
      checkpoint save, when ``flush_every_s`` have passed since the last flush (so the file
      can be watched: ``gcloud storage cat .../metrics.jsonl | tail``) and at exit. A process
      killed between flushes loses only records of steps after its newest resumable
      checkpoint (flushes precede saves), and the resumed run writes those again: the file
      still has each step once. A rewrite costs the file's size (a few hundred bytes a step).
    """

    def __init__(self, path: str, drop_from: int, flush_every_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.buffered = is_url(path)
        self.flush_every_s = flush_every_s
        self._clock = clock
        kept, dropped = [], False
        records, torn = read_step_log(path)
        if torn is not None:
            print(f"warning: {path}: dropped the partial last line ({torn[:60]!r}...), left by "
                  "an interrupted write.", flush=True)
            dropped = True
        for step, line in records:
            if step < drop_from:
                kept.append(line)
            else:
                dropped = True
        if dropped and drop_from == 0 and records:
            # Starting again from step 0 (every checkpoint unusable): the old records are
            # recomputed, but a copy stays beside the file.
            backup, n = f"{path}.before-restart", 1
            while exists(backup):
                n += 1
                backup = f"{path}.before-restart-{n}"
            write_text(backup, "".join(line for _, line in records))
        self._lines = kept if self.buffered else []
        self._pending = False
        if dropped:
            write_text(path, "".join(kept))
        self._last_flush = clock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        if not self.buffered:
            try:
                with open(self.path, "a") as f:
                    f.write(line)
            except OSError as err:
                from codereason_jax.cli import RunWriteError

                raise RunWriteError(
                    f"could not append to {self.path}: {err.strerror or err}. Free space (or fix "
                    "permissions or quota) and rerun the same command to resume.") from err
            return
        self._lines.append(line)
        self._pending = True
        if self._clock() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Write the records not yet written (a whole-file rewrite for a URL)."""
        if self.buffered and self._pending:
            write_text(self.path, "".join(self._lines))
            self._pending = False
        self._last_flush = self._clock()


def _storage_error(err: BaseException) -> bool:
    """Whether ``err`` comes from the storage (an OSError, or an error of TensorFlow's file
    systems or a cloud storage client) rather than from our code."""
    module = type(err).__module__ or ""
    return isinstance(err, OSError) or module.startswith(("tensorflow", "google"))


def read_step_log(path: str) -> tuple[list[tuple[int, str]], str | None]:
    """``([(step, line), ...], torn)`` of a JSONL step log (empty if there is none): ``torn``
    is a partial last line left by a kill mid-append (None if the file ends cleanly). Any
    other line that is not a record with a ``step`` is damage, not an interrupted write: a
    UserError naming ``path:line``."""
    if not exists(path):
        return [], None
    lines = read_bytes(path).decode("utf-8", "replace").splitlines(keepends=True)
    records, torn = [], None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = _record(line)
        if record is None and number == len(lines) and not line.endswith("\n"):
            torn = line
            continue
        if record is None:
            from codereason_jax.cli import UserError

            raise UserError(
                f"{path}:{number} is not a JSON record with a 'step' (a damaged log, not an "
                f"interrupted write): {line[:80]!r}. Repair or remove that line and rerun.")
        records.append((record["step"], line if line.endswith("\n") else line + "\n"))
    return records, torn


def _record(line: str) -> dict[str, Any] | None:
    """The JSON object of one log line with an integer ``step``, or None."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return None
    return record
