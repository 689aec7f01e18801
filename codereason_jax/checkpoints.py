"""Orbax checkpoints of a training run: params, optimizer state and the run's position.

Layout: ``RUN_DIR/checkpoints/<step>/{params,opt_state,meta}``. ``meta`` is JSON: the step, the
data position (the batch sequence is a pure function of the step, so the step *is* the
position), the mixture name and schedule fingerprint, the seed and the batch shape. The RNG
needs no state: dropout keys are ``fold_in(key(seed), step)``.

``RUN_DIR`` may be a local path or a URL (``gs://BUCKET/...``, shared by the hosts of a slice):
every path goes through ``codereason_jax.paths``, and Orbax reads and writes URLs itself.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed mid-save leaves no directory that looks complete. On resume the newest
checkpoint that loads is used; one that fails to load is moved aside (kept), never used, and
its step is saved again; one of other shapes is refused as another run's. A failed write
stops the run with one message naming the path.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import sys
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp

from codereason_jax import paths
from codereason_jax.cli import RunWriteError
from codereason_jax.config_types import check_field_types


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used for this run; the message says why and what to do."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint that loads holds parameters of other shapes: another configuration's."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When to save and what to keep."""
    every_steps: int = 1000
    keep_last: int = 3
    keep_every: int | None = None  # also keep steps divisible by K for good (None: no)
    async_save: bool = True

    def __post_init__(self):
        check_field_types(self)
        if self.every_steps <= 0:
            raise CheckpointError(f"CheckpointConfig.every_steps={self.every_steps} must be > 0.")
        if self.keep_last <= 0:
            raise CheckpointError(f"CheckpointConfig.keep_last={self.keep_last} must be > 0.")
        if self.keep_every is not None and self.keep_every <= 0:
            raise CheckpointError(f"CheckpointConfig.keep_every={self.keep_every} must be > 0.")
        if self.keep_every is not None and self.keep_every % self.every_steps:
            # Orbax keeps the steps divisible by keep_every: with saves every 1000 steps and
            # keep_every 1500, only every 3000th step would be kept, which nobody asks for.
            raise CheckpointError(
                f"CheckpointConfig.keep_every={self.keep_every} is not a multiple of "
                f"CheckpointConfig.every_steps={self.every_steps}; only steps divisible by both "
                "would be kept for good. Use a multiple of every_steps.")


def _manager(directory: str, config: CheckpointConfig, read_only: bool = False
             ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_last, keep_period=config.keep_every,
        enable_async_checkpointing=config.async_save, create=not read_only,
        read_only=read_only, cleanup_tmp_directories=not read_only)
    # Handlers named up front: the metadata of a checkpoint (its shapes) can then be read
    # before anything is restored.
    handlers = {"params": ocp.StandardCheckpointHandler(),
                "opt_state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(paths.resolve(directory), options=options,
                                 item_handlers=handlers)


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EPERM,
                 errno.EROFS, errno.EIO)


def describe_write_failure(err: BaseException | str) -> str | None:
    """What failed, if ``err`` is a refused write: an OSError anywhere in its chain, or
    TensorStore's error text (Orbax's array writer), which carries the errno as
    ``os_error_code``. None for anything else (a bug keeps its traceback)."""
    if isinstance(err, str):
        match = _OS_ERROR_CODE.search(err)
        if match and int(match.group(1)) in _WRITE_ERRNOS:
            path = re.search(r'Failed writing: "([^"]+)"', err)
            return os.strerror(int(match.group(1))) + (f" ({path.group(1)})" if path else "")
        return None
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
            return (err.strerror or str(err)) + (f" ({err.filename})" if err.filename else "")
        described = describe_write_failure(str(err))
        if described:
            return described
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


# Orbax logs through absl; a failed write's pending futures are reported by asyncio at exit.
_NOISY_LOGGERS = ("absl", "asyncio")


def _from_orbax(err: BaseException | None) -> bool:
    """Whether ``err`` was raised inside Orbax's or TensorStore's code."""
    tb = err.__traceback__ if err is not None else None
    while tb is not None:
        if any(part in tb.tb_frame.f_code.co_filename for part in ("/orbax/", "/tensorstore/")):
            return True
        tb = tb.tb_next
    return False


