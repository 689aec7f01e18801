"""Orbax checkpoints of a training run: params, optimizer state and the run's position.

Layout: ``RUN_DIR/checkpoints/<step>/{params,opt_state,meta}``. ``meta`` is JSON: the step, the
data position (the batch sequence is a pure function of the step, so the step *is* the
position), the mixture name and schedule fingerprint, the seed and the batch shape. The RNG
needs no state: dropout keys are ``fold_in(key(seed), step)``.

``RUN_DIR`` may be a local path or a URL (``gs://BUCKET/...``, shared by the hosts of a slice):
every path goes through ``codereason_jax.paths``, and Orbax reads and writes URLs itself.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed mid-save leaves no directory that looks complete. On restore the newest
checkpoint that loads is used; one that fails to load is reported and skipped, never used.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import orbax.checkpoint as ocp

from codereason_jax import paths

ITEMS = ("params", "opt_state", "meta")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used for this run; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When to save and what to keep."""
    every_steps: int = 1000
    keep_last: int = 3
    keep_every: int | None = None  # also keep every K-th step forever (None: no)
    async_save: bool = True

    def __post_init__(self):
        if self.every_steps <= 0:
            raise CheckpointError(f"CheckpointConfig.every_steps={self.every_steps} must be > 0.")
        if self.keep_last <= 0:
            raise CheckpointError(f"CheckpointConfig.keep_last={self.keep_last} must be > 0.")
        if self.keep_every is not None and self.keep_every <= 0:
            raise CheckpointError(f"CheckpointConfig.keep_every={self.keep_every} must be > 0.")


def _manager(directory: str, config: CheckpointConfig, read_only: bool = False
             ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_last, keep_period=config.keep_every,
        enable_async_checkpointing=config.async_save, create=not read_only,
        read_only=read_only, cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(paths.resolve(directory), options=options, item_names=ITEMS)


class RunCheckpoints:
    """Save and restore the state of one run directory."""

    def __init__(self, run_dir: str, config: CheckpointConfig):
        self.directory = paths.join(paths.resolve(run_dir), "checkpoints")
        self.config = config
        self._manager = _manager(self.directory, config)

    def save(self, step: int, params: Any, opt_state: Any, meta: dict[str, Any],
             force: bool = False) -> bool:
        """Save (asynchronously if configured); returns whether a save started."""
        if not force and step % self.config.every_steps:
            return False
        return self._manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(meta)), force=force)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, abstract_params: Any, abstract_opt_state: Any
                       ) -> tuple[int, Any, Any, dict[str, Any]] | None:
        """(step, params, opt_state, meta) of the newest checkpoint that loads, or None."""
        for step in reversed(self.steps()):
            step_dir = paths.join(self.directory, str(step))
            if (paths.isdir(paths.join(step_dir, "params"))
                    and not paths.isdir(paths.join(step_dir, "opt_state"))):
                # Weights alone (e.g. from convert_pangu): a source to fine-tune from, never
                # a run to resume into, where later saves would delete it.
                raise CheckpointError(
                    f"{step_dir} holds parameters without optimizer state (converted or exported "
                    "weights): start a new --run_dir and set TrainConfig.init_from to "
                    f"{paths.dirname(self.directory)!r} to fine-tune from it.")
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_params),
                    opt_state=ocp.args.StandardRestore(abstract_opt_state),
                    meta=ocp.args.JsonRestore()))
            except Exception as err:  # noqa: BLE001 (any failure means: do not use it)
                logging.warning("Checkpoint %s/%d cannot be loaded (%s: %s); skipping it.",
                                self.directory, step, type(err).__name__, err)
                print(f"warning: checkpoint at step {step} in {self.directory} is incomplete or "
                      f"corrupt ({type(err).__name__}); skipping it.", flush=True)
                continue
            return step, restored.params, restored.opt_state, dict(restored.meta)
        return None


def _checkpoint_steps(checkpoint_dir: str) -> tuple[str, list[int]]:
    """The checkpoints/ directory of a run dir (or the directory itself) and its complete
    steps, ascending."""
    directory = paths.resolve(checkpoint_dir)
    if paths.isdir(paths.join(directory, "checkpoints")):
        directory = paths.join(directory, "checkpoints")
    if not paths.isdir(directory):
        raise CheckpointError(f"No checkpoint directory at {checkpoint_dir}; give the run "
                              "directory of the pre-training run (or its checkpoints/ folder).")
    manager = _manager(directory, CheckpointConfig(async_save=False), read_only=True)
    try:
        steps = sorted(manager.all_steps())
    finally:
        manager.close()
    if not steps:
        raise CheckpointError(f"{directory} holds no complete checkpoint.")
    return directory, steps


def latest_step(checkpoint_dir: str) -> int:
    """The step ``restore_params`` restores by default, without reading any array."""
    return _checkpoint_steps(checkpoint_dir)[1][-1]


def restore_params(checkpoint_dir: str, abstract_params: Any, step: int | None = None
                   ) -> tuple[int, Any]:
    """Params of a checkpoint directory (a run dir or its ``checkpoints/``), restored directly
    into ``abstract_params``' shardings: the source run's mesh does not matter."""
    directory, steps = _checkpoint_steps(checkpoint_dir)
    chosen = steps[-1] if step is None else step
    if chosen not in steps:
        raise CheckpointError(f"{directory} has no checkpoint at step {step}; it has {steps}.")
    manager = _manager(directory, CheckpointConfig(async_save=False), read_only=True)
    try:
        restored = manager.restore(chosen, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params)))
        return chosen, restored.params
    finally:
        manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying ``shardings``: restore targets that allocate nothing."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)
