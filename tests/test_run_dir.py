"""The run directory as a contract, in-process: corrupt vs mismatched checkpoints, the newest
valid checkpoint, torn logs, typed config fields, checks before work, one error surface."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax import cli, paths, run_contract
from codereason_jax.checkpoints import (CheckpointConfig, CheckpointError, RunCheckpoints,
                                        restore_params)
from codereason_jax.config_types import ConfigError, check_field_types
from codereason_jax.model import PanGuConfig
from codereason_jax.optim import OptimizerConfig
from codereason_jax.preflight import preflight
from codereason_jax.trainer import TrainConfig

DEVICE = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _state(scale: float, rows: int = 4):
    params = {"dense": {"kernel": jnp.full((rows, 3), scale, jnp.float32)},
              "bias": jnp.arange(3, dtype=jnp.float32) * scale}
    return params, {"mu": jax.tree.map(jnp.zeros_like, params)}


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=DEVICE), tree)


def _saved_run(tmp_path, steps=(2, 4, 6)):
    run_dir = str(tmp_path / "run")
    checkpoints = RunCheckpoints(run_dir, CheckpointConfig(every_steps=2, keep_last=5,
                                                           async_save=False))
    for step in steps:
        params, opt = _state(float(step))
        checkpoints.save(step, params, opt, {"step": step})
    checkpoints.wait()
    return run_dir, checkpoints


def _largest_file(directory):
    files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
    return max(files, key=os.path.getsize)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _zero(path):
    open(path, "wb").close()


@pytest.mark.parametrize("damage", [_truncate, _zero, os.remove],
                         ids=["truncated", "zero-byte", "missing-shard"])
def test_a_corrupt_checkpoint_is_moved_aside_and_its_step_saved_again(tmp_path, damage, capsys):
    run_dir, checkpoints = _saved_run(tmp_path)
    damage(_largest_file(os.path.join(run_dir, "checkpoints", "6", "params")))
    params, opt = _state(0.0)
    step, restored, _, meta = checkpoints.restore_latest(_abstract(params), _abstract(opt))
    assert step == 4 and meta == {"step": 4}
    np.testing.assert_array_equal(restored["dense"]["kernel"], np.full((4, 3), 4.0))
    out = capsys.readouterr().out
    assert "the checkpoint of step 6 cannot be loaded" in out
    aside = os.path.join(run_dir, "checkpoints_corrupt", "6")
    assert os.path.isdir(aside) and aside in out  # kept, not deleted
    assert checkpoints.steps() == [2, 4]
    # The resumed run reaches step 6 again: its save is not dropped.
    assert checkpoints.save(6, *_state(6.5), {"step": 6})
    checkpoints.wait()
    step, restored, _, _ = checkpoints.restore_latest(_abstract(params), _abstract(opt))
    assert step == 6 and float(restored["bias"][1]) == 6.5


def test_a_step_already_saved_is_not_saved_twice(tmp_path):
    _, checkpoints = _saved_run(tmp_path)
    assert not checkpoints.save(6, *_state(9.0), {"step": 6}, force=True)  # SIGTERM at a save
    assert checkpoints.save(7, *_state(7.0), {"step": 7}, force=True)
    checkpoints.wait()
    assert checkpoints.steps() == [2, 4, 6, 7]


def test_only_damage_moves_a_checkpoint_aside():
    from codereason_jax.checkpoints import _CORRUPT, _UNREADABLE_NOW, _failure_verdict

    for err in (PermissionError(13, "Permission denied"), MemoryError(),
                ValueError("UNAVAILABLE: connection reset by peer"),
                RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")):
        assert _failure_verdict(err) == _UNREADABLE_NOW, err
    for err in (ValueError("DATA_LOSS: Error reading chunk: unexpected end of file"),
                FileNotFoundError(2, "No such file or directory"),
                ValueError("the params metadata cannot be read")):
        assert _failure_verdict(err) == _CORRUPT, err


def test_a_checkpoint_of_other_shapes_is_refused_not_moved(tmp_path):
    run_dir, checkpoints = _saved_run(tmp_path)
    before = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    params, opt = _state(0.0, rows=5)
    with pytest.raises(CheckpointError, match=r"dense/kernel float32\[4,3\] -> float32\[5,3\].*"
                       "not a corrupt one"):
        checkpoints.restore_latest(_abstract(params), _abstract(opt))
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == before
    assert not os.path.exists(os.path.join(run_dir, "checkpoints_corrupt"))


def test_restore_params_takes_the_newest_checkpoint_that_loads(tmp_path, capsys):
    run_dir, _ = _saved_run(tmp_path)
    _zero(_largest_file(os.path.join(run_dir, "checkpoints", "6", "params")))
    params, _ = _state(0.0)
    step, restored = restore_params(run_dir, _abstract(params))
    assert step == 4 and float(restored["bias"][2]) == 8.0
    assert "step 6" in capsys.readouterr().out
    assert os.path.isdir(os.path.join(run_dir, "checkpoints", "6"))  # evaluation only reads
    for step in (2, 4):
        _zero(_largest_file(os.path.join(run_dir, "checkpoints", str(step), "params")))
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be loaded: step 6"):
        restore_params(run_dir, _abstract(params))


def test_a_torn_last_log_line_is_dropped_and_a_damaged_one_refused(tmp_path, capsys):
    path = str(tmp_path / "metrics.jsonl")
    with open(path, "w") as f:
        f.write('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.9}\n{"step": 2, "lo')
    log = paths.StepLog(path, drop_from=2)
    log.append({"step": 2, "loss": 0.8})
    assert [json.loads(line)["step"] for line in open(path)] == [0, 1, 2]
    assert "dropped the partial last line" in capsys.readouterr().out
    assert not os.path.exists(path + ".before-restart")  # steps 0 and 1 were kept
    paths.StepLog(path, drop_from=0)  # a restart from step 0 keeps a copy of what it drops
    with open(path + ".before-restart") as f:
        assert [json.loads(line)["step"] for line in f] == [0, 1, 2]
    assert open(path).read() == ""
    with open(path, "w") as f:
        f.write('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(cli.UserError, match="metrics.jsonl:2 is not a JSON record"):
        paths.StepLog(path, drop_from=1)


@pytest.mark.parametrize("make,message", [
    (lambda: TrainConfig("m", "40", 8, 64), "TrainConfig.num_steps must be an integer, got '40'"
     r" \(str\); write TrainConfig.num_steps = 40 without quotes"),
    (lambda: TrainConfig("m", 4.5, 8, 64), r"num_steps must be an integer, got 4.5 \(float\)"),
    (lambda: TrainConfig("m", 4, 8, 64, mesh_shape=[2, 4, 1]),
     r"mesh_shape must be a tuple of 3 integers, got \[2, 4, 1\] \(list\); write a tuple"),
    (lambda: TrainConfig("m", 4, 8, 64, pack_instructions=1), "must be True or False"),
    (lambda: TrainConfig("m", 4, 8, 64, eval_every="10"), "must be an integer or None"),
    (lambda: OptimizerConfig(clip_norm="1.0"), "clip_norm must be a number or None"),
    (lambda: CheckpointConfig(every_steps=True), "every_steps must be an integer, got True"),
    (lambda: PanGuConfig(8, 3, 32, 4, 64, 64, dropout_rate="0.1"), "dropout_rate must be a "
     "number"),
])
def test_config_fields_are_type_checked(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_numbers_and_optional_fields_take_what_they_say():
    config = TrainConfig("m", 4, 8, 64, loss_denominator_epsilon=0, eval_tasks=("a", "b"),
                         logical_axis_rules=(("batch", ("data", "fsdp")),))
    check_field_types(config)  # an int is a float; nested tuples pass an untyped tuple
    assert config.loss_denominator_epsilon == 0


def _contract(**changes):
    model = PanGuConfig(8192, 3, 32, 4, 64, 64)
    train = TrainConfig("pretrain_code_embedded", 12, 8, 64)
    for name, value in changes.items():
        owner, field = name.split(".")
        if owner == "PanGuConfig":
            model = dataclasses.replace(model, **{field: value})
        else:
            train = dataclasses.replace(train, **{field: value})
    abstract = {"w": jax.ShapeDtypeStruct((model.num_layers, model.d_model), jnp.float32)}
    return run_contract.make_contract(
        model_config=model, train_config=train, optimizer_config=OptimizerConfig(),
        checkpoint_config=CheckpointConfig(), abstract_params=abstract,
        abstract_opt_state={"mu": abstract},
        vocabulary={"spec": "embedded", "size": 8000, "sha256": "ab"},
        schedule_fingerprint=train.mixture)


def test_the_contract_refuses_what_changes_shapes_or_data_and_records_the_rest():
    saved = _contract()
    with pytest.raises(CheckpointError, match=r"PanGuConfig.num_layers 3 -> 4 \(changes the "
                       r"parameter shapes\).*--init_from=runs/x"):
        run_contract.check(saved, _contract(**{"PanGuConfig.num_layers": 4}), "runs/x", False)
    with pytest.raises(CheckpointError, match=r"TrainConfig.seed 0 -> 1 \(changes the batches"):
        run_contract.check(saved, _contract(**{"TrainConfig.seed": 1}), "runs/x", False)
    with pytest.raises(CheckpointError, match="TrainConfig.overlong 'drop' -> 'truncate'"):
        run_contract.check(saved, _contract(**{"TrainConfig.overlong": "truncate"}), "runs/x",
                           False)
    other_kind = dict(_contract(), vocabulary={"spec": "chatglm:v.model", "kind": "ChatGLM",
                                               "size": 8000, "sha256": "ab"})
    with pytest.raises(CheckpointError, match="changes the token ids.*--init_from=runs/x \\(with the saved model"):
        run_contract.check(dict(saved, vocabulary=dict(saved["vocabulary"], kind="PanGu")),
                           other_kind, "runs/x", False)
    other_mixture = _contract(**{"TrainConfig.mixture": "pretrain_nl_embedded"})
    with pytest.raises(CheckpointError, match="changes the data mixture"):
        run_contract.check(saved, other_mixture, "runs/x", False)
    assert "TrainConfig.mixture" in run_contract.check(saved, other_mixture, "runs/x", True)
    changes = run_contract.check(saved, _contract(**{"TrainConfig.log_every": 2,
                                                     "PanGuConfig.dropout_rate": 0.0}),
                                 "runs/x", False)
    assert changes == {"PanGuConfig.dropout_rate": (0.1, 0.0), "TrainConfig.log_every": (10, 2)}
    assert run_contract.unchanged(saved, dict(_contract(), history=[{"x": 1}]))


def test_preflight_checks_before_anything_is_written(tmp_path):
    model = PanGuConfig(8192, 3, 32, 4, 64, 64)
    train = TrainConfig("pretrain_code_embedded", 12, 8, 64, mesh_shape=(8, 1, 1))
    run_dir = str(tmp_path / "never")
    cases = [
        (model, dataclasses.replace(train, batch_size=12, grad_accumulation=3),
         OptimizerConfig(warmup_steps=2), "4 rows per micro-batch do not split over the 8 "
         "batch shards"),
        (model, dataclasses.replace(train, sequence_length=128), OptimizerConfig(warmup_steps=2),
         "sequence_length=128 exceeds PanGuConfig.max_seq_len=64"),
        (model, train, OptimizerConfig(warmup_steps=20), "warmup_steps=20 exceeds"),
        (model, dataclasses.replace(train, mesh_shape=(3, 1, 1)), OptimizerConfig(
            warmup_steps=2), "needs 3 devices, but 8 are available"),
        (dataclasses.replace(model, vocab_size=100), train, OptimizerConfig(warmup_steps=2),
         "PanGuConfig.vocab_size=100"),
        (model, dataclasses.replace(train, init_from=str(tmp_path / "nothing")),
         OptimizerConfig(warmup_steps=2), "No checkpoint directory"),
        (model, dataclasses.replace(train, eval_tasks=("eval_nothing",)),
         OptimizerConfig(warmup_steps=2), r"eval_tasks names unknown tasks \['eval_nothing'\]"),
    ]
    for model_config, train_config, optimizer_config, message in cases:
        with pytest.raises((ConfigError, CheckpointError, ValueError), match=message):
            preflight(model_config, train_config, optimizer_config, CheckpointConfig(), run_dir)
    assert not os.path.exists(run_dir)


def test_the_error_surface(capsys, monkeypatch):
    seen = []

    def user_mistake(argv):
        seen.append(argv)
        raise ConfigError("TrainConfig.num_steps must be > 0.\n  In call to configurable "
                          "'TrainConfig'")

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.run(user_mistake, []) == 2
    err = capsys.readouterr().err
    assert err == "error: TrainConfig.num_steps must be > 0.\n"
    assert cli.run(user_mistake, ["--debug", "--x=1"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert seen == [[], ["--x=1"]]  # --debug is the runner's, not passed on
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert cli.run(user_mistake, []) == 2
    assert "Traceback" in capsys.readouterr().err

    def disk_full(argv):
        raise cli.RunWriteError("could not write x")

    monkeypatch.delenv(cli.DEBUG_ENV)
    assert cli.run(disk_full, []) == cli.WRITE_FAILED == 4
    assert capsys.readouterr().err == "error: could not write x\n"

    def our_bug(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # internal errors keep their traceback
        cli.run(our_bug, [])


def test_a_reader_error_inside_a_tf_data_pipeline_comes_back_as_itself():
    import tensorflow as tf

    from seqio_tasks.sources.files import DataFileError, unwrap_reader_error

    def rows():
        raise DataFileError("text corpus: /nowhere/text_corpus is not a directory.")
        yield "never"

    dataset = tf.data.Dataset.from_generator(rows, output_signature=tf.TensorSpec((), tf.string))
    with pytest.raises(Exception) as wrapped:
        next(iter(dataset.as_numpy_iterator()))
    assert not isinstance(wrapped.value, DataFileError)  # TensorFlow's own error type
    unwrapped = unwrap_reader_error(wrapped.value)
    assert isinstance(unwrapped, DataFileError)
    assert str(unwrapped) == "text corpus: /nowhere/text_corpus is not a directory."
    assert unwrap_reader_error(RuntimeError("something else")) is None
