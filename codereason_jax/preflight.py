"""Every check of a training run, in one place, before anything is written.

A refused command must leave no run directory behind and a refused resume must leave the
directory byte for byte as it was, so everything that can be checked without training is
checked here first: field types and ranges (when the configs are built), the vocabulary against
the embedding, the sequence length against the model, the mesh against the devices, the batch
against the data and fsdp shards and the hosts, the schedule and warmup against the steps, the
partitioning rules, the fine-tuning source, and an existing run directory's contract
(``run_contract``). What the checks derive (mesh, shardings, abstract state) is returned for the
run to use.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import optax

from codereason_jax import partitioning, paths
from codereason_jax.config_types import ConfigError
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.model.config import check_vocabulary_fits
from codereason_jax.optim import OptimizerConfig

if TYPE_CHECKING:
    from codereason_jax.checkpoints import CheckpointConfig
    from codereason_jax.trainer import TrainConfig


@dataclasses.dataclass
class RunSetup:
    """Everything a run needs, derived and checked before anything is written."""
    mesh: Any
    rules: partitioning.Rules
    model: PanGuDecoder
    schedule: Any
    optimizer: optax.GradientTransformation
    learning_rate: Callable[[int], Any]
    boxed: Any
    param_shardings: Any
    abstract_params: Any
    abstract_opt: Any
    opt_shardings: Any
    batch_sharding: Any
    contract: dict[str, Any]
    saved_contract: dict[str, Any] | None
    changes: dict[str, tuple[Any, Any]]
    resuming: bool  # the run directory holds checkpoints


def _use_vocabulary(config: TrainConfig) -> Any:
    """Register the tasks with the run's vocabulary; a bad spec is the user's to fix."""
    from seqio_tasks.default_vocabulary import use_vocabulary

    try:
        use_vocabulary(config.vocabulary)
        from seqio_tasks import mixing, mixtures  # noqa: F401 (registers tasks and mixtures)
        from seqio_tasks.tasks import VOCABULARY

        VOCABULARY.vocab_size  # loads the SentencePiece model: a missing file shows here
    except (ValueError, OSError) as err:
        raise ConfigError(f"TrainConfig.vocabulary={config.vocabulary!r}: {err}") from err
    return VOCABULARY


def _batch_shards(sharding: Any) -> int:
    """How many ways the batch dimension of ``sharding`` is split."""
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(sharding.mesh.shape[a] for a in axes)


def preflight(model_config: PanGuConfig, config: TrainConfig, optimizer_config: OptimizerConfig,
              checkpoint_config: CheckpointConfig, run_dir: str) -> RunSetup:
    """Every check of a run, in one place, before anything is written: vocabulary vs the
    embedding, sequence length vs the model, mesh vs devices, batch vs the data and fsdp axes
    and the hosts, schedule and warmup vs steps, the fine-tuning source, and, for an existing
    run directory, the run's contract (``run_contract``)."""
    from codereason_jax import run_contract
    from codereason_jax.checkpoints import check_source_fits

    vocabulary = _use_vocabulary(config)
    check_vocabulary_fits(vocabulary, model_config)
    from seqio_tasks.registry import resolve_schedule
    from seqio_tasks.tasks import VOCABULARY_SPEC

    if config.sequence_length > model_config.max_seq_len:
        raise ConfigError(
            f"TrainConfig.sequence_length={config.sequence_length} exceeds "
            f"PanGuConfig.max_seq_len={model_config.max_seq_len} (the model's position table); "
            "lower the sequence length or raise max_seq_len.")
    if optimizer_config.warmup_steps > config.num_steps:
        raise ConfigError(
            f"OptimizerConfig.warmup_steps={optimizer_config.warmup_steps} exceeds "
            f"TrainConfig.num_steps={config.num_steps}: the learning rate would never reach its "
            "peak. Lower warmup_steps or raise num_steps.")
    mesh = partitioning.make_mesh(
        partitioning.resolve_mesh_shape(config.mesh_shape, jax.device_count()))
    rules = partitioning.validate_rules(
        tuple(tuple(rule) for rule in config.logical_axis_rules)
        if config.logical_axis_rules is not None else partitioning.DEFAULT_RULES)
    batch_sharding = partitioning.batch_sharding(mesh, rules)
    shards = _batch_shards(batch_sharding)
    micro_batch = config.batch_size // config.grad_accumulation
    if micro_batch % shards:
        raise ConfigError(
            f"TrainConfig.batch_size={config.batch_size} / grad_accumulation="
            f"{config.grad_accumulation} = {micro_batch} rows per micro-batch do not split over "
            f"the {shards} batch shards of the mesh {dict(mesh.shape)} (data x fsdp); choose a "
            f"batch size that is a multiple of {shards * config.grad_accumulation}.")
    if config.batch_size % jax.process_count():
        raise ConfigError(f"TrainConfig.batch_size={config.batch_size} is not divisible by the "
                          f"{jax.process_count()} processes (hosts).")
    schedule = resolve_schedule(config.mixture, config.num_steps)
    optimizer, learning_rate = optimizer_config.build(config.num_steps)
    model = PanGuDecoder(model_config)
    example = jax.ShapeDtypeStruct((config.batch_size, config.sequence_length), jnp.int32)
    boxed, abstract_params, param_shardings, abstract_opt, opt_shardings = (
        partitioning.abstract_train_state(model, optimizer, example, mesh, rules, config.seed))
    checkpoints_dir = paths.join(run_dir, "checkpoints")
    resuming = paths.isdir(checkpoints_dir) and any(
        name.isdigit() for name in paths.listdir(checkpoints_dir))
    if config.init_from and not resuming:  # a resume never reads the source again
        check_source_fits(config.init_from, config.init_from_step, abstract_params)
    _check_eval_tasks(config)
    for log in ("metrics.jsonl", "eval.jsonl"):  # a damaged log stops us before any write
        paths.read_step_log(paths.join(run_dir, log))
    contract = run_contract.make_contract(
        model_config=model_config, train_config=config, optimizer_config=optimizer_config,
        checkpoint_config=checkpoint_config, abstract_params=abstract_params,
        abstract_opt_state=abstract_opt,
        vocabulary=run_contract.vocabulary_identity(vocabulary, VOCABULARY_SPEC),
        schedule_fingerprint=schedule.fingerprint(),
        data_source=data_source_identity(config, schedule.tasks))
    saved = run_contract.read(run_dir) if paths.isdir(run_dir) else None
    changes = (run_contract.check(saved, contract, run_dir, config.allow_schedule_change)
               if saved is not None else {})
    return RunSetup(mesh, rules, model, schedule, optimizer, learning_rate, boxed,
                    param_shardings, abstract_params, abstract_opt, opt_shardings,
                    batch_sharding, contract, saved, changes, resuming)


