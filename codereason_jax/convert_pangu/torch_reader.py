"""Reading ``torch.save``'d state dicts: the zip format (torch >= 1.6) without torch, through an
unpickler that admits only tensor and storage references (nothing in the file runs), and the
legacy pickle format through torch itself."""

from __future__ import annotations

import collections
import dataclasses
import mmap
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from codereason_jax.convert_pangu.base import ConversionError, TensorInfo, close_mapping


def _import_torch(path: str) -> Any:
    try:
        import torch
    except ImportError:
        raise ConversionError(
            f"{path} is a PyTorch pickle in the legacy (pre-1.6, non-zip) format; reading it "
            "needs torch, which is not installed. Either install it (pip install -e '.[torch]') "
            "or, on a machine with torch and safetensors, convert it first and pass the "
            "result: python -c \"import torch; from safetensors.torch import save_file; "
            f"sd = torch.load('{path}', map_location='cpu'); save_file({{k: v.contiguous()"
            ".clone() for k, v in sd.items()}, 'model.safetensors')\" (the clone unties "
            "lm_head from wte, which save_file refuses to store as shared memory).") from None
    return torch


class TorchFile:
    """A torch.save'd state dict, loaded memory-mapped where the torch version allows."""

    def __init__(self, path: str):
        self.path = path
        self._torch = torch = _import_torch(path)
        state = None
        for kwargs in ({"weights_only": True, "mmap": True}, {"weights_only": True}, {}):
            try:
                state = torch.load(path, map_location="cpu", **kwargs)
                break
            except TypeError:  # an older torch without this keyword
                continue
            except RuntimeError as err:
                if "mmap" in kwargs:  # legacy (non-zip) files cannot be memory-mapped
                    continue
                raise ConversionError(f"torch cannot load {path}: {err}") from err
        if not isinstance(state, dict):
            raise ConversionError(f"{path} does not hold a state dict (got {type(state)}).")
        self._state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        self.tensors = {k: TensorInfo(k, tuple(v.shape), str(v.dtype).replace("torch.", ""),
                                      path) for k, v in self._state.items()}

    def read(self, name: str) -> np.ndarray:
        tensor = self._state[name].detach()
        if tensor.dtype == self._torch.bfloat16:  # numpy has no bfloat16 for torch to hand over
            tensor = tensor.to(self._torch.float32)
        return tensor.numpy()

    def release(self, name: str) -> None:
        self._state.pop(name, None)  # frees the storage as soon as the target holds the values

    def close(self) -> None:
        self._state.clear()


def _torch_storage_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # installed with jax

    return {"DoubleStorage": np.dtype("<f8"), "FloatStorage": np.dtype("<f4"),
            "HalfStorage": np.dtype("<f2"), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
            "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
            "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"),
            "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?")}


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    dtype: np.dtype
    key: str
    numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _StateDictUnpickler(pickle.Unpickler):
    """Accepts only what a torch state dict pickles: tensors rebuilt from storages, storage
    types, OrderedDict. Anything else in the file is refused, so nothing in it runs."""

    def __init__(self, stream, path: str):
        super().__init__(stream)
        self._path = path
        self._dtypes = _torch_storage_dtypes()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *_: data
        if module == "torch" and name in self._dtypes:
            return self._dtypes[name]
        raise ConversionError(
            f"{self._path}: the pickle refers to {module}.{name}, which a state dict of "
            "tensors does not hold; it is not read without torch (install torch with pip "
            "install -e '.[torch]' only if you trust the file).")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], np.dtype)):
            raise ConversionError(f"{self._path}: unexpected persistent id {pid!r}.")
        return _StorageRef(pid[1], str(pid[2]), int(pid[4]))

    @staticmethod
    def _rebuild_tensor(storage, offset, shape, stride, *_) -> _TensorRef:
        return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class TorchZipFile:
    """A ``torch.save``'d state dict in torch's zip format (torch >= 1.6), read without torch.

    The archive holds ``<name>/data.pkl``, the pickled dict whose tensors name their storage by
    key, and ``<name>/data/<key>``, each storage's raw little-endian bytes, stored uncompressed.
    The pickle is read by :class:`_StateDictUnpickler` (no code from the file runs) and each
    storage is a view of a read-only memory map of the archive.
    """

    def __init__(self, path: str):
        self.path = path
        self._zip = zipfile.ZipFile(path)
        names = self._zip.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ConversionError(f"{path} is a zip file but not a torch checkpoint (no single "
                                  "data.pkl).")
        self._prefix = pickles[0][:-len("data.pkl")]
        order = self._prefix + "byteorder"
        if order in names and self._zip.read(order).strip() != b"little":
            raise ConversionError(f"{path} was written on a big-endian machine; convert it "
                                  "with torch there.")
        with self._zip.open(pickles[0]) as f:
            state = _StateDictUnpickler(f, path).load()
        if not isinstance(state, dict):
            raise ConversionError(f"{path} does not hold a state dict (got {type(state)}).")
        self._refs = {k: v for k, v in state.items() if isinstance(v, _TensorRef)}
        self._file = open(path, "rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.tensors = {k: TensorInfo(k, ref.shape, str(ref.storage.dtype), path)
                        for k, ref in self._refs.items()}

    def _storage(self, ref: _StorageRef) -> np.ndarray:
        info = self._zip.getinfo(f"{self._prefix}data/{ref.key}")
        if info.compress_type != zipfile.ZIP_STORED:
            return np.frombuffer(self._zip.read(info), ref.dtype, count=ref.numel)
        header = self._map[info.header_offset:info.header_offset + 30]
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        return np.frombuffer(self._map, ref.dtype, count=ref.numel, offset=start)

    def read(self, name: str) -> np.ndarray:
        ref = self._refs[name]
        storage = self._storage(ref.storage)
        itemsize = storage.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            storage[ref.offset:], shape=ref.shape, strides=[s * itemsize for s in ref.stride],
            writeable=False)

    def release(self, name: str) -> None:
        self._refs.pop(name, None)

    def close(self) -> None:
        self._refs.clear()
        if self._map is not None:
            close_mapping(self._map, self._file)
            self._map = self._file = None
        self._zip.close()