class _QuietWriteFailures(logging.Filter):
    """Orbax's writer threads log a refused write with its whole traceback (hundreds of lines
    for one full disk); the run reports it once itself (RunWriteError), so these are dropped.
    Once the run has given up (``abandoned``), so are the errors of Orbax's threads that were
    still finishing as the process shut down."""

    abandoned = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            return not (describe_write_failure(error) is not None
                        or (self.abandoned and _from_orbax(error)))
        return describe_write_failure(record.getMessage()) is None


def saved_shapes(manager: ocp.CheckpointManager, step: int, item: str = "params"
                 ) -> dict[str, str]:
    """The shape table (``run_contract.shape_table``) of one item of a saved checkpoint, read
    from its metadata without reading an array."""
    from codereason_jax.run_contract import shape_table

    tree = manager.metadata(step).item_metadata[item]
    if tree is None:  # Orbax gives None for an item whose files it cannot interpret
        raise ValueError(f"the {item} metadata cannot be read")
    return shape_table(jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree))


def _quiet_closed_loops(hook):
    """When one array write of a checkpoint fails, Orbax closes the event loop of that save
    while TensorStore still completes the other writes; each completion then reports
    "Event loop is closed" as an unraisable exception (one traceback per array). Those say
    nothing beyond the failure the run reports itself, so they are not printed."""

    def unraisablehook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        hook(unraisable)

    return unraisablehook


def _quiet_orbax_threads(hook):
    """A ``threading.excepthook`` that drops the exceptions of Orbax's threads."""

    def excepthook(args):
        if _from_orbax(args.exc_value):
            return
        hook(args)

    return excepthook


