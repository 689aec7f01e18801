"""Timing helpers shared by the suites: medians over repeats, CPU time, matmul peak, RSS.

Every timed repeat records wall time and this process's CPU time (all threads). On a shared
machine wall time rises with other processes' load while CPU time mostly does not, so the
suites report both: wall-clock figures are the headline, the per-CPU-second figures say how
efficient the work was whatever the load. The load average is recorded with every run.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return []


def time_repeats(fn: Callable[[], Any], repeats: int,
                 peak_sampler: "MatmulPeak | None" = None) -> dict[str, Any]:
    """Run ``fn`` (which must block until its work is done) ``repeats`` times.

    With ``peak_sampler`` one matmul-peak sample is taken before each repeat, so the peak and
    the timed work see the same load on a shared machine.
    """
    wall, cpu = [], []
    for _ in range(max(1, repeats)):
        if peak_sampler is not None:
            peak_sampler.sample()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"step_s": statistics.median(wall), "step_s_min": min(wall),
            "step_s_all": [round(x, 6) for x in wall], "cpu_s": statistics.median(cpu),
            "load_average": load_average()}


class MatmulPeak:
    """FLOP/s of a jitted n x n float32 matmul on the default device, sampled on demand.

    The CPU stand-in for a vendor peak: the median over samples, wall clock, plus the FLOPs per
    CPU-second of the same samples (the load-independent view of the same peak).
    """

    def __init__(self, size: int = 2048, dtype: str = "float32"):
        import jax
        import jax.numpy as jnp
        import numpy as np

        self.size = size
        self.dtype = dtype
        rng = np.random.default_rng(0)
        self._a = jnp.asarray(rng.standard_normal((size, size)), dtype)
        self._b = jnp.asarray(rng.standard_normal((size, size)), dtype)
        self._matmul = jax.jit(jnp.matmul)
        self._matmul(self._a, self._b).block_until_ready()  # compile, warm up
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def sample(self, count: int = 1) -> None:
        for _ in range(count):
            start, start_cpu = time.perf_counter(), time.process_time()
            self._matmul(self._a, self._b).block_until_ready()
            self.wall.append(time.perf_counter() - start)
            self.cpu.append(time.process_time() - start_cpu)

    @property
    def flops(self) -> float:
        return 2.0 * self.size ** 3

    def peak(self) -> float:
        """Median FLOP/s (wall clock) over the samples so far."""
        if not self.wall:
            self.sample(5)
        return self.flops / statistics.median(self.wall)

    def peak_per_cpu_second(self) -> float:
        if not self.cpu:
            self.sample(5)
        return self.flops / max(statistics.median(self.cpu), 1e-12)

    def summary(self) -> dict[str, Any]:
        return {"size": self.size, "dtype": self.dtype, "samples": len(self.wall),
                "peak_flops": self.peak(), "peak_flops_best": self.flops / min(self.wall),
                "peak_flops_per_cpu_s": self.peak_per_cpu_second()}


# -------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset (VmHWM), else since the start."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return kib * 1024


def rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return -1 if kib is None else kib * 1024
