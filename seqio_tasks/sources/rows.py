"""What a benchmark reader does with a record it cannot score.

Published benchmark files contain such records: JEC-QA lines whose answer list is empty or
holds something that is not an option letter, OCNLI lines without a majority label, rows with
undecodable bytes. A reader validates each record inside ``RowLog.row``; a record that fails
raises :class:`RowError` with a short reason, and the file's :class:`RowLog` either skips it,
counting it by reason with where it was (the default), or stops at it with the file and line
(``ReadPolicy.strict``). When the file has been read, the skipped share is checked against
``ReadPolicy.max_skipped_fraction``, so that a wrong file is never scored on a sliver of its
rows, and one warning line names the file, the counts and the first few places.

Records dropped by a rule of the paper's own loaders (ScienceQA items with an image, say) are
not defects: they are counted apart, as ``filtered``, and do not count towards the threshold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import unicodedata
from typing import Any, Iterator

from seqio_tasks.sources.files import (MISSING_FIELD, WRONG_FIELD_TYPE, DataFileError,
                                       RowError, is_url)

logger = logging.getLogger(__name__)

# Reasons a record cannot be scored (the keys of ``Records.skipped``).
EMPTY_ANSWER = "empty answer"
NOT_A_LETTER = "answer not a letter"
NOT_AN_OPTION = "answer not an option"
OPTION_COUNT = "wrong number of options"
UNDECODABLE = "undecodable text"
DUPLICATE_ID = "duplicate id"
NOT_JSON = "not valid JSON"
NO_GOLD_LABEL = "no gold label"
NO_TESTS = "no tests"
BAD_ID = "id out of range"
__all__ = ["EMPTY_ANSWER", "NOT_A_LETTER", "NOT_AN_OPTION", "OPTION_COUNT", "UNDECODABLE",
           "DUPLICATE_ID", "NOT_JSON", "NO_GOLD_LABEL", "NO_TESTS", "BAD_ID", "MISSING_FIELD",
           "WRONG_FIELD_TYPE", "ReadPolicy", "Records", "RowError", "RowLog"]

MAX_LISTED = 5  # places kept per reason, for the warning and the results file


@dataclasses.dataclass(frozen=True)
class ReadPolicy:
    """``strict``: the first record that cannot be scored is an error naming ``file:line``.
    ``max_skipped_fraction``: more skipped records than this share of a file is an error."""
    strict: bool = False
    max_skipped_fraction: float = 0.05

    def __post_init__(self):
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction should be in [0, 1], got "
                             f"{self.max_skipped_fraction!r}.")


_POLICY = [ReadPolicy()]


def current_policy() -> ReadPolicy:
    return _POLICY[-1]


@contextlib.contextmanager
def read_policy(policy: ReadPolicy) -> Iterator[ReadPolicy]:
    """Readers called without a policy (through the SeqIO tasks) use ``policy`` inside."""
    _POLICY.append(policy)
    try:
        yield policy
    finally:
        _POLICY.pop()


class Records(list):
    """A list of normalized records plus what was left out of it and why.

    ``skipped``: reason -> records that cannot be scored; ``skipped_at``: reason -> the first
    few places (``line 212``, ``record 7``); ``filtered``: reason -> records dropped by a rule
    of the paper's loader; ``source``: the file read.
    """

    def __init__(self, items=(), skipped: dict[str, int] | None = None,
                 skipped_at: dict[str, list[str]] | None = None,
                 filtered: dict[str, int] | None = None, source: str = ""):
        super().__init__(items)
        self.skipped = dict(skipped or {})
        self.skipped_at = dict(skipped_at or {})
        self.filtered = dict(filtered or {})
        self.source = source

    def select(self, keep) -> "Records":
        """The records for which ``keep(record)`` holds, with the same counts (a split chosen
        from a file whose every record was checked, duplicates across splits included)."""
        return Records([r for r in self if keep(r)], self.skipped, self.skipped_at,
                       self.filtered, self.source)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> dict[str, Any]:
        """The counts as they go into a results file."""
        return {"source": self.source, "rows": len(self), "skipped": dict(self.skipped),
                "skipped_at": dict(self.skipped_at), "filtered": dict(self.filtered)}


def describe_counts(counts: dict[str, int]) -> str:
    """``empty answer 3, answer not a letter 2`` (largest first)."""
    return ", ".join(f"{reason} {n}" for reason, n in
                     sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class RowLog:
    """The records of one file being read: kept, skipped by reason, filtered by rule."""

    def __init__(self, path: str, policy: ReadPolicy | None = None):
        self.path = path
        self.policy = policy or current_policy()
        self.records: list[dict[str, Any]] = []
        self.skipped: dict[str, int] = {}
        self.skipped_at: dict[str, list[str]] = {}
        self.filtered: dict[str, int] = {}
        self._ids: set[Any] = set()

    def where(self, location: int | str) -> str:
        """``path:12`` for a line number, ``path: record 3`` for anything else."""
        return f"{self.path}:{location}" if isinstance(location, int) else \
            f"{self.path}: {location}"

    @contextlib.contextmanager
    def row(self, location: int | str) -> Iterator[str]:
        """Validate one record inside; a RowError skips it (or, strict, stops the read)."""
        where = self.where(location)
        try:
            yield where
        except RowError as err:
            self.skip(err, location)

    def skip(self, err: RowError, location: int | str) -> None:
        if self.policy.strict:
            raise DataFileError(f"{err} [strict mode: fix or remove this record, or evaluate "
                                f"without --strict to skip and count such records]") from None
        self.skipped[err.reason] = self.skipped.get(err.reason, 0) + 1
        places = self.skipped_at.setdefault(err.reason, [])
        if len(places) < MAX_LISTED:
            places.append(f"line {location}" if isinstance(location, int) else str(location))

    def keep(self, record: dict[str, Any], record_id: Any, where: str) -> None:
        """Add a validated record; a second record with the same id is a row error."""
        if record_id in self._ids:
            raise RowError(f"{where}: id {record_id!r} was already used by an earlier record.",
                           DUPLICATE_ID)
        self._ids.add(record_id)
        self.records.append(record)

    def filter(self, reason: str) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + 1

    def finish(self, warn: bool = True) -> Records:
        """The records, after the threshold check; warns once if any were skipped."""
        records = Records(self.records, self.skipped, self.skipped_at, self.filtered,
                          self.path)
        skipped = records.num_skipped
        total = skipped + len(records)
        if skipped:
            places = "; ".join(f"{reason} at {', '.join(at)}"
                               for reason, at in self.skipped_at.items())
            if skipped > self.policy.max_skipped_fraction * total:
                raise DataFileError(
                    f"{self.path}: {skipped} of {total} records ({skipped / total:.1%}) cannot "
                    f"be scored ({describe_counts(self.skipped)}; {places}), more "
                    f"than the {self.policy.max_skipped_fraction:.0%} allowed. Is this the "
                    "right file, in the benchmark's published format? If it is, raise "
                    "EvalConfig.max_skipped_fraction.")
            if warn:
                logger.warning("%s: skipped %d of %d records that cannot be scored (%s): %s",
                               self.path, skipped, total, describe_counts(self.skipped), places)
        if not records and total:
            raise DataFileError(f"{self.path}: none of its {total} records can be scored.")
        if self.filtered:
            logger.info("%s: kept %d records, filtered by rule: %s", self.path, len(records),
                        describe_counts(self.filtered))
        return records


# ----------------------------------------------------------------------------- text and JSON

def _open_binary(path: str):
    if is_url(path):
        from etils import epath  # installed with tensorflow-datasets

        raw = epath.Path(path).open("rb")
        return gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without the line end) of every non-blank line."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield lineno, raw


def json_line(raw: bytes, where: str) -> dict[str, Any]:
    """One JSON-lines record; bad bytes, bad JSON or a non-object are row errors."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RowError(f"{where}: not UTF-8 text (byte {err.start}: "
                       f"{raw[err.start:err.start + 4]!r}).", UNDECODABLE) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise RowError(f"{where}: not valid JSON ({err.msg}); expected one JSON object per "
                       "line.", NOT_JSON) from None
    if not isinstance(obj, dict):
        raise RowError(f"{where}: expected a JSON object, got {type(obj).__name__}.",
                       WRONG_FIELD_TYPE)
    return obj