class RunCheckpoints:
    """Save and restore the state of one run directory.

    A checkpoint that does not load (truncated, zero-byte or missing files) is moved aside to
    ``RUN_DIR/checkpoints_corrupt/`` (kept, never deleted) and its step is saved again when the
    run reaches it. A checkpoint whose shapes differ from the model's is not corrupt but
    another run's: it is refused, and nothing is moved. A write that fails (disk full,
    permission, quota) stops the run with a ``RunWriteError`` that names the path.
    """

    def __init__(self, run_dir: str, config: CheckpointConfig):
        self.run_dir = paths.resolve(run_dir)
        self.directory = paths.join(self.run_dir, "checkpoints")
        self.config = config
        self._manager = _manager(self.directory, config)
        self._saving: int | None = None  # step of a save that may still be running
        self._quiet = _QuietWriteFailures()
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet)
        self._unraisablehook = sys.unraisablehook
        sys.unraisablehook = _quiet_closed_loops(sys.unraisablehook)

    def _write_failed(self, step: int, err: BaseException) -> RunWriteError:
        what = describe_write_failure(err)
        good = [s for s in self.steps() if s != step]
        kept = (f"the checkpoint of step {good[-1]} is intact" if good
                else "no earlier checkpoint exists")
        return RunWriteError(
            f"could not write the checkpoint of step {step} under {self.directory}: {what}; "
            f"{kept}. Free space (or fix permissions or quota) and rerun the same command to "
            "resume.")

    def check(self) -> None:
        """Raise RunWriteError if a finished asynchronous save failed."""
        # Orbax keeps the error of a finished background save until the next wait.
        if self._saving is not None and not self._manager.is_saving_in_progress():
            self.wait()

    def save(self, step: int, params: Any, opt_state: Any, meta: dict[str, Any],
             force: bool = False) -> bool:
        """Save (asynchronously if configured); returns whether a save started."""
        if not force and step % self.config.every_steps:
            return False
        if self._saving == step or step in self._manager.all_steps():
            return False  # already saved (e.g. SIGTERM at a step that was just saved)
        if self._saving is not None:
            self.wait()  # a failure of the previous save is reported as that step's
        try:
            started = self._manager.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
                meta=ocp.args.JsonSave(meta)), force=force)
        except Exception as err:  # noqa: BLE001
            if describe_write_failure(err) is None:
                raise
            raise self._write_failed(step, err) from err
        if started:
            self._saving = step
        return started

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001
            if self._saving is None or describe_write_failure(err) is None:
                raise
            raise self._write_failed(self._saving, err) from err
        self._saving = None

    def close(self) -> None:
        self.wait()
        self._manager.close()
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).removeFilter(self._quiet)
        sys.unraisablehook = self._unraisablehook

    def abandon(self) -> None:
        """Close after an error: let a running save finish (its own failure already reported
        or beside the point). The filters stay, and Orbax's threads that are still finishing
        report nothing more: the run has already said what failed."""
        self._quiet.abandoned = True
        threading.excepthook = _quiet_orbax_threads(threading.excepthook)
        try:
            self._manager.wait_until_finished()
        except Exception:  # noqa: BLE001
            pass
        self._manager.close()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def move_aside(self, step: int, reason: str) -> str:
        """Move a checkpoint that cannot be loaded to ``checkpoints_corrupt/`` and forget it."""
        aside = paths.join(self.run_dir, "checkpoints_corrupt")
        target, n = paths.join(aside, str(step)), 1
        while paths.exists(target):
            n += 1
            target = paths.join(aside, f"{step}-{n}")
        if jax.process_index() == 0:  # the hosts of a slice share the directory: one moves it
            paths.makedirs(aside)
            paths.move(paths.join(self.directory, str(step)), target)
            print(f"warning: the checkpoint of step {step} cannot be loaded ({reason}); moved "
                  f"it to {target} (kept); the run goes on from an older checkpoint and saves "
                  "this step's again.", flush=True)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
        self._manager.reload()
        return target

    def restore_latest(self, abstract_params: Any, abstract_opt_state: Any
                       ) -> tuple[int, Any, Any, dict[str, Any]] | None:
        """(step, params, opt_state, meta) of the newest checkpoint that loads, or None.

        Each checkpoint gets a verdict: it loads; it holds other shapes (another run's:
        refused); it cannot be read now (permission, network, memory: refused, left as it is);
        or it is damaged (moved aside, the next older one tried). With several processes the
        verdicts are combined first, so every host acts alike."""
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
            verdict, detail, restored = self._try_restore(step, abstract_params,
                                                          abstract_opt_state)
            verdict = _agree(verdict)
            if verdict == _LOADS:
                return step, restored.params, restored.opt_state, dict(restored.meta)
            detail = detail or "on another host"
            if verdict == _MISMATCH:
                raise CheckpointMismatchError(
                    detail if detail.startswith("the checkpoint") else
                    f"the checkpoint {step_dir} does not fit this run's model ({detail}).")
            if verdict == _UNREADABLE_NOW:
                raise CheckpointError(
                    f"the checkpoint {step_dir} cannot be read now ({detail}); it was left as it "
                    "is. Fix the access (permissions, network, memory) and rerun.")
            self.move_aside(step, detail)
        return None

    def _try_restore(self, step: int, abstract_params: Any, abstract_opt_state: Any
                     ) -> tuple[int, str | None, Any]:
        from codereason_jax.run_contract import shape_table

        step_dir = paths.join(self.directory, str(step))
        try:
            shapes = saved_shapes(self._manager, step)
            opt_shapes = saved_shapes(self._manager, step, "opt_state")
        except Exception as err:  # noqa: BLE001 (classified below)
            return _failure_verdict(err), _brief(err), None
        expected = shape_table(abstract_params)
        if shapes != expected:
            return _MISMATCH, _mismatch_message(step_dir, shapes, expected), None
        # Optimizer-state paths are named differently in the saved metadata: compare the
        # shapes and dtypes themselves.
        if sorted(opt_shapes.values()) != sorted(shape_table(abstract_opt_state).values()):
            return _MISMATCH, "its optimizer state has other shapes (another optimizer)", None
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_params),
                opt_state=ocp.args.StandardRestore(abstract_opt_state),
                meta=ocp.args.JsonRestore()))
        except Exception as err:  # noqa: BLE001 (classified below)
            logging.warning("Checkpoint %s/%d cannot be loaded (%s: %s).", self.directory,
                            step, type(err).__name__, err)
            return _failure_verdict(err), _brief(err), None
        return _LOADS, None, restored


# Verdicts on a checkpoint, in the order in which one host's verdict overrides another's.
_LOADS, _CORRUPT, _MISMATCH, _UNREADABLE_NOW = 0, 1, 2, 3
_TRANSIENT = re.compile(r"\b(UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|PERMISSION_DENIED|"
                        r"UNAUTHENTICATED|CANCELLED|ABORTED)\b|out of memory", re.I)
_ACCESS_ERRNOS = (errno.EACCES, errno.EPERM, errno.ETIMEDOUT, errno.ECONNRESET,
                  errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOMEM)


