"""Model configurations of the benchmark, built directly (no gin), and their default shapes."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from codereason_jax.model.config import PanGuConfig

# Shapes of gin/models/*.gin, plus a ~25M model for CPU benchmarks and a micro one for tests.
SHAPES: dict[str, dict[str, int]] = {
    "micro": dict(vocab_size=256, num_layers=3, d_model=32, num_heads=4, d_ff=128,
                  max_seq_len=64),
    "tiny": dict(vocab_size=8192, num_layers=4, d_model=128, num_heads=4, d_ff=512,
                 max_seq_len=256),
    "25m": dict(vocab_size=8192, num_layers=6, d_model=512, num_heads=8, d_ff=2048,
                max_seq_len=256),
    "350m": dict(vocab_size=40000, num_layers=24, d_model=1024, num_heads=16, d_ff=4096,
                 max_seq_len=1024),
    "2_6b": dict(vocab_size=40000, num_layers=32, d_model=2560, num_heads=32, d_ff=10240,
                 max_seq_len=1024),
    "13b": dict(vocab_size=40000, num_layers=40, d_model=5120, num_heads=40, d_ff=20480,
                max_seq_len=1024),
}

# (batch size, sequence length) when the command line gives none.
DEFAULT_BATCH: dict[str, tuple[int, int]] = {
    "micro": (4, 32), "tiny": (16, 256), "25m": (8, 256), "350m": (32, 1024),
    "2_6b": (8, 1024), "13b": (4, 1024)}

# Speed options resolved per backend when the command line leaves them at "auto".
# CPU: XLA:CPU needs the fusion boundary between blocks and the head's custom VJP; scanning
# the layers buys little once the boundary is there. GPU/TPU: scan (compile time independent
# of depth), fused attention (cuDNN on GPUs in bf16), no host round trips.
AUTO_OPTIONS: dict[str, dict[str, Any]] = {
    "cpu": dict(dtype="float32", attention="einsum", scan_layers=False, block_barrier=True,
                head_vjp=True, remat_policy="none"),
    "gpu": dict(dtype="bfloat16", attention="auto", scan_layers=True, block_barrier=False,
                head_vjp=False, remat_policy="none"),
    "tpu": dict(dtype="bfloat16", attention="xla", scan_layers=True, block_barrier=False,
                head_vjp=False, remat_policy="none"),
}

OPTION_NAMES = ("dtype", "attention", "scan_layers", "block_barrier", "head_vjp",
                "remat_policy")


def resolve_options(platform: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The backend's defaults with the explicit (non-"auto", non-None) overrides applied."""
    options = dict(AUTO_OPTIONS.get(platform, AUTO_OPTIONS["gpu"]))
    for name, value in overrides.items():
        if value is not None and value != "auto":
            options[name] = value
    return options


def options_from_args(args: argparse.Namespace, platform: str,
                      remat: str | None = None) -> dict[str, Any]:
    """The speed options of the command line (``remat``: one of its --remat list), resolved for
    the backend."""
    return resolve_options(platform, {
        "dtype": args.dtype, "attention": args.attention,
        "remat_policy": remat or args.remats[0],
        "scan_layers": args.scan_layers, "block_barrier": args.block_barrier,
        "head_vjp": args.head_vjp})


def shape_from_args(args: argparse.Namespace, name: str,
                    batch: int | None = None) -> tuple[int, int]:
    """(batch, sequence length): ``batch``, else the command line's, else the config's default."""
    default_batch, seq = DEFAULT_BATCH.get(name, (8, 256))
    return batch or args.batch_sizes[0] or default_batch, args.seq_len or seq


def build_config(name: str, options: dict[str, Any], dropout_rate: float = 0.0,
                 max_seq_len: int | None = None) -> PanGuConfig:
    if name not in SHAPES:
        raise ValueError(f"unknown --config={name!r}; choose from {sorted(SHAPES)}")
    shape = dict(SHAPES[name])
    if max_seq_len is not None:
        shape["max_seq_len"] = max(shape["max_seq_len"], max_seq_len)
    fields = {k: v for k, v in options.items() if k in OPTION_NAMES}
    return PanGuConfig(**shape, dropout_rate=dropout_rate, **fields)


def describe(config: PanGuConfig) -> dict[str, Any]:
    keys = ("vocab_size", "num_layers", "d_model", "num_heads", "d_ff", "max_seq_len",
            "dropout_rate", "dtype", "param_dtype", *OPTION_NAMES)
    out = {k: getattr(config, k) for k in dict.fromkeys(keys)}
    out["num_params"] = config.num_params()
    return out


def with_options(config: PanGuConfig, **changes: Any) -> PanGuConfig:
    return dataclasses.replace(config, **changes)
