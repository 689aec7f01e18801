"""Reading ``.safetensors`` files without the safetensors package: the header, then each tensor as
a zero-copy view of a read-only memory map (bfloat16 included, through ml_dtypes)."""

from __future__ import annotations

import json
import math
import mmap
import os
import struct

import numpy as np

from codereason_jax.convert_pangu.base import ConversionError, TensorInfo, close_mapping


def _safetensors_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # installed with jax

    return {"F64": np.dtype(np.float64), "F32": np.dtype(np.float32),
            "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16),
            "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I16": np.dtype(np.int16),
            "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_)}


class SafetensorsFile:
    """A .safetensors file: 8-byte little-endian header size, a JSON header, raw buffers.

    Tensors are read as zero-copy views of a read-only memory map of the file.
    """

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ConversionError(f"{path} is too short to be a safetensors file.")
            (header_size,) = struct.unpack("<Q", raw)
            if header_size > min(size - 8, 1 << 28):
                raise ConversionError(
                    f"{path} is not a safetensors file (header size {header_size} does not fit "
                    f"the {size}-byte file).")
            try:
                header = json.loads(f.read(header_size))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ConversionError(f"{path}: the safetensors header is not JSON ({err}).")
        self._data_start = 8 + header_size
        dtypes = _safetensors_dtypes()
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            if entry.get("dtype") not in dtypes:
                raise ConversionError(f"{path}: tensor {name} has unsupported dtype "
                                      f"{entry.get('dtype')!r}.")
            dtype, shape = dtypes[entry["dtype"]], tuple(int(s) for s in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
            if end - begin != math.prod(shape) * dtype.itemsize or (
                    self._data_start + end > size):
                raise ConversionError(f"{path}: tensor {name} ({entry['dtype']} {list(shape)}) "
                                      f"has inconsistent data offsets [{begin}, {end}]; the "
                                      "file is truncated or corrupt.")
            self._entries[name] = (dtype, shape, self._data_start + begin)
            self.tensors[name] = TensorInfo(name, shape, entry["dtype"], path)
        self._file = None
        self._map: mmap.mmap | None = None

    def read(self, name: str) -> np.ndarray:
        dtype, shape, offset = self._entries[name]
        if self._map is None:
            self._file = open(self.path, "rb")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return np.frombuffer(self._map, dtype=dtype, count=math.prod(shape),
                             offset=offset).reshape(shape)

    def release(self, name: str) -> None:
        """Drop the tensor's mapped pages from this process (they stay in the page cache), so
        the resident source never grows beyond about one tensor."""
        dtype, shape, offset = self._entries[name]
        if self._map is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = offset // mmap.PAGESIZE * mmap.PAGESIZE
        length = offset + math.prod(shape) * dtype.itemsize - start
        if length > 0:
            self._map.madvise(mmap.MADV_DONTNEED, start, length)

    def close(self) -> None:
        if self._map is not None:
            close_mapping(self._map, self._file)
            self._map = self._file = None

