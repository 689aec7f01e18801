"""A run directory is a contract: what a run was started with, checked on every resume.

``RUN_DIR/run.json`` is written when a run first starts (after every check has passed) and
holds the configuration the checkpoints depend on:

- the shapes and dtypes of the parameters and the optimizer state, with the model and
  optimizer fields that decide them;
- the vocabulary (its spec, size and a digest of its model file);
- the data: mixture, schedule fingerprint, seed, batch size and sequence length (the batch at a
  step is a pure function of these);
- every other setting of the run, and a history of the harmless changes made on resume.

A resume whose configuration breaks the contract is refused before anything in the directory
is touched, naming each field with its saved and new value. Harmless changes (logging and
evaluation cadence, checkpoint frequency, mesh, learning rate, dropout, ...) are accepted and
appended to the history.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from typing import Any

import jax

from codereason_jax import paths
from seqio_tasks.default_vocabulary import vocabulary_identity as vocabulary_identity

RUN_FILE = "run.json"
FORMAT = 1
# Settings whose change makes the resumed run another run (the batch at a step, the random
# stream, or the token ids would differ). The schedule's own check is separate: it can be
# overridden with TrainConfig.allow_schedule_change.
DATA_FIELDS = ("seed", "batch_size", "sequence_length", "pack_instructions", "overlong",
               "row_shuffle_buffer", "data_pipeline")
# The PanGuConfig fields that decide a parameter's shape or dtype (named when shapes differ).
SHAPE_FIELDS = ("vocab_size", "num_layers", "d_model", "num_heads", "d_ff", "max_seq_len",
                "use_query_layer", "scan_layers", "param_dtype")


def shape_table(tree: Any) -> dict[str, str]:
    """``{"path/of/leaf": "float32[3,32]"}`` for every array leaf of an abstract tree."""
    table = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        table[name] = f"{leaf.dtype}[{','.join(map(str, leaf.shape))}]"
    return table


def _digest(table: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def make_contract(*, model_config: Any, train_config: Any, optimizer_config: Any,
                  checkpoint_config: Any, abstract_params: Any, abstract_opt_state: Any,
                  vocabulary: dict[str, Any], schedule_fingerprint: str,
                  data_source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract of a run about to start (JSON-ready)."""
    params = shape_table(abstract_params)
    return _jsonable({
        "format": FORMAT,
        "configs": {"PanGuConfig": dataclasses.asdict(model_config),
                    "TrainConfig": dataclasses.asdict(train_config),
                    "OptimizerConfig": dataclasses.asdict(optimizer_config),
                    "CheckpointConfig": dataclasses.asdict(checkpoint_config)},
        "param_shapes": params,
        "param_digest": _digest(params),
        "opt_state_digest": _digest(shape_table(abstract_opt_state)),
        "vocabulary": vocabulary,
        "schedule_fingerprint": schedule_fingerprint,
        "data_source": data_source or {"pipeline": "stream"},
        "history": [],
    })


