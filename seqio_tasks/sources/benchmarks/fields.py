"""Field checks shared by the benchmark readers: ids, string lists, option lists, JSON shapes.

Each check raises :class:`RowError` with the field's place and a skip reason, so that every
reader counts (or, in strict mode, stops at) a bad record the same way.
"""

from __future__ import annotations

from typing import Any

from seqio_tasks.sources.files import DataFileError, RowError, field
from seqio_tasks.sources.rows import OPTION_COUNT, load_json_document


def id_field(record: dict[str, Any], name: str, where: str) -> str:
    """An id field (str or int) as a stripped str: ids compare as text."""
    return str(field(record, name, (str, int), where)).strip()


def str_list_field(record: dict[str, Any], name: str, where: str) -> list[str]:
    """A list field whose items must all be str (options, tests, dialogue lines)."""
    values = field(record, name, list, where)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise RowError(f"{where}: field {name!r}[{i}] should be str, got "
                           f"{type(value).__name__} ({str(value)[:60]!r}).", "wrong field type")
    return list(values)


def option_texts(record: dict[str, Any], name: str, where: str, expected: int | None = None,
                 at_least: int = 2) -> list[str]:
    """A list of option texts: exactly ``expected`` of them, or at least ``at_least``."""
    options = str_list_field(record, name, where)
    if (expected is not None and len(options) != expected) or len(options) < at_least:
        want = expected if expected is not None else f"at least {at_least}"
        raise RowError(f"{where}: field {name!r} should have {want} options, got "
                       f"{len(options)}.", OPTION_COUNT)
    return options


def json_array(path: str) -> list[Any]:
    """A file that must hold one JSON array: anything else is a whole-file error."""
    data = load_json_document(path)
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON array, got {type(data).__name__}.")
    return data


def json_object(obj: Any, where: str) -> dict[str, Any]:
    """A record that must be a JSON object: anything else is one bad record."""
    if not isinstance(obj, dict):
        raise RowError(f"{where}: expected a JSON object, got {type(obj).__name__}.",
                       "wrong field type")
    return obj
