"""The conversion itself: check, fill our parameter tree tensor by tensor, and write the Orbax
checkpoint and model gin file that ``train``, ``evaluate`` and ``score`` load."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from codereason_jax import paths
from codereason_jax.checkpoints import CheckpointError
from codereason_jax.convert_pangu.base import ConversionError, TensorInfo
from codereason_jax.convert_pangu.port_mapping import (PANGU_VOCAB_SIZE, Assignment,
                                                       abstract_param_shapes, check_hf_config,
                                                       check_inventory, config_from_tensors,
                                                       describe_shape, infer_shape, name_map,
                                                       recognise_padded_vocab, short_shapes)
from codereason_jax.convert_pangu.source_files import (open_tensor_file, read_inventory,
                                                       resolve_source)
from codereason_jax.model.config import PanGuConfig


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
        log(f"model from the tensors: {describe_shape(infer_shape(short_shapes(inventory)))}, "
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
