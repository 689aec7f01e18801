"""The PanGu-α port's tensor names and shapes mapped onto our parameter tree: every leaf of ours
takes one tensor of the port (per layer), and a mismatch is reported with the shape we expect and
what the tensors say the model is."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

from codereason_jax.convert_pangu.base import ConversionError, TensorInfo
from codereason_jax.model.config import PanGuConfig

PREFIX = "transformer."
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
                                  "in the port; update "
                                  "codereason_jax/convert_pangu/port_mapping.py.")
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


def short_shapes(inventory: dict[str, TensorInfo]) -> dict[str, tuple[int, ...]]:
    """Shapes keyed by the port's unprefixed names, whichever prefix the file used."""
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


def describe_shape(found: dict[str, int]) -> str:
    """What the tensors say the model is, for logs and error messages."""
    order = ("vocab_size", "d_model", "d_ff", "num_layers", "max_seq_len")
    text = ", ".join(f"{k}={found[k]}" for k in order if k in found)
    return text + (" (num_layers counts the query layer)" if "num_layers" in found else "")


def _config_hint(found: dict[str, int], config: PanGuConfig) -> str:
    differ = {k: v for k, v in found.items() if getattr(config, k) != v}
    if not differ:
        return ""
    hint = (f"The tensors say {describe_shape(found)}, but PanGuConfig has "
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
    found = infer_shape(short_shapes(inventory))
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
    rows = short_shapes(inventory).get("wte.weight", (0,))[0]
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

