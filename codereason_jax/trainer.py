"""The training loop: sharded train step, deterministic data, checkpoints, exact resume.

The step is a pure function of (params, opt_state, batch, step): dropout keys are
``fold_in(key(seed), step)`` and the batch at a step is a pure function of the step
(``seqio_tasks.mixing``), so a run restored from the checkpoint of step s continues exactly as
the uninterrupted run would have (bitwise on CPU).

The run directory may be a local path or a URL (``gs://BUCKET/...``) that every host shares:
its files go through ``codereason_jax.paths`` and are written by process 0 only. On a URL,
``metrics.jsonl`` and ``eval.jsonl`` are rewritten whole before each checkpoint save, every
few minutes and at exit (``paths.StepLog``: object stores cannot append).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from codereason_jax import dropped_rows, partitioning, paths
from codereason_jax.config_types import ConfigError, check_field_types
from codereason_jax.losses import cross_entropy
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.optim import OptimizerConfig
from codereason_jax.prefetch import Prefetcher
from codereason_jax.preemption import Preemption
from seqio_tasks.mixing import DEFAULT_ROW_SHUFFLE_BUFFER

if TYPE_CHECKING:  # Orbax and gin only where a run is set up: the train step needs neither
    from codereason_jax.checkpoints import CheckpointConfig

OVERLONG = ("drop", "truncate", "error")
DATA_PIPELINES = ("stream", "store")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What to train on, for how long, on which mesh."""
    mixture: str
    num_steps: int
    batch_size: int
    sequence_length: int
    seed: int = 0
    # (data, fsdp, model); one -1 takes the remaining devices.
    mesh_shape: tuple[int, int, int] = (-1, 1, 1)
    # Micro-batches per step, accumulated inside the jitted step (one optimizer update).
    grad_accumulation: int = 1
    log_every: int = 10
    pack_instructions: bool = False
    overlong: str = "drop"
    # Packed rows each pre-training stream shuffles through, so that the rows of one long
    # document spread over many batches (0: packing order, as the paper's pipeline).
    row_shuffle_buffer: int = DEFAULT_ROW_SHUFFLE_BUFFER
    # Where rows come from: "stream" packs each SeqIO task on the fly from its start (the
    # embedded default and quick runs; a resume re-reads what was consumed), "store" reads
    # rows prepared once by `python -m codereason_jax.prepare_rows` from `row_store_dir`, by
    # index (each host only its own rows; a resume costs what a start costs). The two orders
    # differ by design (docs/data.md); a run keeps the one it started with.
    data_pipeline: str = "stream"
    row_store_dir: str | None = None
    # Host batches prepared ahead in a background thread while the device runs the current
    # step (0: prepare each batch only when it is needed). Batches are the same either way.
    prefetch_batches: int = 2
    # Stop after this many consecutive steps with a non-finite loss or gradient.
    max_consecutive_nonfinite: int = 5
    # Fine-tuning: initialise params from this run (or checkpoints/) directory, step 0 (a
    # local path or a URL such as gs://BUCKET/runs/pretrain).
    init_from: str | None = None
    init_from_step: int | None = None
    # Resume even if the mixture schedule differs from the checkpoint's.
    allow_schedule_change: bool = False
    # The paper's loss divides by (number of tokens + 1e-5); 0 gives the exact mean.
    loss_denominator_epsilon: float = 0.0
    # Where local copies of the real datasets live (overrides $CODEREASON_DATA_DIR).
    data_dir: str | None = None
    # The tasks' vocabulary: None or "embedded" (the default SentencePiece model), or
    # "pangu:PATH" (the released PanGu-α vocab.model, for converted PanGu-α weights),
    # "chatglm:PATH", "sentencepiece:PATH" (overrides $CODEREASON_VOCABULARY).
    vocabulary: str | None = None
    # Logical-axis rules ((logical name, mesh axis or axes or None), ...); None: the defaults
    # of codereason_jax.partitioning (data x fsdp x model).
    logical_axis_rules: tuple | None = None
    # Periodic evaluation every N steps (None: never): the loss on `eval_batches` validation
    # batches of each training task (per-source eval loss), and the metrics of `eval_tasks`
    # (at most `eval_max_examples` examples each), to TensorBoard and RUN_DIR/eval.jsonl.
    eval_every: int | None = None
    eval_batches: int = 2
    eval_tasks: tuple[str, ...] = ()
    eval_max_examples: int = 50

    def __post_init__(self):
        check_field_types(self)
        for name in ("num_steps", "batch_size", "sequence_length", "grad_accumulation",
                     "log_every", "max_consecutive_nonfinite"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} must be > 0.")
        if self.prefetch_batches < 0:
            raise ConfigError(f"TrainConfig.prefetch_batches={self.prefetch_batches} must be "
                              ">= 0 (0: no prefetching).")
        if self.row_shuffle_buffer < 0:
            raise ConfigError(f"TrainConfig.row_shuffle_buffer={self.row_shuffle_buffer} must "
                              "be >= 0 (0: rows in packing order).")
        if self.batch_size % self.grad_accumulation:
            raise ConfigError(
                f"TrainConfig.batch_size={self.batch_size} is not divisible by "
                f"TrainConfig.grad_accumulation={self.grad_accumulation}.")
        if self.overlong not in OVERLONG:
            raise ConfigError(f"TrainConfig.overlong={self.overlong!r} is not one of {OVERLONG}.")
        if self.data_pipeline not in DATA_PIPELINES:
            raise ConfigError(f"TrainConfig.data_pipeline={self.data_pipeline!r} is not one of "
                              f"{DATA_PIPELINES}.")
        if self.data_pipeline == "store" and not self.row_store_dir:
            raise ConfigError("TrainConfig.data_pipeline='store' needs TrainConfig.row_store_dir"
                              " (a store made by python -m codereason_jax.prepare_rows).")
        if len(self.mesh_shape) != 3 or list(self.mesh_shape).count(-1) > 1:
            raise ConfigError(f"TrainConfig.mesh_shape={self.mesh_shape} must be 3 sizes "
                              "(data, fsdp, model), at most one of them -1.")



