"""Convert the public PyTorch port of PanGu-α into a checkpoint that `train` and `evaluate` load.

    python -m codereason_jax.convert_pangu --hf_checkpoint=PATH --output=DIR \\
        [--gin_file=gin/models/pangu_2_6b.gin] [--gin.PanGuConfig.activation="'gelu_erf'"] \\
        [--dtype=float32|bfloat16]

PATH is a ``.safetensors`` or ``.bin`` file, an index (``model.safetensors.index.json`` /
``pytorch_model.bin.index.json``) of a sharded checkpoint, or a directory holding one of them.
The port names its tensors ``transformer.wte/wpe/wqe.weight``, ``transformer.h.{i}.ln_1/ln_2``,
``transformer.h.{i}.attn.{q,k,v,c}_proj``, ``transformer.h.{i}.mlp.c_fc/c_proj`` and
``transformer.ln_f``; the last block ``h.{L-1}`` is the query layer and the head is tied to
``wte`` (docs/model.md). Its Linear weights are ``[out, in]`` and are transposed here.

DIR receives ``DIR/checkpoints/0/{params,meta}`` (Orbax, the run layout of
``codereason_jax.checkpoints``), so ``TrainConfig.init_from = 'DIR'`` fine-tunes from it and
``evaluate --checkpoint=DIR`` / ``score --checkpoint=DIR`` load it, and ``DIR/model.gin`` with the
PanGuConfig bindings the weights need. Without ``--gin_file`` the shape is read off the tensors
(heads from the port's ``config.json``, else the paper's sizes). Convert with the model gin of
the run that will load it: ``scan_layers`` changes the parameter tree.

The weights use PanGu-α's 40,000-piece SentencePiece tokenizer (the release's ``vocab.model``),
which ``seqio_tasks.vocabularies.PanGuVocabulary`` applies the PanGu way.

The head: the port ties ``lm_head`` to ``wte``; a file that holds ``lm_head.weight`` is checked
to equal ``wte.weight`` and refused if it does not (an untied head is never silently dropped).
The 13B release pads the 40,000-row table to 40,064 rows: recognised, kept, and masked
(``PanGuConfig.used_vocab_size = 40000``), so the padding rows never take probability mass.

Memory: host memory holds one copy of the model (in the output dtype) plus one tensor.
Safetensors files and zip-format ``pytorch_model.bin`` files are memory-mapped and read by
built-in readers (no ``safetensors`` package, no torch: the torch pickle is read by an
unpickler that admits only tensor and storage references, so nothing in the file runs),
bfloat16 included; each tensor's pages are dropped once it is placed into the preallocated
target arrays. Only the legacy (pre-1.6) torch format needs torch (``pip install -e
'.[torch]'``). Orbax writes the arrays without copying them.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import collections
import dataclasses
import json
import math
import mmap
import pickle
import re
import struct
import sys
import time
import zipfile
from typing import Any, Callable, Sequence

import numpy as np

from codereason_jax import cli, gin_utils, paths
from codereason_jax.checkpoints import CheckpointError
from codereason_jax.model.config import ConfigError, PanGuConfig

PREFIX = "transformer."
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_SUFFIXES = (".bin", ".pt", ".pth")
PANGU_VOCAB_SIZE = 40000
# The released 13B weights pad the 40,000-row table to a multiple of 64 (40,064 rows); rows
# beyond the tokenizer's pieces are padding, masked by PanGuConfig.used_vocab_size.
MAX_VOCAB_PADDING = 128
# Heads of the paper's sizes by d_model (docs/model.md), used when neither a gin file nor the
# port's config.json gives them (the tensors do not determine the head count).
PAPER_HEADS = {1024: 16, 2560: 32, 5120: 40, 16384: 128}
# The model gin file of each paper size, for hints: d_model -> (num_layers, file).
PAPER_GIN = {1024: (24, "gin/models/pangu_350m.gin"), 2560: (32, "gin/models/pangu_2_6b.gin"),
             5120: (40, "gin/models/pangu_13b.gin")}
# The port's activation_function (HF ACT2FN names) -> PanGuConfig.activation.
HF_ACTIVATIONS = {"gelu": "gelu_erf", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
                  "gelu_pytorch_tanh": "gelu_tanh", "fast_gelu": "fast_gelu"}
# Tensors of the port that are not parameters of ours: the causal-mask buffers and the tied
# head (check_head_tied refuses a head that differs from wte).
IGNORED = re.compile(r"^(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)$")
MAX_LISTED_PROBLEMS = 12


class ConversionError(ValueError):
    """The checkpoint cannot be converted; the message names the tensor or file and the fix."""


# ----------------------------------------------------------------------------------------------
# Reading tensors: safetensors and torch zip files (memory-mapped, no dependency), and legacy
# torch pickles (need torch).
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    file: str


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
            _close_mapping(self._map, self._file)
            self._map = self._file = None


def _close_mapping(mapping: mmap.mmap, file: Any) -> None:
    try:
        mapping.close()
    except BufferError:  # a view is still alive somewhere; the GC closes it later
        pass
    file.close()


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
            _close_mapping(self._map, self._file)
            self._map = self._file = None
        self._zip.close()


def open_tensor_file(path: str) -> SafetensorsFile | TorchZipFile | TorchFile:
    if path.endswith(".safetensors"):
        return SafetensorsFile(path)
    if path.endswith(TORCH_SUFFIXES):
        # torch's zip format is read without torch; only the legacy format needs it.
        return TorchZipFile(path) if zipfile.is_zipfile(path) else TorchFile(path)
    raise ConversionError(f"{path}: unknown checkpoint format; expected .safetensors or a torch "
                          f"pickle ({', '.join(TORCH_SUFFIXES)}), or an index json.")


def resolve_source(path: str) -> tuple[list[str], str | None]:
    """(checkpoint files, the port's config.json or None) of a file, an index or a directory."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        candidates = [SAFETENSORS_INDEX, "model.safetensors", TORCH_INDEX, "pytorch_model.bin"]
        found = [c for c in candidates if os.path.exists(os.path.join(path, c))]
        if found:
            path = os.path.join(path, found[0])
        else:
            loose = sorted(f for f in os.listdir(path)
                           if f.endswith((".safetensors",) + TORCH_SUFFIXES))
            if len(loose) != 1:
                raise ConversionError(
                    f"{path} holds no {' / '.join(candidates)}" + (
                        f" and several checkpoint files {loose}; pass one of them or the index"
                        " json" if loose else "; pass the checkpoint file or its directory"))
            path = os.path.join(path, loose[0])
    elif not os.path.exists(path):
        raise ConversionError(f"--hf_checkpoint {path} does not exist.")
    directory = os.path.dirname(path)
    config = os.path.join(directory, "config.json")
    config = config if os.path.exists(config) else None
    if not path.endswith(".json"):
        return [path], config
    with open(path) as f:
        try:
            weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConversionError(f"{path} is not a checkpoint index (no 'weight_map': {err}).")
    files = []
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = os.path.join(directory, shard)
        if not os.path.exists(shard_path):
            missing = sorted(k for k, v in weight_map.items() if v == shard)
            raise ConversionError(f"Shard {shard_path} listed in {path} does not exist (it "
                                  f"holds {len(missing)} tensors, e.g. {missing[0]}); download "
                                  "every shard of the checkpoint.")
        files.append(shard_path)
    return files, config


def read_inventory(files: Sequence[str]) -> dict[str, TensorInfo]:
    """Name -> TensorInfo over all files (headers only for safetensors)."""
    inventory: dict[str, TensorInfo] = {}
    for path in files:
        handle = open_tensor_file(path)
        try:
            for name, info in handle.tensors.items():
                if name in inventory:
                    raise ConversionError(f"Tensor {name} appears in both {inventory[name].file}"
                                          f" and {path}.")
                inventory[name] = info
        finally:
            handle.close()
    return inventory


# ----------------------------------------------------------------------------------------------
# The name map: every leaf of our parameter tree <- one tensor of the port (per layer).
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Assignment:
    """Where one source tensor goes and how. ``kind``: "copy" (same shape), "flatten" (the
    source is our [heads, head_dim] bias flattened, heads major, as the port's _split_heads
    views it) or "transpose" (torch Linear [out, in] -> our [in..., out...] kernel, with the
    port's head-major [heads * head_dim] axis split into our (heads, head_dim))."""
    path: tuple[str, ...]
    index: int | None  # layer index into a scan-stacked leaf
    target_shape: tuple[int, ...]
    source_shape: tuple[int, ...]
    kind: str
    dims: str


# Our leaf (below a block) -> (port suffix, kind, number of input dims, symbolic source shape).
_BLOCK_LEAVES = {
    ("ln_1", "scale"): ("ln_1.weight", "copy", 0, "(d_model,)"),
    ("ln_1", "bias"): ("ln_1.bias", "copy", 0, "(d_model,)"),
    ("ln_2", "scale"): ("ln_2.weight", "copy", 0, "(d_model,)"),
    ("ln_2", "bias"): ("ln_2.bias", "copy", 0, "(d_model,)"),
    ("attention", "output", "kernel"): ("attn.c_proj.weight", "transpose", 2,
                                        "(d_model, d_model)"),
    ("attention", "output", "bias"): ("attn.c_proj.bias", "copy", 0, "(d_model,)"),
    ("mlp", "wi", "kernel"): ("mlp.c_fc.weight", "transpose", 1, "(d_ff, d_model)"),
    ("mlp", "wi", "bias"): ("mlp.c_fc.bias", "copy", 0, "(d_ff,)"),
    ("mlp", "wo", "kernel"): ("mlp.c_proj.weight", "transpose", 1, "(d_model, d_ff)"),
    ("mlp", "wo", "bias"): ("mlp.c_proj.bias", "copy", 0, "(d_model,)"),
}
for _ours, _theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    _BLOCK_LEAVES[("attention", _ours, "kernel")] = (f"attn.{_theirs}.weight", "transpose", 1,
                                                     "(d_model, d_model)")
    _BLOCK_LEAVES[("attention", _ours, "bias")] = (f"attn.{_theirs}.bias", "flatten", 0,
                                                   "(d_model,)")
_TOP_LEAVES = {
    ("word_embeddings",): ("wte.weight", "(vocab_size, d_model)"),
    ("position_embeddings",): ("wpe.weight", "(max_seq_len, d_model)"),
    ("top_query_embeddings",): ("wqe.weight", "(max_seq_len, d_model)"),
    ("ln_f", "scale"): ("ln_f.weight", "(d_model,)"),
    ("ln_f", "bias"): ("ln_f.bias", "(d_model,)"),
}


def _source_shape(target: tuple[int, ...], kind: str, n_in: int) -> tuple[int, ...]:
    if kind == "transpose":
        return (math.prod(target[n_in:]), math.prod(target[:n_in]))
    return (math.prod(target),) if kind == "flatten" else target


def abstract_param_shapes(config: PanGuConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Path -> shape of every leaf of our parameter tree, without allocating it."""
    import flax.linen as nn
    import jax

    from codereason_jax.model.abstract import abstract_params

    tree = nn.meta.unbox(abstract_params(config))
    return {tuple(str(k.key) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def name_map(config: PanGuConfig, shapes: dict[tuple[str, ...], tuple[int, ...]]
             ) -> dict[str, Assignment]:
    """Port tensor name (without the ``transformer.`` prefix) -> Assignment, covering every
    leaf of our tree exactly once (each layer of a scan-stacked leaf once)."""
    if not config.use_query_layer:
        raise ConversionError("The PanGu-α port has a query layer (its last block h.{L-1}); set "
                              "PanGuConfig.use_query_layer = True.")
    last = config.num_layers - 1
    out: dict[str, Assignment] = {}
    for path, shape in shapes.items():
        if path in _TOP_LEAVES:
            name, dims = _TOP_LEAVES[path]
            out[name] = Assignment(path, None, shape, shape, "copy", dims)
            continue
        block, sub = path[0], path[1:]
        if sub not in _BLOCK_LEAVES:
            raise ConversionError(f"Internal: our parameter {'/'.join(path)} has no counterpart "
                                  "in the port; update codereason_jax/convert_pangu.py.")
        suffix, kind, n_in, dims = _BLOCK_LEAVES[sub]
        if block == "blocks":  # scan_layers: one leaf stacks the ordinary layers on axis 0
            for i in range(shape[0]):
                out[f"h.{i}.{suffix}"] = Assignment(path, i, shape[1:],
                                                    _source_shape(shape[1:], kind, n_in),
                                                    kind, dims)
            continue
        match = re.fullmatch(r"block_(\d+)", block)
        layer = last if block == "query_layer" else int(match.group(1)) if match else None
        if layer is None:
            raise ConversionError(f"Internal: unknown block {block!r} in our parameter tree.")
        out[f"h.{layer}.{suffix}"] = Assignment(path, None, shape,
                                                _source_shape(shape, kind, n_in), kind, dims)
    return out


def strip_prefix(names: Sequence[str]) -> dict[str, str]:
    """Port name without ``transformer.`` -> the name in the file."""
    stripped: dict[str, str] = {}
    for name in names:
        short = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if short in stripped:
            raise ConversionError(f"Tensors {stripped[short]} and {name} both map to {short}.")
        stripped[short] = name
    return stripped


def _short_shapes(inventory: dict[str, TensorInfo]) -> dict[str, tuple[int, ...]]:
    return {short: inventory[full].shape for short, full in strip_prefix(list(inventory)).items()}


def infer_shape(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """What the tensors say about the model (keys are PanGuConfig fields); names unprefixed."""
    found: dict[str, int] = {}
    if len(shapes.get("wte.weight", ())) == 2:
        found["vocab_size"], found["d_model"] = shapes["wte.weight"]
    if len(shapes.get("wpe.weight", ())) == 2:
        found["max_seq_len"] = shapes["wpe.weight"][0]
    layers = {int(m.group(1)) for n in shapes if (m := re.match(r"h\.(\d+)\.", n))}
    if layers:
        found["num_layers"] = max(layers) + 1
    if len(shapes.get("h.0.mlp.c_fc.weight", ())) == 2:
        found["d_ff"] = shapes["h.0.mlp.c_fc.weight"][0]
    return found


def _describe(found: dict[str, int]) -> str:
    order = ("vocab_size", "d_model", "d_ff", "num_layers", "max_seq_len")
    text = ", ".join(f"{k}={found[k]}" for k in order if k in found)
    return text + (" (num_layers counts the query layer)" if "num_layers" in found else "")


def _config_hint(found: dict[str, int], config: PanGuConfig) -> str:
    differ = {k: v for k, v in found.items() if getattr(config, k) != v}
    if not differ:
        return ""
    hint = (f"The tensors say {_describe(found)}, but PanGuConfig has "
            + ", ".join(f"{k}={getattr(config, k)}" for k in differ) + ". ")
    paper = PAPER_GIN.get(found.get("d_model", -1))
    if paper and paper[0] == found.get("num_layers"):
        hint += f"Pass the model gin file that matches the weights (--gin_file={paper[1]})"
    else:
        hint += "Pass the model gin file that matches the weights"
    return hint + " or bind the values (" + " ".join(
        f"--gin.PanGuConfig.{k}={v}" for k, v in differ.items()) + "), or omit --gin_file to " \
        "take the shape from the tensors."


def check_inventory(inventory: dict[str, TensorInfo], config: PanGuConfig,
                    assignments: dict[str, Assignment]) -> dict[str, str]:
    """Validate names and shapes; return short name -> file name of the tensors to convert.

    Raises ConversionError listing every missing, unexpected or mis-shaped tensor with the
    shape our config expects, and what the tensors say the model is."""
    names = strip_prefix(list(inventory))
    shapes = {short: inventory[full].shape for short, full in names.items()}
    problems = []
    for short, assignment in assignments.items():
        full = names.get(short)
        if full is None:
            problems.append(f"{PREFIX}{short} is missing (expected shape "
                            f"{assignment.source_shape} = {assignment.dims})")
        elif shapes[short] != assignment.source_shape:
            problems.append(f"{full} has shape {shapes[short]} in the checkpoint, but PanGuConfig "
                            f"expects {assignment.source_shape} = {assignment.dims}")
    for short, full in names.items():
        if short in assignments:
            continue
        if IGNORED.match(short):
            if short == "lm_head.weight" and "wte.weight" in shapes and (
                    shapes[short] != shapes["wte.weight"]):
                problems.append(f"{full} has shape {shapes[short]}, unlike wte.weight "
                                f"{shapes['wte.weight']}; the port ties the head to wte")
            continue
        layer = re.match(r"h\.(\d+)\.", short)
        why = (f"layer {layer.group(1)} is beyond PanGuConfig.num_layers={config.num_layers}"
               if layer and int(layer.group(1)) >= config.num_layers
               else "not a tensor of the PanGu-α port")
        problems.append(f"unexpected tensor {full} with shape {shapes[short]} ({why})")
    if problems:
        hint = _config_hint(infer_shape(shapes), config)
        listed = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        raise ConversionError(
            "The checkpoint does not match the model config. "
            + (hint if hint else "Is this the PanGu-α port (transformer.h.{i}.attn.q_proj, "
               "...) and a complete checkpoint (every shard present)?")
            + f"\n{len(problems)} problem(s):\n  " + "\n  ".join(listed)
            + (f"\n  ... and {more} more" if more else ""))
    return names


def config_from_tensors(inventory: dict[str, TensorInfo], hf_config: dict[str, Any]
                        ) -> PanGuConfig:
    """The PanGuConfig the tensors (and the port's config.json, if any) describe."""
    found = infer_shape(_short_shapes(inventory))
    missing = [k for k in ("vocab_size", "d_model", "d_ff", "num_layers", "max_seq_len")
               if k not in found]
    if missing:
        raise ConversionError(
            f"Cannot read {', '.join(missing)} off the tensors (no wte.weight / wpe.weight / "
            "h.0.mlp.c_fc.weight?); is this the PanGu-α port? Pass --gin_file to give the shape.")
    heads = hf_config.get("num_heads") or hf_config.get("n_head") or PAPER_HEADS.get(
        found["d_model"])
    if not heads:
        raise ConversionError(
            f"The number of heads cannot be read off the tensors (d_model={found['d_model']}) "
            "and there is no config.json next to the checkpoint; pass --gin_file with "
            "PanGuConfig.num_heads.")
    activation = HF_ACTIVATIONS.get(hf_config.get("activation_function", "gelu"), "gelu_erf")
    return PanGuConfig(num_heads=int(heads), activation=activation,
                       layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-5)),
                       used_vocab_size=_padded_pangu_vocab(found["vocab_size"]), **found)


def _padded_pangu_vocab(rows: int) -> int | None:
    """40,000 when ``rows`` is PanGu-α's table padded (e.g. the 13B's 40,064), else None."""
    return PANGU_VOCAB_SIZE if PANGU_VOCAB_SIZE < rows < PANGU_VOCAB_SIZE + MAX_VOCAB_PADDING \
        else None


def recognise_padded_vocab(inventory: dict[str, TensorInfo], config: PanGuConfig
                           ) -> PanGuConfig:
    """A config for 40,000 ids meeting a padded table (40,064 rows) takes the table's size and
    masks the padding rows (used_vocab_size), instead of refusing the shape."""
    rows = _short_shapes(inventory).get("wte.weight", (0,))[0]
    if config.vocab_size == PANGU_VOCAB_SIZE and _padded_pangu_vocab(rows):
        return dataclasses.replace(config, vocab_size=rows, used_vocab_size=PANGU_VOCAB_SIZE)
    return config


def check_hf_config(hf_config: dict[str, Any], config: PanGuConfig) -> list[str]:
    """Cross-check the port's config.json: errors for what the tensors cannot show (heads),
    returned warnings for numerics that only shift the outputs slightly."""
    heads = hf_config.get("num_heads") or hf_config.get("n_head")
    if heads and int(heads) != config.num_heads:
        raise ConversionError(
            f"The port's config.json has num_heads={heads}, but PanGuConfig.num_heads="
            f"{config.num_heads}; the weights would be split into the wrong heads. Pass the "
            f"matching model gin file or --gin.PanGuConfig.num_heads={heads}.")
    warnings = []
    act = hf_config.get("activation_function")
    if HF_ACTIVATIONS.get(act) not in (None, config.activation):
        warnings.append(
            f"the port computes {act!r} ({HF_ACTIVATIONS[act]}), PanGuConfig.activation is "
            f"{config.activation!r}: logits will differ slightly from the port's; for parity "
            f"add --gin.PanGuConfig.activation=\"'{HF_ACTIVATIONS[act]}'\".")
    eps = hf_config.get("layer_norm_epsilon")
    if eps is not None and not math.isclose(float(eps), config.layer_norm_epsilon):
        warnings.append(f"the port's layer_norm_epsilon={eps}, PanGuConfig's "
                        f"{config.layer_norm_epsilon}.")
    if hf_config.get("scale_attn_weights") is False:
        warnings.append("the port's config.json says scale_attn_weights=false; our attention "
                        "always scales by 1/sqrt(head_dim).")
    return warnings


# ----------------------------------------------------------------------------------------------
# Conversion and writing.
# ----------------------------------------------------------------------------------------------

def _transform(source: np.ndarray, assignment: Assignment) -> np.ndarray:
    if assignment.kind == "transpose":
        source = source.T
    return source.reshape(assignment.target_shape)


def check_head_tied(inventory: dict[str, TensorInfo], names: dict[str, str],
                    rows_per_chunk: int = 4096) -> None:
    """A checkpoint's ``lm_head.weight`` must equal ``wte.weight``: the PanGu-α port ties them
    (the file may hold both). An untied head is refused, never silently dropped."""
    if "lm_head.weight" not in names or "wte.weight" not in names:
        return
    head, table = inventory[names["lm_head.weight"]], inventory[names["wte.weight"]]
    handles = {path: open_tensor_file(path) for path in {head.file, table.file}}
    try:
        a = handles[head.file].read(head.name)
        b = handles[table.file].read(table.name)
        for start in range(0, a.shape[0], rows_per_chunk):  # bounded memory on a 13B table
            chunk = slice(start, start + rows_per_chunk)
            if not np.array_equal(a[chunk], b[chunk]):
                diff = np.abs(a[chunk].astype(np.float32) - b[chunk].astype(np.float32)).max()
                raise ConversionError(
                    f"{head.name} differs from {table.name} (rows {start}.. differ by up to "
                    f"{diff:.3g}): this checkpoint has an untied output head, which PanGu-α "
                    "does not have and our model cannot hold (its head is the embedding "
                    "table). Converting it would drop the trained head, so it is refused. If "
                    f"the head should be tied, remove {head.name} from the checkpoint first.")
        del a, b
    finally:
        for handle in handles.values():
            handle.close()


def convert_tensors(files: Sequence[str], names: dict[str, str],
                    assignments: dict[str, Assignment],
                    shapes: dict[tuple[str, ...], tuple[int, ...]], dtype: np.dtype,
                    progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Fill our (nested dict) parameter tree tensor by tensor, one source file at a time."""
    targets = {path: np.empty(shape, dtype) for path, shape in shapes.items()}
    full_to_short = {full: short for short, full in names.items()}
    done = 0
    for path in files:
        handle = open_tensor_file(path)
        try:
            for full in list(handle.tensors):
                short = full_to_short.get(full)
                if short is None or short not in assignments:
                    handle.release(full)
                    continue
                assignment = assignments[short]
                source = handle.read(full)
                target = targets[assignment.path]
                if assignment.index is not None:
                    target = target[assignment.index]
                target[...] = _transform(source, assignment)  # casts to the output dtype
                del source, target
                handle.release(full)
                done += 1
        finally:
            handle.close()
        progress(f"  {os.path.basename(path)}: {done}/{len(assignments)} tensors converted")
    if done != len(assignments):  # check_inventory makes this unreachable
        raise ConversionError(f"Converted {done} tensors, expected {len(assignments)}.")
    tree: dict[str, Any] = {}
    for path, value in targets.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def save_checkpoint(output: str, params: Any, meta: dict[str, Any]) -> str:
    """Write ``params`` (a tree of numpy arrays) and ``meta`` as step 0 of
    ``output/checkpoints``, the layout ``checkpoints.restore_params`` (init_from, evaluate,
    score) reads.

    Host memory stays at the one copy in ``params``: Orbax's numpy handler would deep-copy
    every array first (the arrays are not touched during this synchronous save, so that is
    switched off) and compression would hold the compressed model in memory until the OCDBT
    commit (so chunks are written uncompressed; weights compress by only a few percent)."""
    import orbax.checkpoint as ocp

    directory = paths.join(paths.resolve(output), "checkpoints")
    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)))
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True),
        item_handlers={"params": ocp.PyTreeCheckpointHandler(type_handler_registry=registry,
                                                             use_compression=False),
                       "meta": ocp.JsonCheckpointHandler()})
    try:
        if manager.all_steps():
            raise CheckpointError(f"{directory} already holds checkpoints "
                                  f"{sorted(manager.all_steps())}; choose a new --output "
                                  "directory (or delete that one).")
        manager.save(0, args=ocp.args.Composite(params=ocp.args.PyTreeSave(params),
                                                meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()
    finally:
        manager.close()
    return directory


GIN_FIELDS = ("vocab_size", "used_vocab_size", "num_layers", "d_model", "num_heads", "d_ff",
              "max_seq_len", "activation", "layer_norm_epsilon", "use_query_layer",
              "scan_layers")


def model_gin(config: PanGuConfig, source: str) -> str:
    lines = [f"# PanGuConfig of the PanGu-α weights converted from {source}",
             "# by codereason_jax.convert_pangu. The parameter tree depends on scan_layers.",
             "# The PyTorch port computes erf-GELU ('gelu_erf'); the MindSpore original most",
             "# likely tanh-GELU ('gelu_tanh'), the paper's code fast_gelu."]
    lines += [f"PanGuConfig.{name} = {getattr(config, name)!r}" for name in GIN_FIELDS]
    return "\n".join(lines) + "\n"


VOCABULARY_NOTE = (
    "Vocabulary: PanGu-α's weights use its 40,000-piece SentencePiece tokenizer (vocab.model of "
    "the PanGu-α release, which you supply), applied the PanGu way by "
    "seqio_tasks.vocabularies.PanGuVocabulary: jieba segmentation, ' '->'▂', '\\n'->'▃'; "
    "<eot> (9) ends documents, <pad> is 6. Point the tasks at it with "
    "--gin.TrainConfig.vocabulary=\"'pangu:/path/to/vocab.model'\" (train) or "
    "--gin.EvalConfig.vocabulary=\"'pangu:/path/to/vocab.model'\" (evaluate), or "
    "CODEREASON_VOCABULARY=pangu:/path/to/vocab.model; score takes ids, e.g. from "
    "PanGuVocabulary('/path/to/vocab.model').encode(text).")


def convert(source: str, output: str, config: PanGuConfig | None = None,
            dtype: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Convert the port checkpoint at ``source`` into ``output``; returns the meta written.

    ``config`` None: read the shape off the tensors (and the port's config.json)."""
    start = time.perf_counter()
    existing = paths.join(output, "checkpoints")
    if paths.isdir(existing) and paths.listdir(existing):
        raise CheckpointError(f"{existing} is not empty; choose a new --output directory (or "
                              "delete that one).")
    files, hf_config_path = resolve_source(source)
    hf_config: dict[str, Any] = {}
    if hf_config_path:
        with open(hf_config_path) as f:
            hf_config = json.load(f)
    inventory = read_inventory(files)
    if config is None:
        config = config_from_tensors(inventory, hf_config)
        log(f"model from the tensors: {_describe(infer_shape(_short_shapes(inventory)))}, "
            f"num_heads={config.num_heads}, activation={config.activation!r}")
    config = recognise_padded_vocab(inventory, config)
    if config.used_vocab_size is not None:
        log(f"note: the embedding table has {config.vocab_size} rows for "
            f"{config.used_vocab_size} tokens; the {config.vocab_size - config.used_vocab_size}"
            " padding rows are kept and masked (PanGuConfig.used_vocab_size): they never win an "
            "argmax nor take probability mass.")
    warnings = check_hf_config(hf_config, config)
    shapes = abstract_param_shapes(config)
    assignments = name_map(config, shapes)
    names = check_inventory(inventory, config, assignments)
    check_head_tied(inventory, names)
    for warning in warnings:
        log(f"warning: {warning}")
    if config.activation != "gelu_erf" and "activation_function" not in hf_config:
        log(f"note: PanGuConfig.activation={config.activation!r}; the PyTorch port computes "
            "erf-GELU, so for parity with it bind --gin.PanGuConfig.activation=\"'gelu_erf'\".")
    import jax.numpy as jnp

    dtype = dtype or config.param_dtype
    np_dtype = np.dtype(jnp.dtype(dtype))  # bfloat16: ml_dtypes' numpy dtype
    log(f"converting {len(assignments)} tensors from {len(files)} file(s) to {dtype}")
    params = convert_tensors(files, names, assignments, shapes, np_dtype, log)
    num_params = sum(math.prod(s) for s in shapes.values())
    meta = {"step": 0, "source": os.path.abspath(source), "source_files": list(files),
            "source_config": hf_config_path, "converter": "codereason_jax.convert_pangu",
            "format": "pytorch PanGu-α port (transformer.h.{i}.*; last block = query layer)",
            "dtype": dtype, "num_params": num_params,
            "model_config": dataclasses.asdict(config),
            "vocabulary": "PanGu-α 40k SentencePiece (seqio_tasks.vocabularies.PanGuVocabulary)"
            if PANGU_VOCAB_SIZE in (config.vocab_size, config.used_vocab_size)
            else f"unknown ({config.vocab_size} ids)",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    directory = save_checkpoint(output, params, meta)
    del params
    paths.write_text(paths.join(output, "model.gin"), model_gin(config, os.path.abspath(source)))
    log(f"wrote {directory}/0 ({num_params:,} parameters, {dtype}) and "
        f"{paths.join(output, 'model.gin')} in {time.perf_counter() - start:.1f} s")
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(
        prog="python -m codereason_jax.convert_pangu", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--hf_checkpoint", required=True, metavar="PATH",
                        help=".safetensors / .bin file, index json of a sharded checkpoint, or "
                        "a directory holding one")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="new directory for checkpoints/0 and model.gin (a local path or "
                        "a URL such as gs://BUCKET/pangu_2_6b)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="stored parameter dtype (default: PanGuConfig.param_dtype)")
    gin_utils.add_gin_flags(parser)
    try:
        rest, bindings = gin_utils.split_gin_bindings(argv)
        args = parser.parse_args(rest)
        config = None
        if args.gin_file:
            gin_utils.parse(args.gin_file, bindings)
            config = gin_utils.model_config()
        elif bindings:
            raise ConfigError("--gin.* bindings need a --gin_file to apply to; without "
                              "--gin_file the model shape is read off the tensors.")
        dtype = args.dtype or (config.param_dtype if config else "float32")
        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"PanGuConfig.param_dtype={dtype!r}: pass --dtype=float32 or "
                              "--dtype=bfloat16.")
        meta = convert(args.hf_checkpoint, args.output, config, dtype)
    except (ConversionError, ConfigError, CheckpointError, ValueError) as err:
        raise cli.UserError(str(err)) from err
    vocab_size = meta["model_config"]["vocab_size"]
    print(VOCABULARY_NOTE if vocab_size == PANGU_VOCAB_SIZE else
          f"Vocabulary: these weights have {vocab_size} ids, not the {PANGU_VOCAB_SIZE:,} "
          "pieces of PanGu-α's tokenizer (PanGuVocabulary); use the tokenizer they were "
          "trained with.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
