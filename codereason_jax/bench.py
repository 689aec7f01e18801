"""Benchmarks: training step (tokens/s, step time, MFU, peak RSS), a PyTorch peer, the input
pipeline, and evaluation (multiple choice, generation with and without the KV cache).

    python -m codereason_jax.bench --suite=train --config=25m
    python -m codereason_jax.bench --suite=peer --config=25m --repeats=5
    python -m codereason_jax.bench --suite=pipeline
    python -m codereason_jax.bench --suite=eval --config=tiny
    python -m codereason_jax.bench --suite=all --json_out=bench.json
    python -m codereason_jax.bench --suite=train --config=350m --batch_size=32 --seq_len=1024

Timing: every figure is the median over ``--repeats`` timed runs after ``--warmup`` untimed
ones; the train step is compiled ahead of time and its compile time reported apart.

FLOPs (codereason_jax.metrics): 6 N_matmul + 6 L T d per token, N_matmul = L(4d^2 + 2 d d_ff)
+ V d (the query layer in L, the tied head once), causal attention counted once (half the
T x T square; x3 for forward + backward); lookups, biases, LayerNorms and remat recomputation
are not counted. MFU = tokens/s/device x FLOPs/token / peak. The peak is the dense bf16
figure of the device kind (TPU v4/v5e/v5p/v6e, H100, H200) and, on CPU, the median FLOP/s of
a float32 matmul (--peak_size, default 2048) measured in this process, sampled between the
timed steps so that both see the same load.

Speed options (dtype, attention, scan_layers, block_barrier, head_vjp, remat_policy) default
to "auto": the choice for the backend in codereason_jax.benchmarks.configs.AUTO_OPTIONS.

The train suite imports jax, flax, optax, numpy and this package's model, optimizer, loss,
metrics and partitioning modules only; torch, seqio and TensorFlow are imported by the suites
that need them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Sequence

from codereason_jax import cli

SUITES = ("train", "peer", "pipeline", "eval", "all")


def _print(*args: Any) -> None:
    print(*args, flush=True)


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


# ----------------------------------------------------------------------------- train suite


def _options(args: argparse.Namespace, platform_name: str,
             remat: str | None = None) -> dict[str, Any]:
    from codereason_jax.benchmarks import configs

    return configs.resolve_options(platform_name, {
        "dtype": args.dtype, "attention": args.attention,
        "remat_policy": remat or args.remats[0],
        "scan_layers": args.scan_layers, "block_barrier": args.block_barrier,
        "head_vjp": args.head_vjp})


def _shape(args: argparse.Namespace, name: str, batch: int | None = None) -> tuple[int, int]:
    from codereason_jax.benchmarks import configs

    default_batch, seq = configs.DEFAULT_BATCH.get(name, (8, 256))
    return batch or args.batch_sizes[0] or default_batch, args.seq_len or seq


class _Peak:
    """The peak FLOP/s per device for MFU: measured on CPU (sampled during the run), else the
    table of codereason_jax.metrics."""

    def __init__(self, dtype: str, size: int):
        import jax

        from codereason_jax import metrics
        from codereason_jax.benchmarks import timing

        self.device = jax.devices()[0]
        self.sampler = None
        if self.device.platform == "cpu":
            self.sampler = timing.MatmulPeak(size)
            self.sampler.sample(3)
            self.source = f"measured float32 {size}x{size} matmul on cpu, median of samples"
            self.table = math.nan
        else:
            self.table, self.source = metrics.peak_flops_per_device(self.device, dtype)

    def value(self) -> float:
        return self.sampler.peak() if self.sampler is not None else self.table

    def summary(self) -> dict[str, Any]:
        out = {"peak_flops_per_device": self.value(), "peak_source": self.source}
        if self.sampler is not None:
            out["cpu_matmul"] = self.sampler.summary()
        return out


def train_one(args: argparse.Namespace, name: str, peak: _Peak | None = None,
              extra_steps: dict[str, Callable[[], Any]] | None = None,
              batch: int | None = None, remat: str | None = None) -> dict[str, Any]:
    """Build, compile, warm up and time one config's train step (interleaving ``extra_steps``
    round by round when given: the peer suite)."""
    import jax

    from codereason_jax import metrics
    from codereason_jax.benchmarks import configs, timing
    from codereason_jax.benchmarks.train import JaxStep, flops_convention

    platform_name = jax.devices()[0].platform
    options = _options(args, platform_name, remat)
    batch, seq = _shape(args, name, batch)
    config = configs.build_config(name, options, args.dropout, max_seq_len=seq)
    peak = peak or _Peak(config.dtype, args.peak_size)
    timing.reset_peak_rss()
    rss_before = timing.rss_bytes()
    row: dict[str, Any] = {"suite": "train", "config": name, "batch_size": batch, "seq_len": seq,
                           "packed": args.packed, "model": configs.describe(config)}
    step = JaxStep(config, batch, seq, mesh_shape=args.mesh, packed=args.packed)
    row["mesh"] = dict(step.mesh.shape)
    for _ in range(max(1, args.warmup)):
        step()
    runners: dict[str, Callable[[], Any]] = {"jax": step, **(extra_steps or {})}
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in runners}
    for _ in range(max(1, args.repeats)):
        for key, fn in runners.items():
            if peak.sampler is not None:
                peak.sampler.sample()
            if len(runners) > 1:
                time.sleep(0.05)  # let the other runner's spinning worker threads park
            start, start_cpu = time.perf_counter(), time.process_time()
            reported = fn()
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if isinstance(reported, dict) and "wall" in reported:  # timed by a worker process
                wall, cpu = reported["wall"], reported["cpu"]
            samples[key]["wall"].append(wall)
            samples[key]["cpu"].append(cpu)
    if args.profile_dir:
        from codereason_jax.benchmarks import profile

        directory = os.path.join(args.profile_dir, f"{name}_b{batch}")

        def traced() -> dict[str, Any]:
            profile.trace(step, 2, directory)
            return profile.summarize(directory, 2)

        row["profile_dir"] = directory
        row["profile"] = _guarded("profile", traced)
    devices = jax.device_count()
    flops = flops_convention(config, seq)
    per_token = flops["training_flops_per_token"]
    peak_value = peak.value()
    for key, s in samples.items():
        wall, cpu = statistics.median(s["wall"]), statistics.median(s["cpu"])
        tokens_per_s = batch * seq / wall
        entry = {"step_s": wall, "step_s_all": [round(x, 5) for x in s["wall"]], "cpu_s": cpu,
                 "tokens_per_s": tokens_per_s, "tokens_per_s_per_device": tokens_per_s / devices,
                 "model_flops_per_s_per_device": tokens_per_s / devices * per_token,
                 "mfu": metrics.mfu(tokens_per_s / devices, per_token, peak_value)}
        if peak.sampler is not None:
            # Against the fastest matmul sample (the machine at its least loaded): stricter.
            entry["mfu_vs_best_peak"] = entry["model_flops_per_s_per_device"] / (
                peak.sampler.flops / min(peak.sampler.wall))
            entry["flops_per_cpu_s"] = batch * seq * per_token / cpu
            entry["mfu_per_cpu_s"] = entry["flops_per_cpu_s"] / peak.sampler.peak_per_cpu_second()
        if key == "jax":
            row.update(entry)
        else:
            row.setdefault("peers", {})[key] = entry
    row.update(step.info())
    row.update(flops)
    row.update(peak.summary())
    row["peak_rss_bytes"] = timing.peak_rss_bytes()
    row["rss_before_bytes"] = rss_before
    row["load_average"] = timing.load_average()
    step.close()
    return row


def _guarded(label: str, fn: Callable[[], Any]) -> Any:
    """Run one benchmark; on failure (OOM, missing dependency) report and go on."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - one failed config must not stop the run
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        _print(f"[bench] {label} FAILED: {message}")
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
        return {"label": label, "error": message}