def _tree_where(condition: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(condition, n, o), new, old)


def make_train_step(model: PanGuDecoder, optimizer: optax.GradientTransformation,
                    config: TrainConfig, rules: partitioning.Rules) -> Callable:
    """(params, opt_state, batch, step) -> (params, opt_state, metrics), to be jitted."""
    accumulation = config.grad_accumulation

    def micro_loss(params, micro, key):
        with nn.logical_axis_rules(rules):
            # A batch without segment ids (or positions) is one document per row.
            logits = model.apply({"params": params}, micro["inputs"], micro.get("positions"),
                                 micro.get("segment_ids"), deterministic=False,
                                 rngs={"dropout": key})
        return cross_entropy(logits, micro["targets"], micro["loss_weights"])

    def train_step(params, opt_state, batch, step):
        base_key = jax.random.fold_in(jax.random.key(config.seed), step)
        # Micro-batch i holds rows i, i+k, i+2k, ...: each stays spread over the data axis.
        micro = {k: jnp.swapaxes(v.reshape((-1, accumulation) + v.shape[1:]), 0, 1)
                 for k, v in batch.items() if k in ("inputs", "targets", "positions",
                                                    "segment_ids", "loss_weights")}

        def accumulate(carry, xs):
            grads, loss_sum, weight_sum = carry
            index, mb = xs
            (loss, weight), g = jax.value_and_grad(
                lambda p: micro_loss(p, mb, jax.random.fold_in(base_key, index)),
                has_aux=True)(params)
            grads = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads, g)
            return (grads, loss_sum + loss, weight_sum + weight), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        (grads, loss_sum, weight_sum), _ = jax.lax.scan(
            accumulate, (zeros, jnp.float32(0), jnp.float32(0)),
            (jnp.arange(accumulation), micro))
        denominator = weight_sum + config.loss_denominator_epsilon
        grads = jax.tree.map(lambda g: g / denominator, grads)
        loss = loss_sum / denominator
        grad_norm = optax.tree.norm(grads)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(
            optax.tree.norm(new_params))
        # A step with a non-finite loss, gradient or result changes nothing: params and
        # optimizer state stay as they were, so no checkpoint ever holds non-finite params.
        params = _tree_where(finite, new_params, params)
        opt_state = _tree_where(finite, new_opt_state, opt_state)
        return params, opt_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite,
                                   "loss_tokens": weight_sum}

    return train_step


