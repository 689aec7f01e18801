"""Benchmarks: training step (tokens/s, step time, MFU, peak RSS), a PyTorch peer, the input
pipeline and its resume cost, and evaluation (multiple choice, generation with and without the KV cache).

    python -m codereason_jax.bench --suite=train --config=25m
    python -m codereason_jax.bench --suite=peer --config=25m --repeats=5
    python -m codereason_jax.bench --suite=pipeline
    python -m codereason_jax.bench --suite=resume
    python -m codereason_jax.bench --suite=eval --config=tiny
    python -m codereason_jax.bench --suite=all --json_out=bench.json
    python -m codereason_jax.bench --suite=train --config=350m --batch_size=32 --seq_len=1024

Timing: every figure is the median over ``--repeats`` timed runs after ``--warmup`` untimed
ones; the train step is compiled ahead of time and its compile time reported apart.

FLOPs (codereason_jax.train_metrics): 6 N_matmul + 6 L T d per token, N_matmul = L(4d^2 + 2 d d_ff)
+ V d (the query layer in L, the tied head once), causal attention counted once (half the
T x T square; x3 for forward + backward); lookups, biases, LayerNorms and remat recomputation
are not counted. MFU = tokens/s/device x FLOPs/token / peak. The peak is the dense bf16
figure of the device kind (TPU v4/v5e/v5p/v6e, H100, H200) and, on CPU, the median FLOP/s of
a float32 matmul (--peak_size, default 2048) measured in this process, sampled between the
timed steps so that both see the same load.

Speed options (dtype, attention, scan_layers, block_barrier, head_vjp, remat_policy) default
to "auto": the choice for the backend in codereason_jax.benchmarks.configs.AUTO_OPTIONS.

The train suite imports jax, flax, optax, numpy and this package's model, optimizer, loss,
train_metrics and partitioning modules only; torch, seqio and TensorFlow are imported by the suites
that need them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from typing import Any, Sequence

from codereason_jax import cli
from codereason_jax.benchmarks.results import echo, format_rows, write_json

SUITES = ("train", "peer", "pipeline", "resume", "eval", "all")


def _bool_or_auto(value: str) -> str | bool:
    lowered = value.lower()
    if lowered in ("auto", ""):
        return "auto"
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true, false or auto, got {value!r}")


def _mesh(value: str) -> tuple[int, int, int]:
    parts = [int(p) for p in value.replace("x", ",").split(",") if p.strip()]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--mesh needs 3 sizes (data,fsdp,model), got {value!r}")
    return tuple(parts)  # type: ignore[return-value]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m codereason_jax.bench", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="train", help=f"one of {SUITES}, or a comma list")
    p.add_argument("--config", default="25m",
                   help="model config(s), comma list: micro, tiny, 25m, 350m, 2_6b, 13b")
    p.add_argument("--mesh", type=_mesh, default=(-1, 1, 1),
                   help="data,fsdp,model (one -1 takes the remaining devices)")
    p.add_argument("--batch_size", default=None,
                   help="global batch (rows); a comma list runs each (train suite)")
    p.add_argument("--seq_len", type=int, default=None)
    p.add_argument("--dtype", default="auto", help="compute dtype: auto, float32, bfloat16")
    p.add_argument("--attention", default="auto", help="auto, einsum, xla, cudnn")
    p.add_argument("--remat", default="auto",
                   help="auto, none, dots, full, ...; a comma list runs each (train suite)")
    p.add_argument("--scan_layers", type=_bool_or_auto, default="auto")
    p.add_argument("--block_barrier", type=_bool_or_auto, default="auto")
    p.add_argument("--head_vjp", type=_bool_or_auto, default="auto")
    p.add_argument("--packed", action="store_true",
                   help="feed segment ids (document-masked attention) in the train step")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak_size", type=int, default=2048, help="CPU peak matmul size")
    p.add_argument("--torch_compile", type=_bool_or_auto, default="auto",
                   help="peer: also time torch.compile (auto: yes)")
    p.add_argument("--pipeline_steps", type=int, default=20)
    p.add_argument("--pipeline_batch", type=int, default=32)
    p.add_argument("--pipeline_seq_len", type=int, default=1024)
    p.add_argument("--store_dir", default=None,
                   help="pipeline/resume: the row store to prepare or reuse (default: in the "
                        "cache directory)")
    p.add_argument("--resume_stream_rows", type=int, default=200_000,
                   help="resume: estimate the streaming path's resume beyond this many rows "
                        "to skip (from its per-row rate at step 1,000)")
    p.add_argument("--mc_questions", type=int, default=64)
    p.add_argument("--gen_batch", type=int, default=1)
    p.add_argument("--gen_tokens", type=int, default=512)
    p.add_argument("--gen_prompt", type=int, default=16)
    p.add_argument("--no_cache_baseline", type=_bool_or_auto, default="auto",
                   help="eval: also generate without the KV cache (auto: yes)")
    p.add_argument("--json_out", default=None,
                   help="write the results here (a .jsonl path gets one line appended)")
    p.add_argument("--profile_dir", default=None,
                   help="train: write a jax.profiler trace of two steps here and put the "
                        "ops that took the most time into the results")
    args = p.parse_args(argv)
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    for s in suites:
        if s not in SUITES:
            p.error(f"--suite={s!r} is not one of {SUITES}")
    args.suites = list(SUITES[:-1]) if "all" in suites else suites
    args.configs = [c.strip() for c in args.config.split(",") if c.strip()]
    args.batch_sizes = ([int(b) for b in str(args.batch_size).split(",") if b.strip()]
                        if args.batch_size else [None])
    args.remats = [r.strip() for r in args.remat.split(",") if r.strip()] or ["auto"]
    return args


# ------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    import jax

    from codereason_jax.benchmarks import timing

    devices = jax.devices()
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "jax": jax.__version__,
        "platform": devices[0].platform, "device_kind": str(devices[0].device_kind),
        "device_count": len(devices), "process_count": jax.process_count(),
        "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
        "load_average": timing.load_average(),
        "xla_flags": os.environ.get("XLA_FLAGS", "")}
    for name in ("flax", "optax", "numpy", "jaxlib"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---------------------------------------------------------------------------------- suites
# Each suite lives with its measurements in codereason_jax.benchmarks and is imported when it
# runs, so the command line starts (and reports a mistake) without jax.


def train_one(args: argparse.Namespace, name: str, **options: Any) -> dict[str, Any]:
    """One config's timed train step (codereason_jax.benchmarks.train.train_one)."""
    from codereason_jax.benchmarks import train

    return train.train_one(args, name, **options)


