"""What every reader of a source checkpoint shares: the converter's error, the header record of
one tensor, and closing a memory map that numpy views may still hold."""

from __future__ import annotations

import dataclasses
import mmap
from typing import Any


class ConversionError(ValueError):
    """The checkpoint cannot be converted; the message names the tensor or file and the fix."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor as a file's header lists it, so names and shapes are checked before any data
    is read."""
    name: str
    shape: tuple[int, ...]
    dtype: str
    file: str


def close_mapping(mapping: mmap.mmap, file: Any) -> None:
    """Close a reader's memory map and file; a numpy view still alive keeps the map open."""
    try:
        mapping.close()
    except BufferError:  # a view is still alive somewhere; the GC closes it later
        pass
    file.close()