def suite_train(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.configs:
        for batch in args.batch_sizes:
            for remat in args.remats:
                label = f"train {name} batch={batch or 'default'} remat={remat}"
                _print(f"[bench] {label} ...")
                row = _guarded(label, lambda: train_one(args, name, batch=batch, remat=remat))
                row.setdefault("suite", "train")
                row.setdefault("config", name)
                rows.append(row)
                _print(format_rows([row]))
                _free_memory()
    return rows


def _free_memory() -> None:
    import gc

    import jax

    gc.collect()
    jax.clear_caches()


def suite_peer(args: argparse.Namespace) -> list[dict[str, Any]]:
    from codereason_jax.benchmarks import configs, torch_peer

    rows = []
    for name in args.configs:
        _print(f"[bench] peer {name} ...")
        if not torch_peer.available():
            rows.append({"suite": "peer", "config": name, "skipped": "torch is not installed"})
            _print("[bench] peer skipped: torch is not installed")
            continue

        def run(name: str = name) -> dict[str, Any]:
            import jax

            options = _options(args, jax.devices()[0].platform)
            batch, seq = _shape(args, name)
            config = configs.build_config(name, options, args.dropout, max_seq_len=seq)
            peers: dict[str, Any] = {}
            infos = {}
            variants = [False] + ([True] if args.torch_compile in ("auto", True) else [])
            for compiled in variants:
                label = "torch.compile" if compiled else "torch eager"
                _print(f"[bench] peer {name}: preparing {label} ...")
                made = _guarded(f"peer {name} {label}",
                                lambda c=compiled: torch_peer.TorchWorker(config, batch, seq, c))
                if isinstance(made, dict):
                    infos[label] = made
                    continue
                for _ in range(max(0, args.warmup - 1)):
                    made()
                peers[label] = made
                infos[label] = made.info()
            try:
                row = train_one(args, name, extra_steps=peers)
            finally:
                for worker in peers.values():
                    worker.close()
            row["suite"] = "peer"
            for label, info in infos.items():
                row.setdefault("peers", {}).setdefault(label, {}).update(info)
            timed = {k: v for k, v in row.get("peers", {}).items() if "tokens_per_s" in v}
            if timed:
                best = max(timed, key=lambda k: timed[k]["tokens_per_s"])
                row["peer_best"] = best
                row["speedup_vs_best_peer"] = row["tokens_per_s"] / timed[best]["tokens_per_s"]
                if "cpu_s" in timed[best] and jax.devices()[0].platform == "cpu":
                    row["cpu_time_ratio_vs_best_peer"] = timed[best]["cpu_s"] / row["cpu_s"]
            return row

        row = _guarded(f"peer {name}", run)
        row.setdefault("suite", "peer")
        row.setdefault("config", name)
        rows.append(row)
        _print(format_rows([row]))
    return rows


def suite_pipeline(args: argparse.Namespace) -> list[dict[str, Any]]:
    from codereason_jax.benchmarks import pipeline

    need = pipeline.model_need_per_host()
    rows = []
    for mixture, pack in ((pipeline.PRETRAIN_MIXTURE, False),
                          (pipeline.INSTRUCTION_MIXTURE, False)):
        for host_count in (1, 4):
            label = f"pipeline {mixture} hosts={host_count}"
            _print(f"[bench] {label} ...")

            def run(mixture: str = mixture, host_count: int = host_count,
                    pack: bool = pack) -> dict[str, Any]:
                result = pipeline.measure(mixture, args.pipeline_seq_len, args.pipeline_batch,
                                          args.pipeline_steps, 0, host_count, pack)
                per_host = need["tokens_per_s_per_host"]
                result["need_tokens_per_s_per_host"] = per_host
                result["headroom"] = result["real_tokens_per_s"] / per_host
                result["headroom_ok"] = result["headroom"] >= 3.0
                return result

            row = _guarded(label, run)
            row.update({"suite": "pipeline", "mixture": mixture, "host_count": host_count,
                        "need": need})
            rows.append(row)
            _print(format_rows([row]))
    return rows


def suite_eval(args: argparse.Namespace) -> list[dict[str, Any]]:
    import jax

    from codereason_jax.benchmarks import configs, evaluation

    rows = []
    for name in args.configs:
        options = _options(args, jax.devices()[0].platform)
        # Evaluation runs deterministic forward passes: no scan/remat/barrier needed, but
        # the same dtype and attention.
        options.update(block_barrier=False, head_vjp=False, remat_policy="none")
        need = args.gen_prompt + args.gen_tokens
        config = configs.build_config(name, options, 0.0, max_seq_len=need)
        _print(f"[bench] eval {name}: multiple choice ...")
        mc = _guarded(f"eval {name} multiple choice", lambda: evaluation.multiple_choice(
            config, questions=args.mc_questions, repeats=max(1, min(args.repeats, 3))))
        rows.append({"suite": "eval", "kind": "multiple_choice", "config": name,
                     "model": configs.describe(config), **mc})
        _print(format_rows([rows[-1]]))
        # The evaluator's generate(), then greedy loops compiled whole (cached and uncached).
        for label, measure, extra in (
                ("", evaluation.generation, {"loop": "evaluator (compiled loop, stops at EOS)"}),
                (", loop on device", evaluation.generation_on_device, {})):
            _print(f"[bench] eval {name}: generation of {args.gen_tokens} tokens{label} ...")
            gen = _guarded(f"eval {name} generation{label}", lambda measure=measure: measure(
                config, batch_size=args.gen_batch, prompt_len=args.gen_prompt,
                new_tokens=args.gen_tokens,
                with_no_cache=args.no_cache_baseline in ("auto", True)))
            rows.append({"suite": "eval", "kind": "generation", "config": name, **extra,
                         "model": configs.describe(config), **gen})
            _print(format_rows([rows[-1]]))
    return rows


# ---------------------------------------------------------------------------------- output


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if kind == "pct":
            return f"{100 * value:.1f}%"
        if kind == "bytes":
            return f"{value / 2**30:.2f} GiB"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if kind == "bytes" and isinstance(value, int):
        return f"{value / 2**30:.2f} GiB"
    return str(value)


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """One line per result, suite by suite."""
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"  {r.get('suite', '?'):8s} {r.get('config', r.get('label', ''))}: "
                         f"FAILED {r['error']}")
            continue
        if "skipped" in r:
            lines.append(f"  {r['suite']:8s} {r.get('config', '')}: skipped ({r['skipped']})")
            continue
        suite = r.get("suite")
        if suite in ("train", "peer"):
            m = r.get("model", {})
            opts = (f"{m.get('dtype')} attn={m.get('attention')} scan={m.get('scan_layers')} "
                    f"remat={m.get('remat_policy')} barrier={m.get('block_barrier')} "
                    f"head_vjp={m.get('head_vjp')}")
            line = (f"  {suite:8s} {r['config']:5s} B={r['batch_size']} T={r['seq_len']} "
                    f"mesh={r.get('mesh')} [{opts}] step {r['step_s'] * 1e3:,.1f} ms | "
                    f"{_fmt(r['tokens_per_s'])} tok/s | MFU {_fmt(r['mfu'], 'pct')} | "
                    f"compile {r.get('compile_s', 0):.1f} s | peak RSS "
                    f"{_fmt(r.get('peak_rss_bytes'), 'bytes')}")
            if "mfu_per_cpu_s" in r:
                line += (f" | vs best matmul sample {_fmt(r['mfu_vs_best_peak'], 'pct')} | per "
                         f"CPU-s {_fmt(r['mfu_per_cpu_s'], 'pct')} of matmul")
            lines.append(line)
            for label, p in r.get("peers", {}).items():
                if "tokens_per_s" in p:
                    lines.append(f"           {label:14s} step {p['step_s'] * 1e3:,.1f} ms | "
                                 f"{_fmt(p['tokens_per_s'])} tok/s | MFU {_fmt(p['mfu'], 'pct')}"
                                 f" | first step {p.get('first_step_s', math.nan):.1f} s")
                elif "error" in p:
                    lines.append(f"           {label:14s} FAILED {p['error']}")
            prof = r.get("profile") or {}
            if prof.get("top"):
                lines.append(f"           profile ({prof['plane']}, "
                             f"{prof['total_ms_per_step']:,.1f} ms/step of ops), top ops:")
                for op, ms, share in prof["top"][:8]:
                    lines.append(f"             {ms:9.2f} ms {100 * share:5.1f}%  {op[:90]}")
            if "speedup_vs_best_peer" in r:
                lines.append(f"           JAX / {r['peer_best']}: "
                             f"{r['speedup_vs_best_peer']:.2f}x tokens/s"
                             + (f", {r['cpu_time_ratio_vs_best_peer']:.2f}x per CPU-s"
                                if "cpu_time_ratio_vs_best_peer" in r else ""))
        elif suite == "pipeline":
            lines.append(f"  pipeline {r['mixture']} hosts={r['host_count']}: "
                         f"{_fmt(r['real_tokens_per_s'])} packed tok/s (fill {r['fill']:.2f}) "
                         f"| need {_fmt(r['need_tokens_per_s_per_host'])} tok/s/host | "
                         f"headroom {r['headroom']:.1f}x "
                         f"{'OK' if r['headroom_ok'] else 'BELOW 3x'}")
        elif suite == "eval" and r.get("kind") == "multiple_choice":
            lines.append(f"  eval     {r['config']} multiple choice: "
                         f"{_fmt(r['questions_per_s'])} questions/s ({r['candidates']} "
                         f"candidates, batch {r['batch_size']}) | "
                         f"{_fmt(r['scored_tokens_per_s'])} scored tok/s")
        elif suite == "eval" and r.get("kind") == "generation":
            loop = "device loop" if "device" in str(r.get("loop")) else "evaluator"
            line = (f"  eval     {r['config']} generation ({loop}) B={r['batch_size']} "
                    f"{r['new_tokens']} tokens: KV cache {_fmt(r['cache_tokens_per_s'])} tok/s")
            if "no_cache_tokens_per_s" in r:
                line += (f" | no cache {_fmt(r['no_cache_tokens_per_s'])} tok/s | cache "
                         f"{r['cache_speedup']:.1f}x faster | same tokens {r['same_tokens']}")
            lines.append(line)
        else:
            lines.append(f"  {r}")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value


def write_json(path: str, payload: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if path.endswith(".jsonl"):
        with open(path, "a") as f:
            f.write(json.dumps(_jsonable(payload)) + "\n")
    else:
        with open(path, "w") as f:
            json.dump(_jsonable(payload), f, indent=1)
            f.write("\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_info()
    _print(f"[bench] {machine['platform']} x{machine['device_count']} "
           f"({machine['device_kind']}; {machine['cpu_model']}, {machine['cpu_count']} cores), "
           f"jax {machine['jax']}, load {machine['load_average']}")
    results: list[dict[str, Any]] = []
    suites = {"train": suite_train, "peer": suite_peer, "pipeline": suite_pipeline,
              "eval": suite_eval}
    for suite in args.suites:
        results += suites[suite](args)
    payload = {"command": "python -m codereason_jax.bench " + " ".join(sys.argv[1:]),
               "machine": machine, "results": results}
    _print("\n== results")
    _print(format_rows(results))
    if args.json_out:
        write_json(args.json_out, payload)
        _print(f"[bench] wrote {args.json_out}")
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    payload = run(args)
    return 1 if any("error" in r for r in payload["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
