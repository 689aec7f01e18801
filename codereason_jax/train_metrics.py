"""Training-loop metrics: FLOPs per token, peak FLOP/s, MFU, TensorBoard scalars, progress lines.

MFU is only comparable across runs and papers when the FLOP convention is stated (see
docs/benchmarks.md). Ours counts matmul FLOPs only, with causal attention halved (MaxText after its
PR #1988):

    N_matmul  = L * (4 d^2 + 2 d d_ff) + V d
                L = num_layers (the query layer included), V = vocab_size, d = d_model.
                Q, K, V, O and both FFN kernels of every layer, plus the tied output projection
                (the logits). Embedding lookups, biases and LayerNorms are not counted.
    attention = 6 L T d per token, for sequence length T:
                forward QK^T and AV over the full T x T square are 2 matmuls * 2 T d = 4 T d
                FLOPs per token per layer; causal attention counts half of that (2 T d), and
                forward + backward is 3x the forward.

    training_flops_per_token = 6 N_matmul + 6 L T d
    forward_flops_per_token  = 2 N_matmul + 2 L T d   (= training / 3)
    MFU = tokens/s/device * training_flops_per_token / peak FLOP/s per device

Remat recomputation is not counted (that would be HFU). Peaks are dense bf16 vendor figures
per chip (Levanter's table); on CPU the peak is a matmul measured in this process.
"""

from __future__ import annotations

import collections
import math
import sys
import time
import warnings
from typing import Any, Callable, Mapping, TextIO

import jax
import jax.numpy as jnp

from codereason_jax.model.config import PanGuConfig

# ---------------------------------------------------------------------------------- FLOPs


def matmul_params(config: PanGuConfig) -> int:
    """Weights that take part in a matmul once per token (see the module docstring)."""
    d = config.d_model
    per_layer = 4 * d * d + 2 * d * config.d_ff
    return config.num_layers * per_layer + config.vocab_size * d


def attention_flops_per_token(config: PanGuConfig, seq_len: int) -> float:
    """Causal QK^T and AV, forward + backward: 6 * L * T * d."""
    return 6.0 * config.num_layers * seq_len * config.d_model


def training_flops_per_token(config: PanGuConfig, seq_len: int) -> float:
    """Forward + backward FLOPs per token: 6 * N_matmul + 6 * L * T * d."""
    return 6.0 * matmul_params(config) + attention_flops_per_token(config, seq_len)


def forward_flops_per_token(config: PanGuConfig, seq_len: int) -> float:
    """Forward-only FLOPs per token (evaluation, decoding): a third of training."""
    return training_flops_per_token(config, seq_len) / 3.0


# ----------------------------------------------------------------------------- Peak FLOP/s

# Dense (no 2:4 sparsity) bf16 peaks per chip, from vendor data sheets as collected in
# Levanter's flop_utils.py. Matched as case-insensitive substrings of jax.Device.device_kind,
# in this order, so more specific names come before their prefixes ("tpu v5 lite" before
# "tpu v5").
PEAK_BF16_FLOPS: tuple[tuple[str, float, str], ...] = (
    ("tpu v6 lite", 918e12, "TPU v6e"),
    ("tpu v6e", 918e12, "TPU v6e"),
    ("tpu v5 lite", 197e12, "TPU v5e"),
    ("tpu v5e", 197e12, "TPU v5e"),
    ("tpu v5p", 459e12, "TPU v5p"),
    ("tpu v5", 459e12, "TPU v5p"),  # v5p reports its device_kind as plain "TPU v5"
    ("tpu v4", 275e12, "TPU v4"),
    ("h100 pcie", 756e12, "H100 PCIe"),
    ("h100", 989e12, "H100 SXM"),
    ("h200", 989e12, "H200"),
)
# The table's figures hold for these dtypes (on GPUs fp16 and bf16 tensor-core peaks agree).
_TABLE_DTYPES = ("bfloat16", "float16")

_cpu_peak_cache: dict[str, float] = {}


