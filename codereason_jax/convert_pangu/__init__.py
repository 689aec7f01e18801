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

# The package: base (error, tensor record), safetensors_reader, torch_reader, source_files
# (file / index / directory), port_mapping (names and shapes), conversion (the driver and the
# Orbax writer); this module is the command line and re-exports what callers import.

import argparse
from typing import Sequence

from codereason_jax import cli, gin_utils
from codereason_jax.checkpoints import CheckpointError
from codereason_jax.convert_pangu.base import ConversionError, TensorInfo
from codereason_jax.convert_pangu.conversion import (GIN_FIELDS, check_head_tied, convert,
                                                     convert_tensors, model_gin,
                                                     save_checkpoint)
from codereason_jax.convert_pangu.port_mapping import (HF_ACTIVATIONS, IGNORED,
                                                       MAX_VOCAB_PADDING, PANGU_VOCAB_SIZE,
                                                       PAPER_GIN, PAPER_HEADS, PREFIX,
                                                       Assignment, abstract_param_shapes,
                                                       check_hf_config, check_inventory,
                                                       config_from_tensors, infer_shape,
                                                       name_map, recognise_padded_vocab,
                                                       strip_prefix)
from codereason_jax.convert_pangu.safetensors_reader import SafetensorsFile
from codereason_jax.convert_pangu.source_files import (SAFETENSORS_INDEX, TORCH_INDEX,
                                                       TORCH_SUFFIXES, open_tensor_file,
                                                       read_inventory, resolve_source)
from codereason_jax.convert_pangu.torch_reader import TorchFile, TorchZipFile
from codereason_jax.model.config import ConfigError

__all__ = [
    "GIN_FIELDS", "HF_ACTIVATIONS", "IGNORED", "MAX_VOCAB_PADDING", "PANGU_VOCAB_SIZE",
    "PAPER_GIN", "PAPER_HEADS", "PREFIX", "SAFETENSORS_INDEX", "TORCH_INDEX", "TORCH_SUFFIXES",
    "VOCABULARY_NOTE", "Assignment", "ConversionError", "SafetensorsFile", "TensorInfo",
    "TorchFile", "TorchZipFile", "abstract_param_shapes", "check_head_tied", "check_hf_config",
    "check_inventory", "config_from_tensors", "convert", "convert_tensors", "infer_shape",
    "main", "model_gin", "name_map", "open_tensor_file", "read_inventory",
    "recognise_padded_vocab", "resolve_source", "save_checkpoint", "strip_prefix"]

VOCABULARY_NOTE = (
    "Vocabulary: PanGu-α's weights use its 40,000-piece SentencePiece tokenizer (vocab.model of "
    "the PanGu-α release, which you supply), applied the PanGu way by "
    "seqio_tasks.vocabularies.PanGuVocabulary: jieba segmentation, ' '->'▂', '\\n'->'▃'; "
    "<eot> (9) ends documents, <pad> is 6. Point the tasks at it with "
    "--gin.TrainConfig.vocabulary=\"'pangu:/path/to/vocab.model'\" (train) or "
    "--gin.EvalConfig.vocabulary=\"'pangu:/path/to/vocab.model'\" (evaluate), or "
    "CODEREASON_VOCABULARY=pangu:/path/to/vocab.model; score takes ids, e.g. from "
    "PanGuVocabulary('/path/to/vocab.model').encode(text).")


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