def _format_bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def parameter_table(boxed: Any, shardings: Any) -> str:
    """Name, shape, logical axes, mesh sharding and bytes per device of every parameter."""
    rows = [("name", "shape", "logical axes", "sharding", "per device")]
    total = 0
    flat_boxes = jax.tree_util.tree_flatten_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    for (path, box), sharding in zip(flat_boxes, jax.tree.leaves(shardings)):
        value = box.value
        shard = sharding.shard_shape(value.shape)
        nbytes = math.prod(shard) * jnp.dtype(value.dtype).itemsize
        total += nbytes
        rows.append(("/".join(str(getattr(k, "key", k)) for k in path), str(value.shape),
                     str(tuple(box.names)), str(tuple(sharding.spec)), _format_bytes(nbytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append(f"total parameter bytes per device: {_format_bytes(total)}")
    return "\n".join(lines)


class _Peeked:
    """An iterator with its first item already taken (to check the data before the run
    directory exists), yielding it first; attributes fall through (``plan``, ``streams``)."""

    def __init__(self, iterator: Any):
        self._iterator = iterator
        self._first = [next(iterator)]

    def __iter__(self):
        return self

    def __next__(self):
        return self._first.pop() if self._first else next(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)


def train(model_config: PanGuConfig, config: TrainConfig, optimizer_config: OptimizerConfig,
          checkpoint_config: CheckpointConfig, run_dir: str,
          on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run (or resume) training in ``run_dir``; returns a summary of the run.

    Nothing is written before :func:`preflight` has passed and, for a new run directory, the
    first batch has been read: a refused command leaves no directory behind, and a refused
    resume leaves the directory byte for byte as it was."""
    # Imported here so that the train step (make_train_step) needs no Orbax or gin.
    from codereason_jax import failpoints, run_contract
    from codereason_jax.train_eval import make_evaluator
    from codereason_jax.checkpoints import RunCheckpoints, abstract_like, restore_params

    if config.data_dir:
        os.environ["CODEREASON_DATA_DIR"] = config.data_dir
    from codereason_jax.preflight import preflight

    setup = preflight(model_config, config, optimizer_config, checkpoint_config, run_dir)
    from codereason_jax import train_metrics as metrics_lib
    from seqio_tasks import mixing

    is_chief = jax.process_index() == 0
    mesh = setup.mesh

    def data_from(step: int):
        if config.data_pipeline == "store":
            from seqio_tasks.row_store.reader import store_iterator

            return store_iterator(
                config.mixture, config.row_store_dir, sequence_length=config.sequence_length,
                batch_size=config.batch_size, seed=config.seed, start_step=step,
                total_steps=config.num_steps, host_index=jax.process_index(),
                host_count=jax.process_count(), pack_instructions=config.pack_instructions,
                overlong=config.overlong)
        return mixing.mixture_iterator(
            config.mixture, sequence_length=config.sequence_length,
            batch_size=config.batch_size, seed=config.seed, start_step=step,
            total_steps=config.num_steps, host_index=jax.process_index(),
            host_count=jax.process_count(), pack_instructions=config.pack_instructions,
            overlong=config.overlong, row_shuffle_buffer=config.row_shuffle_buffer)

    data = None if setup.resuming else _Peeked(data_from(0))  # data errors come first
    if is_chief or not paths.is_url(run_dir):  # a shared URL is made once, by process 0
        paths.makedirs(run_dir)
    if is_chief:
        print(f"mesh {dict(mesh.shape)} over {jax.device_count()} "
              f"{jax.devices()[0].platform} device(s), {jax.process_count()} process(es)")
        print(parameter_table(setup.boxed, setup.param_shardings), flush=True)
        for name, (old, new) in setup.changes.items():
            print(f"note: {name} changed from {old!r} to {new!r} (recorded in "
                  f"{run_contract.RUN_FILE})", flush=True)

    # Peak FLOP/s for MFU: from the table for accelerators, measured once here on CPU.
    peak, _ = metrics_lib.peak_flops_per_device(dtype=model_config.dtype)
    checkpoints = RunCheckpoints(run_dir, checkpoint_config)
    meta_base = {"mixture": config.mixture, "schedule_fingerprint": setup.schedule.fingerprint(),
                 "seed": config.seed, "batch_size": config.batch_size,
                 "sequence_length": config.sequence_length}
    with jax.set_mesh(mesh):
        restored = checkpoints.restore_latest(
            abstract_like(setup.abstract_params, setup.param_shardings),
            abstract_like(setup.abstract_opt, setup.opt_shardings))
        if restored is not None:
            start_step, params, opt_state, meta = restored
            if setup.saved_contract is None:  # a run directory from before run.json
                _check_resume_meta(meta, meta_base, config, run_dir)
            if is_chief:
                print(f"resuming from the checkpoint of step {start_step}", flush=True)
        else:
            start_step = 0
            if config.init_from:
                source_step, params = restore_params(
                    config.init_from, abstract_like(setup.abstract_params,
                                                    setup.param_shardings),
                    config.init_from_step)
                if is_chief:
                    print(f"initialised params from {config.init_from} (step {source_step}); "
                          "fresh optimizer state, step 0", flush=True)
            else:
                params = jax.jit(
                    lambda key: nn.meta.unbox(setup.model.init(key, jnp.zeros(
                        (config.batch_size, config.sequence_length), jnp.int32))["params"]),
                    out_shardings=setup.param_shardings)(jax.random.key(config.seed))
            opt_state = jax.jit(setup.optimizer.init, out_shardings=setup.opt_shardings)(params)
        if is_chief:
            run_contract.write(run_dir, setup.saved_contract, setup.contract, setup.changes,
                               start_step)

        step_fn = jax.jit(make_train_step(setup.model, setup.optimizer, config, setup.rules),
                          in_shardings=(setup.param_shardings, setup.opt_shardings,
                                        setup.batch_sharding, None),
                          out_shardings=(setup.param_shardings, setup.opt_shardings, None),
                          donate_argnums=(0, 1))
        if data is None or start_step != 0:
            data = data_from(start_step)
        if config.prefetch_batches:
            data = Prefetcher(data, config.prefetch_batches)
        evaluator = (make_evaluator(setup.model, model_config, config, setup.rules,
                                     setup.batch_sharding, data.plan.sources)
                     if config.eval_every else None)
        if on_start is not None:
            on_start()
        try:
            summary = _loop(step_fn, params, opt_state, data, start_step, config, model_config,
                            setup.learning_rate, checkpoints, meta_base, setup.batch_sharding,
                            run_dir, is_chief, metrics_lib, peak, evaluator, failpoints)
        except BaseException:
            checkpoints.abandon()
            raise
        finally:
            if isinstance(data, Prefetcher):
                data.close()
    checkpoints.close()
    summary["corpora"] = dropped_rows.corpus_reads()
    if is_chief:
        paths.write_text(paths.join(run_dir, "summary.json"), json.dumps(summary, indent=1))
    return summary


def _check_resume_meta(meta: dict, expected: dict, config: TrainConfig, run_dir: str) -> None:
    from codereason_jax.checkpoints import CheckpointError

    for key in ("seed", "batch_size", "sequence_length"):
        if meta.get(key) != expected[key]:
            raise CheckpointError(
                f"The checkpoint in {run_dir} was written with {key}={meta.get(key)}, but this "
                f"run has {key}={expected[key]}; resuming would not reproduce the run. Use a new "
                "run directory (and TrainConfig.init_from to start from these weights).")
    if meta.get("schedule_fingerprint") != expected["schedule_fingerprint"] and (
            not config.allow_schedule_change):
        raise CheckpointError(
            f"The mixture schedule changed under {run_dir}: the checkpoint used "
            f"{meta.get('mixture')!r} (fingerprint {meta.get('schedule_fingerprint')}), this run "
            f"{expected['mixture']!r} (fingerprint {expected['schedule_fingerprint']}). Set "
            "TrainConfig.allow_schedule_change = True to continue anyway.")


def _loop(step_fn, params, opt_state, data, start_step, config, model_config, learning_rate,
          checkpoints, meta_base, batch_sharding, run_dir, is_chief, metrics_lib, peak,
          evaluator, failpoints):
    preemption = Preemption()
    writer = metrics_lib.MetricsWriter(paths.join(run_dir, "tensorboard"), enabled=is_chief)
    progress = metrics_lib.Progress(config.num_steps, start_step=start_step) if is_chief else None
    flops_per_token = metrics_lib.training_flops_per_token(model_config, config.sequence_length)
    # Each step once across resumes: a resumed run forgets, then rewrites, what it recomputes.
    metrics_log = eval_log = None
    if is_chief:
        metrics_log = paths.StepLog(paths.join(run_dir, "metrics.jsonl"), start_step)
        eval_log = paths.StepLog(paths.join(run_dir, "eval.jsonl"), start_step + 1)
    logs = [log for log in (metrics_log, eval_log) if log is not None]

    def save(step: int, params, opt_state, force: bool = False) -> None:
        if force or step % checkpoints.config.every_steps == 0:
            for log in logs:  # first: a resumable checkpoint never runs ahead of the files
                log.flush()
        if checkpoints.save(step, params, opt_state, {**meta_base, "step": step}, force=force):
            failpoints.reached("pause_saving", step)

    sources = data.plan.sources
    consecutive_bad, last_loss, step = 0, float("nan"), start_step
    row_stats: dict[str, dict[str, int]] = {}
    tokens_per_step = config.batch_size * config.sequence_length
    window_start, window_steps = time.perf_counter(), 0
    try:
        for step in range(start_step, config.num_steps):
            checkpoints.check()  # a failed asynchronous save stops the run at once
            host_batch = next(data)
            source_ids = host_batch.pop("source_ids")
            row_stats = data.row_stats(step)
            done = step + 1
            logging_step = done % config.log_every == 0 or done == config.num_steps
            batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
                     for k, v in host_batch.items()}
            params, opt_state, step_metrics = step_fn(params, opt_state, batch, step)
            step_metrics = jax.device_get(step_metrics)
            loss = float(step_metrics["loss"])
            finite = bool(step_metrics["finite"])
            consecutive_bad = 0 if finite else consecutive_bad + 1
            record = {"step": step, "loss": loss, "grad_norm": float(step_metrics["grad_norm"]),
                      "learning_rate": float(learning_rate(step)), "finite": finite,
                      "stage": data.plan.schedule.stage_index(step) + 1}
            real = (host_batch["segment_ids"] > 0).sum(axis=1)
            shares = {f"share/{name}": float(real[source_ids == j].sum() / max(1, real.sum()))
                      for j, name in enumerate(sources)}
            if logging_step:  # what each source's rules dropped so far (counts from step 0)
                record.update(dropped_rows.scalars(row_stats))
            if is_chief:
                metrics_log.append({**record, **shares})
            if failpoints.placed("fsize", done):
                checkpoints.wait()  # the disk fills after the saves so far: a known point
            failpoints.reached("fsize", done)
            failpoints.reached("pause", done)
            if not finite:
                print(f"warning: step {step}: non-finite loss or gradient (loss={loss}); the "
                      f"update was not applied ({consecutive_bad} in a row).", flush=True)
                if consecutive_bad >= config.max_consecutive_nonfinite:
                    raise FloatingPointError(
                        f"{consecutive_bad} consecutive non-finite steps up to step {step}; "
                        "stopping. Lower the learning rate, check the data at these steps "
                        "(inspect_mixture), or raise TrainConfig.max_consecutive_nonfinite.")
            else:
                last_loss = loss
            window_steps += 1
            if is_chief and logging_step:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_steps * tokens_per_step / max(elapsed, 1e-9)
                per_device = tokens_per_s / jax.device_count()
                mfu = metrics_lib.mfu(per_device, flops_per_token, peak)
                writer.write_scalars(done, {**record, **shares, "tokens_per_second": tokens_per_s,
                                            "tokens_per_second_per_device": per_device,
                                            "mfu": mfu})
                progress.update(done, loss, tokens_per_s, {"mfu": mfu})
                window_start, window_steps = time.perf_counter(), 0
            if evaluator is not None and done % config.eval_every == 0:
                results = evaluator(params)
                if is_chief:
                    writer.write_scalars(done, results)
                    eval_log.append({"step": done, **results})
            save(done, params, opt_state)
            if preemption.reached(done):
                save(done, params, opt_state, force=True)
                checkpoints.wait()
                print(f"SIGTERM: saved the checkpoint of step {done} and stopped; run the same "
                      f"command to resume.{preemption.how}", flush=True)
                return {"step": done, "loss": last_loss, "preempted": True,
                        "rows": row_stats}
        if config.num_steps % checkpoints.config.every_steps:
            save(config.num_steps, params, opt_state, force=True)
        checkpoints.wait()
    finally:
        preemption.restore()
        for log in logs:
            log.flush()
        writer.close()
        if progress is not None:
            progress.close()
    return {"step": config.num_steps, "loss": last_loss, "preempted": False, "rows": row_stats}