def _failure_verdict(err: BaseException) -> int:
    """A failed read says the checkpoint is damaged unless it is about access, the network
    or memory, which say nothing about its bytes."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (MemoryError, ConnectionError, TimeoutError)) or (
                isinstance(err, OSError) and err.errno in _ACCESS_ERRNOS):
            return _UNREADABLE_NOW
        if _TRANSIENT.search(str(err)):
            return _UNREADABLE_NOW
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return _CORRUPT


def _agree(verdict: int) -> int:
    """The verdict every process acts on: the most cautious one any process reached."""
    if jax.process_count() == 1:
        return verdict
    import numpy as np
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.int32(verdict))))


def _brief(err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


RESUME_ADVICE = ("Use a new --run_dir, or start a new run from these weights with "
                 "TrainConfig.init_from.")


def _mismatch_message(step_dir: str, saved: dict[str, str], expected: dict[str, str],
                      advice: str = RESUME_ADVICE) -> str:
    differ = [f"{name} {saved.get(name, 'absent')} -> {expected.get(name, 'absent')}"
              for name in sorted(set(saved) | set(expected)) if saved.get(name) != expected.get(name)]
    return (f"the checkpoint {step_dir} holds parameters of other shapes than this run's model "
            f"({', '.join(differ[:3])}{f' and {len(differ) - 3} more' if len(differ) > 3 else ''}"
            "): it is another configuration's run, not a corrupt one; the checkpoints were left "
            "as they are. " + advice)


def checkpoint_steps(checkpoint_dir: str) -> tuple[str, list[int]]:
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


def check_source_fits(checkpoint_dir: str, step: int | None, abstract_params: Any) -> None:
    """A fine-tuning source (``TrainConfig.init_from``) has the step asked for and parameters
    of this model's shapes, read from its metadata (no array is read)."""
    from codereason_jax.run_contract import shape_table

    directory, steps = checkpoint_steps(checkpoint_dir)
    if step is not None and step not in steps:
        raise CheckpointError(f"TrainConfig.init_from_step={step}: {checkpoint_dir} has no "
                              f"checkpoint at that step; it has {steps}.")
    chosen = steps[-1] if step is None else step
    manager = _manager(directory, CheckpointConfig(async_save=False), read_only=True)
    try:
        shapes = saved_shapes(manager, chosen)
    except Exception:  # noqa: BLE001 (unreadable: restore_params reports it precisely)
        return
    finally:
        manager.close()
    if shapes != shape_table(abstract_params):
        raise CheckpointMismatchError(_mismatch_message(
            paths.join(directory, str(chosen)), shapes, shape_table(abstract_params),
            "Bind the model gin file of the run it comes from (TrainConfig.init_from)."))


def latest_step(checkpoint_dir: str) -> int:
    """The step ``restore_params`` restores by default, without reading any array."""
    return checkpoint_steps(checkpoint_dir)[1][-1]


def restore_params(checkpoint_dir: str, abstract_params: Any, step: int | None = None
                   ) -> tuple[int, Any]:
    """Params of a checkpoint directory (a run dir or its ``checkpoints/``), restored directly
    into ``abstract_params``' shardings: the source run's mesh does not matter.

    Without ``step``, the newest checkpoint that loads: one that does not is named in a warning
    and the next older one is tried (nothing is moved: the directory is only read)."""
    directory, steps = checkpoint_steps(checkpoint_dir)
    if step is not None and step not in steps:
        raise CheckpointError(f"{directory} has no checkpoint at step {step}; it has {steps}.")
    manager = _manager(directory, CheckpointConfig(async_save=False), read_only=True)
    failures = []
    try:
        for chosen in ([step] if step is not None else reversed(steps)):
            try:
                restored = manager.restore(chosen, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_params)))
            except Exception as err:  # noqa: BLE001 (a checkpoint that does not load)
                from codereason_jax.run_contract import shape_table

                try:
                    shapes = saved_shapes(manager, chosen)
                except Exception:  # noqa: BLE001
                    shapes = None
                if shapes is not None and shapes != shape_table(abstract_params):
                    raise CheckpointMismatchError(_mismatch_message(
                        paths.join(directory, str(chosen)), shapes, shape_table(abstract_params),
                        "Bind the model gin file of the run that wrote it.")) from None
                failures.append(f"step {chosen} ({_brief(err)})")
                print(f"warning: the checkpoint of step {chosen} in {directory} cannot be "
                      f"loaded ({_brief(err)}); trying an older one.", flush=True)
                continue
            return chosen, restored.params
    finally:
        manager.close()
    raise CheckpointError(f"no checkpoint in {directory} can be loaded: " + "; ".join(failures)
                          + ". Train again from the last good state, or point at another run.")


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying ``shardings``: restore targets that allocate nothing."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)