def measure_matmul_peak(dtype: Any = jnp.float32, size: int = 1024, repeats: int = 5,
                        device: jax.Device | None = None) -> float:
    """FLOP/s of a jitted size x size matmul on ``device``: best of ``repeats`` after warm-up.

    A stand-in for a vendor peak where there is none (CPU). One 1024^3 matmul is ~2 GFLOP, a
    few tens of milliseconds on a laptop-class CPU, so the whole measurement stays well under a
    second. With emulated CPU devices sharing the same cores the figure is per device running
    alone, so CPU MFU is a smoke check, not a performance number.
    """
    device = device or jax.devices()[0]
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.device_put(jax.random.normal(key_a, (size, size), dtype), device)
    b = jax.device_put(jax.random.normal(key_b, (size, size), dtype), device)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()  # compile and warm up
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best


def peak_flops_per_device(device: jax.Device | None = None,
                          dtype: Any = "bfloat16") -> tuple[float, str]:
    """(peak FLOP/s of one device, where the figure comes from); nan when unknown.

    ``dtype`` is the matmul compute dtype (PanGuConfig.dtype). Accelerators use the dense bf16
    table; CPUs a matmul measured once per process and dtype. An unknown device kind, or a
    dtype the table does not cover, yields nan with a warning so MFU is reported as nan
    instead of a wrong number or a crash.
    """
    device = device or jax.devices()[0]
    dtype_name = jnp.dtype(dtype).name
    if device.platform == "cpu":
        if dtype_name not in _cpu_peak_cache:
            _cpu_peak_cache[dtype_name] = measure_matmul_peak(dtype_name, device=device)
        return _cpu_peak_cache[dtype_name], f"measured {dtype_name} matmul on cpu"
    kind = str(getattr(device, "device_kind", ""))
    entry = lookup_peak(kind)
    if entry is None:
        reason = f"unknown device kind {kind!r}: no peak FLOP/s, MFU reported as nan"
    elif dtype_name not in _TABLE_DTYPES:
        reason = (f"no {dtype_name} peak for {entry[1]} (the table holds dense bf16 peaks): "
                  "MFU reported as nan")
    else:
        return entry[0], f"dense bf16 peak of {entry[1]} (device_kind {kind!r})"
    warnings.warn(reason, stacklevel=2)
    return math.nan, reason


def lookup_peak(device_kind: str) -> tuple[float, str] | None:
    """(dense bf16 peak, chip name) for a jax device_kind string, or None if not in the table."""
    kind = device_kind.lower()
    for pattern, peak, chip in PEAK_BF16_FLOPS:
        if pattern in kind:
            return peak, chip
    return None