def data_source_identity(config: TrainConfig, tasks: tuple[str, ...]) -> dict[str, Any]:
    """Which pipeline makes the batches and, for a row store, a digest of the rows the run
    reads; the store is checked against the run's settings and for whole shards here."""
    if config.data_pipeline != "store":
        return {"pipeline": config.data_pipeline}
    import hashlib

    from seqio_tasks.row_store import manifest as manifest_lib
    from seqio_tasks.row_store.prepare import settings_for

    manifest = manifest_lib.read(config.row_store_dir)
    settings = settings_for(config.sequence_length, "train", config.pack_instructions,
                            config.overlong)
    manifest_lib.check_settings(manifest, settings, list(tasks), config.row_store_dir)
    digest = hashlib.sha256()
    for task in tasks:
        entry = manifest["sources"][task]
        manifest_lib.check_shards(config.row_store_dir, task, entry)
        digest.update(task.encode() + b"".join(s["sha256"].encode() for s in entry["shards"]))
    return {"pipeline": "store", "row_store_dir": config.row_store_dir,
            "rows": {task: manifest["sources"][task]["rows"] for task in tasks},
            "rows_sha256": digest.hexdigest()[:16]}


def _check_eval_tasks(config: TrainConfig) -> None:
    """Periodic evaluation's tasks exist (else the run would fail at step ``eval_every``)."""
    import seqio

    known = set(seqio.TaskRegistry.names())
    unknown = [task for task in config.eval_tasks if task not in known]
    if unknown:
        choices = sorted(name for name in known if name.startswith("eval_"))
        raise ConfigError(f"TrainConfig.eval_tasks names unknown tasks {unknown}; evaluation "
                          f"tasks: {choices}.")
