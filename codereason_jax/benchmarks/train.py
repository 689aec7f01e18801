"""The train suite: the JAX training step as the trainer runs it, prepared once and timed.

``JaxStep`` builds the model, the paper's optimizer (clip + AdamW without bias correction) and
``trainer.make_train_step`` exactly as ``trainer.train`` does (mesh, logical-axis rules,
parameter and optimizer-state shardings, donated buffers), on a fixed random batch already on
the devices, so the timing is the step alone: no input pipeline, no compilation (the step is
compiled ahead of time and the compile time reported apart).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from codereason_jax import partitioning, train_metrics
from codereason_jax.benchmarks import configs, timing
from codereason_jax.benchmarks.results import echo, format_rows, guarded
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.optim import OptimizerConfig
from codereason_jax.trainer import TrainConfig, make_train_step


class JaxStep:
    """One compiled, sharded train step; ``__call__`` runs it and waits for the result.

    ``packed``: the batch carries segment ids (documents packed into rows: attention is masked
    per document); False feeds one document per row, which lets the fused (cuDNN) attention
    use its built-in causal mask.
    """

    def __init__(self, config: PanGuConfig, batch_size: int, seq_len: int,
                 mesh_shape: Sequence[int] = (-1, 1, 1), packed: bool = False,
                 donate: bool = True, seed: int = 0):
        self.config = config
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.tokens = batch_size * seq_len
        self.mesh = partitioning.make_mesh(
            partitioning.resolve_mesh_shape(tuple(mesh_shape), jax.device_count()))
        rules = partitioning.DEFAULT_RULES
        model = PanGuDecoder(config)
        train_config = TrainConfig(mixture="bench", num_steps=1000, batch_size=batch_size,
                                   sequence_length=seq_len, seed=seed,
                                   mesh_shape=tuple(self.mesh.devices.shape))
        optimizer, _ = OptimizerConfig(warmup_steps=10).build(1000)
        example = jnp.zeros((1, seq_len), jnp.int32)
        _, abstract_params, param_shardings, abstract_opt, opt_shardings = (
            partitioning.abstract_train_state(model, optimizer, example, self.mesh, rules, seed))
        batch_sharding = partitioning.batch_sharding(self.mesh, rules)

        rng = np.random.default_rng(seed)
        tokens = rng.integers(0, config.vocab_size, (batch_size, seq_len + 1), dtype=np.int32)
        host_batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                      "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32),
                                                   (batch_size, seq_len)).copy(),
                      "loss_weights": np.ones((batch_size, seq_len), np.float32)}
        if packed:
            host_batch["segment_ids"] = np.ones((batch_size, seq_len), np.int32)
        with jax.set_mesh(self.mesh):
            self.batch = {k: jax.device_put(v, batch_sharding) for k, v in host_batch.items()}
            self.params = jax.jit(
                lambda key: nn.meta.unbox(model.init(key, example)["params"]),
                out_shardings=param_shardings)(jax.random.key(seed))
            self.opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(self.params)
            step_fn = jax.jit(make_train_step(model, optimizer, train_config, rules),
                              in_shardings=(param_shardings, opt_shardings, batch_sharding,
                                            None),
                              out_shardings=(param_shardings, opt_shardings, None),
                              donate_argnums=(0, 1) if donate else ())
            start = time.perf_counter()
            lowered = step_fn.lower(self.params, self.opt_state, self.batch, 0)
            self.compiled = lowered.compile()
            self.compile_s = time.perf_counter() - start
        self.step = 0
        self.losses: list[float] = []
        self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))

    def __call__(self) -> float:
        self.params, self.opt_state, step_metrics = self.compiled(
            self.params, self.opt_state, self.batch, jnp.int32(self.step))
        self.step += 1
        loss = float(jax.device_get(step_metrics["loss"]))  # waits for the step
        self.losses.append(loss)
        return loss

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"compile_s": self.compile_s, "num_params": self.num_params,
                               "losses_first_last": [self.losses[0], self.losses[-1]]
                               if self.losses else []}
        try:
            memory = self.compiled.memory_analysis()
            if memory is not None:
                out["xla_memory_bytes"] = {
                    name: int(getattr(memory, name)) for name in (
                        "argument_size_in_bytes", "output_size_in_bytes",
                        "temp_size_in_bytes", "generated_code_size_in_bytes",
                        "alias_size_in_bytes") if hasattr(memory, name)}
        except Exception:  # noqa: BLE001 - not every backend reports it
            pass
        return out

    def close(self) -> None:
        for tree in (self.params, self.opt_state, self.batch):
            for leaf in jax.tree.leaves(tree):
                leaf.delete()
        self.params = self.opt_state = self.batch = None
        self.compiled = None


def flops_convention(config: PanGuConfig, seq_len: int) -> dict[str, Any]:
    return {"training_flops_per_token": train_metrics.training_flops_per_token(config, seq_len),
            "matmul_params": train_metrics.matmul_params(config),
            "convention": "6 N_matmul + 6 L T d per token: N_matmul = L(4d^2 + 2 d d_ff) + V d "
                          "(the query layer in L, the tied head once); causal attention "
                          "QK^T and AV counted once (half the square), x3 for fwd+bwd; "
                          "embedding lookups, biases, LayerNorms and remat recomputation not "
                          "counted"}


# ----------------------------------------------------------------------------- train suite


class PeakFlops:
    """The peak FLOP/s per device for MFU: measured on CPU (sampled during the run), else the
    table of codereason_jax.train_metrics."""

    def __init__(self, dtype: str, size: int):
        self.device = jax.devices()[0]
        self.sampler = None
        if self.device.platform == "cpu":
            self.sampler = timing.MatmulPeak(size)
            self.sampler.sample(3)
            self.source = f"measured float32 {size}x{size} matmul on cpu, median of samples"
            self.table = math.nan
        else:
            self.table, self.source = train_metrics.peak_flops_per_device(self.device, dtype)

    def value(self) -> float:
        return self.sampler.peak() if self.sampler is not None else self.table

    def summary(self) -> dict[str, Any]:
        out = {"peak_flops_per_device": self.value(), "peak_source": self.source}
        if self.sampler is not None:
            out["cpu_matmul"] = self.sampler.summary()
        return out


def train_one(args: argparse.Namespace, name: str, peak: PeakFlops | None = None,
              extra_steps: dict[str, Callable[[], Any]] | None = None,
              batch: int | None = None, remat: str | None = None) -> dict[str, Any]:
    """Build, compile, warm up and time one config's train step (interleaving ``extra_steps``
    round by round when given: the peer suite)."""
    platform_name = jax.devices()[0].platform
    options = configs.options_from_args(args, platform_name, remat)
    batch, seq = configs.shape_from_args(args, name, batch)
    config = configs.build_config(name, options, args.dropout, max_seq_len=seq)
    peak = peak or PeakFlops(config.dtype, args.peak_size)
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
        row["profile"] = guarded("profile", traced)
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
                 "mfu": train_metrics.mfu(tokens_per_s / devices, per_token, peak_value)}
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


def suite_train(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every config x batch size x remat policy of the command line; a failure becomes an
    error row and the next setting runs."""
    rows = []
    for name in args.configs:
        for batch in args.batch_sizes:
            for remat in args.remats:
                label = f"train {name} batch={batch or 'default'} remat={remat}"
                echo(f"[bench] {label} ...")
                row = guarded(label, lambda: train_one(args, name, batch=batch, remat=remat))
                row.setdefault("suite", "train")
                row.setdefault("config", name)
                rows.append(row)
                echo(format_rows([row]))
                _free_memory()
    return rows


def _free_memory() -> None:
    """Drop the last setting's buffers and compiled steps before the next one is built."""
    gc.collect()
    jax.clear_caches()