def mfu(tokens_per_second_per_device: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation in [0, 1]; nan when the peak is unknown (nan, inf or <= 0)."""
    if not math.isfinite(peak) or peak <= 0:
        return math.nan
    return tokens_per_second_per_device * flops_per_token / peak


# ------------------------------------------------------------------------------ TensorBoard


class MetricsWriter:
    """TensorBoard scalars and text under ``logdir``; a no-op when ``enabled`` is False.

    Only process 0 should write (pass ``enabled=jax.process_index() == 0``), so multi-host
    runs leave one set of event files. Summaries go through TensorFlow's core
    ``tf.summary.write`` tagged with TensorBoard's plugin names, because ``tf.summary.scalar``
    and ``tf.summary.text`` live in the ``tensorboard`` package, which we do not install;
    TensorBoard still shows them as scalars and text. TensorFlow is imported only when
    enabled, and GPUs are hidden from it so it does not claim the memory JAX needs.
    """

    def __init__(self, logdir: str, enabled: bool = True):
        self.logdir = logdir
        self.enabled = enabled
        self._tf: Any = None
        self._writer: Any = None
        if enabled:
            import tensorflow as tf  # heavy: only on the writing process

            try:
                tf.config.set_visible_devices([], "GPU")
            except (RuntimeError, ValueError):  # TF already initialised its devices
                pass
            self._tf = tf
            self._writer = tf.summary.create_file_writer(logdir)

    def _metadata(self, plugin_name: str) -> Any:
        metadata = self._tf.compat.v1.SummaryMetadata()
        metadata.plugin_data.plugin_name = plugin_name  # empty content = plugin data version 0
        return metadata

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            for name, value in scalars.items():
                tf.summary.write(name, tf.constant(float(value), tf.float32), step=int(step),
                                 metadata=self._metadata("scalars"))

    def write_text(self, step: int, name: str, text: str) -> None:
        """Free text such as the operative gin config (shown in TensorBoard's Text tab)."""
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            tf.summary.write(name, tf.constant(text, tf.string), step=int(step),
                             metadata=self._metadata("text"))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------- Progress


def format_duration(seconds: float) -> str:
    """H:MM:SS (hours unbounded), or '?' when not finite."""
    if not math.isfinite(seconds):
        return "?"
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """Compact progress lines for the training loop, printed at most every so often.

    A line is printed on the first update, on the last step, and otherwise when
    ``every_seconds`` have passed or ``every_steps`` steps were taken since the last line
    (either trigger may be None to disable it). The ETA uses the mean step time over the last
    ``window`` updates, so the first step's compilation stops distorting it after a while.
    ``clock`` is injectable so tests are deterministic.

    ``extra`` values are appended as ``name value``; the key ``"mfu"`` (a fraction) is shown
    as ``MFU 41.2%`` right after the throughput.
    """

    def __init__(self, total_steps: int, start_step: int = 0, stream: TextIO | None = None,
                 every_seconds: float | None = 10.0, every_steps: int | None = None,
                 window: int = 20, clock: Callable[[], float] = time.monotonic):
        self.total_steps = total_steps
        self.stream = stream if stream is not None else sys.stdout
        self.every_seconds = every_seconds
        self.every_steps = every_steps
        self._clock = clock
        self._start_time = clock()
        self._history: collections.deque[tuple[int, float]] = collections.deque(
            [(start_step, self._start_time)], maxlen=max(2, window + 1))
        self._last_print: tuple[int, float] | None = None
        self._last_fields: tuple[int, float, float, Mapping[str, Any] | None] | None = None
        self._closed = False

    def update(self, step: int, loss: float, tokens_per_second: float,
               extra: Mapping[str, Any] | None = None) -> bool:
        """Record ``step`` (steps completed); return whether a line was printed."""
        now = self._clock()
        self._history.append((step, now))
        self._last_fields = (step, loss, tokens_per_second, extra)
        if not self._due(step, now):
            return False
        line = self._format(step, loss, tokens_per_second, extra)
        self._write(f"{line} | ETA {format_duration(self.eta_seconds(step))}")
        self._last_print = (step, now)
        return True

    def eta_seconds(self, step: int) -> float:
        """Remaining steps times the mean step time over the window; nan before any data."""
        (first_step, first_time), (last_step, last_time) = self._history[0], self._history[-1]
        if last_step <= first_step:
            return math.nan
        per_step = (last_time - first_time) / (last_step - first_step)
        return max(0, self.total_steps - step) * per_step

    def close(self) -> None:
        """Print the final line with the elapsed time (once)."""
        if self._closed:
            return
        self._closed = True
        elapsed = format_duration(self._clock() - self._start_time)
        if self._last_fields is None:
            step = self._history[0][0]
            line = f"step {step}/{self.total_steps} ({self._percent(step)})"
        else:
            line = self._format(*self._last_fields)
        self._write(f"{line} | done in {elapsed}")

    def _due(self, step: int, now: float) -> bool:
        if self._last_print is None or step >= self.total_steps:
            return True
        last_step, last_time = self._last_print
        if self.every_steps is not None and step - last_step >= self.every_steps:
            return True
        return self.every_seconds is not None and now - last_time >= self.every_seconds

    def _percent(self, step: int) -> str:
        return f"{100.0 * step / self.total_steps:.1f}%" if self.total_steps else "n/a"

    def _format(self, step: int, loss: float, tokens_per_second: float,
                extra: Mapping[str, Any] | None) -> str:
        parts = [f"step {step}/{self.total_steps} ({self._percent(step)}) loss {loss:.4f}",
                 f"{tokens_per_second:,.0f} tok/s"]
        extra = dict(extra or {})
        if "mfu" in extra:
            value = float(extra.pop("mfu"))
            parts.append(f"MFU {100 * value:.1f}%" if math.isfinite(value) else "MFU n/a")
        for name, value in extra.items():
            parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
        return " | ".join(parts)

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