def read(run_dir: str) -> dict[str, Any] | None:
    """The saved contract of ``run_dir``, or None for a directory without one."""
    path = paths.join(run_dir, RUN_FILE)
    if not paths.exists(path):
        return None
    try:
        saved = json.loads(paths.read_text(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        from codereason_jax.cli import UserError

        raise UserError(f"{path} is not valid JSON ({err}); restore it from a copy, or move "
                        "the run directory aside and start a new one.") from None
    return saved


def _field_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{"TrainConfig.log_every": (saved, new)}`` for every setting that differs."""
    changes = {}
    for config, fields in new["configs"].items():
        old_fields = saved.get("configs", {}).get(config, {})
        for name, value in fields.items():
            if name in old_fields and old_fields[name] != value:
                changes[f"{config}.{name}"] = (old_fields[name], value)
    return changes


def _listing(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in changes.items())


def check(saved: dict[str, Any], new: dict[str, Any], run_dir: str,
          allow_schedule_change: bool) -> dict[str, tuple[Any, Any]]:
    """Raise CheckpointError when ``new`` breaks ``saved``; return the harmless changes."""
    from codereason_jax.checkpoints import CheckpointError

    changes = _field_changes(saved, new)
    reasons = []
    model_changes = {k: v for k, v in changes.items() if k.startswith("PanGuConfig.")}
    optimizer_changes = {k: v for k, v in changes.items() if k.startswith("OptimizerConfig.")}
    weights_fit = True  # whether these weights could start a new run of the new shape
    if saved.get("param_digest") != new["param_digest"]:
        weights_fit = False
        shape_fields = {k: v for k, v in model_changes.items()
                        if k.split(".")[1] in SHAPE_FIELDS}
        reasons.append((_listing(shape_fields) or _shape_listing(saved, new))
                       + " (changes the parameter shapes)")
    elif saved.get("opt_state_digest") != new["opt_state_digest"]:
        reasons.append((_listing(optimizer_changes) or "the optimizer")
                       + " (changes the optimizer state's shapes)")
    old_vocab, new_vocab = saved.get("vocabulary") or {}, new["vocabulary"]
    if any(old_vocab.get(k) != new_vocab[k] for k in ("kind", "size", "sha256")
           if k in old_vocab):
        weights_fit = False
        reasons.append(f"vocabulary {old_vocab.get('spec')!r} ({old_vocab.get('size')} ids) -> "
                       f"{new_vocab['spec']!r} ({new_vocab['size']} ids) (changes the token ids)")
    data = {f"TrainConfig.{k}": changes[f"TrainConfig.{k}"] for k in DATA_FIELDS
            if f"TrainConfig.{k}" in changes}
    if data:
        reasons.append(_listing(data) + " (changes the batches or random stream)")
    old_rows = (saved.get("data_source") or {}).get("rows_sha256")
    new_rows = new.get("data_source", {}).get("rows_sha256")
    if old_rows and new_rows and old_rows != new_rows:
        reasons.append(f"the row store's rows {old_rows} -> {new_rows} (another store's rows; "
                       "changes the batches)")
    if saved.get("schedule_fingerprint") != new["schedule_fingerprint"] and (
            not allow_schedule_change):
        mixture = {k: v for k, v in changes.items()
                   if k in ("TrainConfig.mixture", "TrainConfig.num_steps")}
        reasons.append((_listing(mixture) or "the mixture schedule")
                       + " (changes the data mixture; TrainConfig.allow_schedule_change = True"
                       " continues anyway)")
    if reasons:
        forward = ("Use a new --run_dir, or start a new run from these weights with "
                   f"--init_from={run_dir}" + ("" if weights_fit else
                                               " (with the saved model and vocabulary: the "
                                               "weights do not fit the new ones)"))
        raise CheckpointError(
            f"{run_dir} holds a run started with another configuration: "
            + "; ".join(reasons) + f". Nothing in it was changed. {forward}.")
    return changes


def unchanged(saved: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a resume would write the same contract (nothing to record)."""
    return ({k: v for k, v in saved.items() if k != "history"}
            == {k: v for k, v in new.items() if k != "history"})


def _shape_listing(saved: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    old, now = saved.get("param_shapes", {}), new["param_shapes"]
    differ = [f"{name} {old.get(name, 'absent')} -> {now.get(name, 'absent')}"
              for name in sorted(set(old) | set(now)) if old.get(name) != now.get(name)]
    return ", ".join(differ[:limit]) + (f" and {len(differ) - limit} more" if len(differ) > limit
                                        else "")


def write(run_dir: str, saved: dict[str, Any] | None, new: dict[str, Any],
          changes: dict[str, tuple[Any, Any]], start_step: int) -> None:
    """Write the contract: ``new`` for a new run, else ``saved`` with the changes recorded."""
    if saved is None:
        contract = new
    elif unchanged(saved, new):
        return
    else:
        contract = dict(new, history=list(saved.get("history", [])))
        if changes:
            contract["history"].append({
                "resumed_at_step": start_step,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "changes": {k: list(v) for k, v in changes.items()}})
    paths.write_text(paths.join(run_dir, RUN_FILE), json.dumps(contract, indent=1) + "\n")
