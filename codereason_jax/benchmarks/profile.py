"""A jax.profiler trace of a few steps, summarised as the ops that took the most time.

On a GPU the summary is per kernel on the device plane; on CPU per XLA thunk (fusion, dot)
on the XLA:CPU worker threads (set XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true for those).
"""

from __future__ import annotations

import collections
import glob
import os
from typing import Any, Callable


def trace(fn: Callable[[], Any], steps: int, directory: str) -> None:
    import jax

    jax.profiler.start_trace(directory)
    try:
        for _ in range(steps):
            fn()
    finally:
        jax.profiler.stop_trace()


def summarize(directory: str, steps: int, top: int = 25) -> dict[str, Any]:
    """{"total_ms_per_step": ..., "top": [[name, ms per step, share], ...], "plane": ...}."""
    from jax._src.profiler import ProfileData  # jax's reader of xplane.pb files

    files = sorted(glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    if not files:
        return {"error": f"no trace under {directory}"}
    data = ProfileData.from_file(files[-1])
    device: collections.Counter = collections.Counter()
    host: collections.Counter = collections.Counter()
    device_lines: list[str] = []
    for plane in data.planes:
        is_device = plane.name.startswith("/device:") and "CPU" not in plane.name
        lines = list(plane.lines)
        if is_device:
            names = [line.name for line in lines]
            device_lines += names
            # One view of the kernels: XLA's per-op line if the plane has one, else streams.
            chosen = [n for n in names if n == "XLA Ops"] or [
                n for n in names if n.startswith("Stream") or "Kernels" in n]
            lines = [line for line in lines if line.name in chosen]
        else:
            lines = [line for line in lines if line.name.startswith("tf_XLA")]
        for line in lines:
            for event in line.events:
                if event.name.startswith("end: ") or any(
                        skip in event.name for skip in ("ThunkExecutor", "Await", "wait for")):
                    continue
                (device if is_device else host)[event.name] += event.duration_ns / 1e6
    counter, plane = (device, "device") if device else (host, "host XLA threads")
    total = sum(counter.values()) / max(1, steps)
    rows = [[name, round(ms / steps, 3), round(ms / steps / total, 4) if total else 0.0]
            for name, ms in counter.most_common(top)]
    return {"plane": plane, "total_ms_per_step": round(total, 3), "top": rows,
            "device_lines": sorted(set(device_lines))[:20]}
