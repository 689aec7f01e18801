"""Results of ``python -m codereason_jax.bench``: the guard that turns one failed benchmark into an
error row (so the run goes on), the one-line-per-row table, and the JSON/JSONL output.

Standard library only, so every suite and the command line can use it without extra imports.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from typing import Any, Callable, Sequence


def echo(*args: Any) -> None:
    """Print at once (flushed): the GPU script tees the output of a process it may kill."""
    print(*args, flush=True)


def guarded(label: str, fn: Callable[[], Any]) -> Any:
    """Run one benchmark; on failure (OOM, missing dependency) report and go on."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - one failed config must not stop the run
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        echo(f"[bench] {label} FAILED: {message}")
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
        return {"label": label, "error": message}


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
        elif suite == "resume" and r.get("kind") == "store":
            lines.append(f"  resume   row store: {r['tokens']:,} tokens, {r['bytes'] / 2**20:.1f} "
                         f"MiB, {r['bytes_per_token']:.2f} bytes/token; prepared at "
                         f"{_fmt(r['prepare_tokens_per_s_per_worker'])} tokens/s per worker")
        elif suite == "resume":
            lines.append(f"  resume step={r['step']}: first batch "
                         f"{'~' if r['estimated'] else ''}{r['first_batch_s']:.3f} s "
                         f"({r['path']}{', estimated from the consumed prefix' if r['estimated'] else ''}; "
                         f"{r['rows_skipped']:,} rows before it)")
        elif suite == "pipeline":
            lines.append(f"  pipeline {r.get('path', 'stream')} {r['mixture']} "
                         f"hosts={r['host_count']}: "
                         f"{_fmt(r['real_tokens_per_s'])} packed tok/s/host (fill {r['fill']:.2f}) "
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
    """Write the payload; a ``.jsonl`` path gets one line appended, so runs accumulate."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if path.endswith(".jsonl"):
        with open(path, "a") as f:
            f.write(json.dumps(_jsonable(payload)) + "\n")
    else:
        with open(path, "w") as f:
            json.dump(_jsonable(payload), f, indent=1)
            f.write("\n")
