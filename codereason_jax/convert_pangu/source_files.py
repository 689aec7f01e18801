"""Finding the source checkpoint's files (one file, a sharded index, or a directory holding one)
and opening each with the reader of its format."""

from __future__ import annotations

import json
import os
import zipfile
from typing import Sequence

from codereason_jax.convert_pangu.base import ConversionError, TensorInfo
from codereason_jax.convert_pangu.safetensors_reader import SafetensorsFile
from codereason_jax.convert_pangu.torch_reader import TorchFile, TorchZipFile

SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_SUFFIXES = (".bin", ".pt", ".pth")


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