def load_json_document(path: str) -> Any:
    """A whole-file JSON document whose undecodable bytes are kept as lone surrogates, so that
    :func:`check_decodable` can skip the one record holding them instead of the file."""
    with _open_binary(path) as f:
        text = f.read().decode("utf-8-sig", errors="surrogateescape")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg}).") from None


def _undecodable(value: Any) -> bool:
    if isinstance(value, str):
        return any("\udc80" <= c <= "\udcff" for c in value)
    if isinstance(value, dict):
        return any(_undecodable(k) or _undecodable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_undecodable(v) for v in value)
    return False


def check_decodable(value: Any, where: str) -> None:
    if _undecodable(value):
        raise RowError(f"{where}: holds bytes that are not UTF-8 text.", UNDECODABLE)


def normalize_letter(value: Any) -> str | None:
    """An option letter as written in the published files: ``A``, ``a``, full-width ``Ａ``,
    with surrounding whitespace; None for anything else (``。``, ``AB``, ``1``)."""
    if not isinstance(value, str):
        return None
    letter = unicodedata.normalize("NFKC", value).strip().upper()
    return letter if len(letter) == 1 and "A" <= letter <= "Z" else None


def option_index(value: Any, n_options: int, name: str, where: str) -> int:
    """The index of a gold option letter among ``n_options``; row errors otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"{where}: field {name!r} is empty.", EMPTY_ANSWER)
    letter = normalize_letter(value)
    if letter is None:
        raise RowError(f"{where}: field {name!r} should be an option letter, got {value!r}.",
                       NOT_A_LETTER)
    index = ord(letter) - ord("A")
    if index >= n_options:
        raise RowError(f"{where}: field {name!r} is {value!r}, but there are only "
                       f"{n_options} options.", NOT_AN_OPTION)
    return index