def suite_train(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The train suite (codereason_jax.benchmarks.train)."""
    from codereason_jax.benchmarks import train

    return train.suite_train(args)


def suite_peer(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The PyTorch peer suite (codereason_jax.benchmarks.torch_peer)."""
    from codereason_jax.benchmarks import torch_peer

    return torch_peer.suite_peer(args)


def suite_pipeline(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The input-pipeline suite (codereason_jax.benchmarks.pipeline)."""
    from codereason_jax.benchmarks import pipeline

    return pipeline.suite_pipeline(args)


def suite_resume(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The resume suite (codereason_jax.benchmarks.resume)."""
    from codereason_jax.benchmarks import resume

    return resume.suite_resume(args)


def suite_eval(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The evaluation suite (codereason_jax.benchmarks.evaluation)."""
    from codereason_jax.benchmarks import evaluation

    return evaluation.suite_eval(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_info()
    echo(f"[bench] {machine['platform']} x{machine['device_count']} "
         f"({machine['device_kind']}; {machine['cpu_model']}, {machine['cpu_count']} cores), "
         f"jax {machine['jax']}, load {machine['load_average']}")
    results: list[dict[str, Any]] = []
    suites = {"train": suite_train, "peer": suite_peer, "pipeline": suite_pipeline,
              "resume": suite_resume, "eval": suite_eval}
    for suite in args.suites:
        results += suites[suite](args)
    payload = {"command": "python -m codereason_jax.bench " + " ".join(sys.argv[1:]),
               "machine": machine, "results": results}
    echo("\n== results")
    echo(format_rows(results))
    if args.json_out:
        write_json(args.json_out, payload)
        echo(f"[bench] wrote {args.json_out}")
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    payload = run(args)
    return 1 if any("error" in r for r in payload["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
