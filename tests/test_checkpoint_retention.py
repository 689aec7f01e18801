"""Which checkpoints a run keeps (CheckpointConfig.keep_last / keep_every), also across a
resume, and fine-tuning from a chosen step of another run (TrainConfig.init_from_step)."""

import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax import trainer
from codereason_jax.checkpoints import (CheckpointConfig, CheckpointError, RunCheckpoints,
                                        checkpoint_steps, restore_params)
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.optim import OptimizerConfig
from codereason_jax.trainer import TrainConfig

DEVICE = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _tiny_state(step: int):
    """Params and optimizer state whose values say which step saved them."""
    params = {"w": jnp.full((2, 3), float(step)), "b": jnp.arange(3.0) + step}
    return params, {"count": jnp.asarray(step, jnp.int32)}


def _abstract(tree, sharding=DEVICE):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)


def _save_steps(checkpoints: RunCheckpoints, steps) -> None:
    for step in steps:
        assert checkpoints.save(step, *_tiny_state(step), {"step": step})
    checkpoints.wait()


def _steps_on_disk(run_dir: str) -> list[int]:
    """Complete steps as a fresh reader sees them (not the writer's in-memory list)."""
    return checkpoint_steps(run_dir)[1]


# --- retention -------------------------------------------------------------------------------

@pytest.mark.parametrize("keep_last,keep_every,async_save,expected", [
    (3, None, False, [10, 11, 12]),
    (3, 4, False, [4, 8, 10, 11, 12]),  # last 3, and 4 and 8 (12 is both) kept forever
    (2, 5, False, [5, 10, 11, 12]),
    (3, 4, True, [4, 8, 10, 11, 12]),  # the trainer's default: background saves
])
def test_retention_keeps_the_last_steps_and_every_kth_step(tmp_path, keep_last, keep_every,
                                                           async_save, expected):
    """Old checkpoints are deleted as the run goes, except the newest keep_last and every
    step that is a multiple of keep_every; the ones kept hold their own step's state."""
    run_dir = str(tmp_path / "run")
    checkpoints = RunCheckpoints(run_dir, CheckpointConfig(
        every_steps=1, keep_last=keep_last, keep_every=keep_every, async_save=async_save))
    _save_steps(checkpoints, range(1, 13))
    checkpoints.close()
    assert _steps_on_disk(run_dir) == expected
    assert sorted(int(name) for name in os.listdir(os.path.join(run_dir, "checkpoints"))
                  if name.isdigit()) == expected
    params, _ = _tiny_state(0)
    for step in (expected[0], expected[-1]):
        restored_step, restored = restore_params(run_dir, _abstract(params), step=step)
        assert restored_step == step
        np.testing.assert_array_equal(restored["w"], np.full((2, 3), float(step)))
        np.testing.assert_array_equal(restored["b"], np.array([0.0, 1.0, 2.0]) + step)


def test_a_resumed_run_prunes_the_steps_saved_before_it_by_the_same_rule(tmp_path):
    """Retention is applied to what is on disk, not only to what this process saved: after a
    resume, the earlier run's checkpoints go when they fall out of the last keep_last, except
    the multiples of keep_every."""
    run_dir = str(tmp_path / "run")
    config = CheckpointConfig(every_steps=1, keep_last=3, keep_every=4, async_save=False)
    first = RunCheckpoints(run_dir, config)
    _save_steps(first, range(1, 7))
    first.close()
    assert _steps_on_disk(run_dir) == [4, 5, 6]

    resumed = RunCheckpoints(run_dir, config)
    assert resumed.steps() == [4, 5, 6]  # opening prunes nothing
    after_each_save = []
    for step in range(7, 11):
        _save_steps(resumed, [step])
        after_each_save.append(_steps_on_disk(run_dir))
    resumed.close()
    assert after_each_save == [[4, 5, 6, 7], [4, 6, 7, 8], [4, 7, 8, 9], [4, 8, 9, 10]]


@pytest.mark.parametrize("field,value", [
    ("keep_last", 0), ("keep_last", -2), ("keep_every", 0), ("keep_every", -4)])
def test_retention_settings_must_be_positive(field, value):
    message = f"CheckpointConfig.{field}={value} must be > 0."
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        CheckpointConfig(**{field: value})


def test_the_smallest_retention_settings_are_accepted():
    config = CheckpointConfig(every_steps=1, keep_last=1, keep_every=1)
    assert (config.keep_last, config.keep_every) == (1, 1)


def test_keep_every_must_be_a_multiple_of_the_save_interval():
    """Saves at 1000, 2000, ... and keep_every 1500 would keep only 3000, 6000, ... for good."""
    message = ("CheckpointConfig.keep_every=1500 is not a multiple of "
               "CheckpointConfig.every_steps=1000; only steps divisible by both would be kept "
               "for good. Use a multiple of every_steps.")
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        CheckpointConfig(every_steps=1000, keep_every=1500)
    assert CheckpointConfig(every_steps=1000, keep_every=3000).keep_every == 3000


# --- fine-tuning from a chosen step of another run ------------------------------------------

TINY = PanGuConfig(vocab_size=8192, max_seq_len=64, num_layers=3, d_model=32, num_heads=4,
                   d_ff=64, dropout_rate=0.0)
SOURCE_STEPS = (2, 5)
OPTIMIZER = OptimizerConfig(warmup_steps=0)
NUM_STEPS = 4


def _model_abstract_params():
    model = PanGuDecoder(TINY)
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((8, 64), jnp.int32)))["params"])


def _params_of_step(step: int):
    """Random values of the model's shapes, different for each source step."""
    rng = np.random.default_rng(step)
    return jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype),
                        _model_abstract_params())


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A pre-training run dir with checkpoints at steps 2 and 5 of the model's real shapes,
    each with its own params and a used (non-fresh) optimizer state."""
    run_dir = str(tmp_path_factory.mktemp("pretrain"))
    optimizer, _ = OPTIMIZER.build(NUM_STEPS)
    checkpoints = RunCheckpoints(run_dir, CheckpointConfig(every_steps=1, keep_last=5,
                                                           async_save=False))
    for step in SOURCE_STEPS:
        params = jax.tree.map(jnp.asarray, _params_of_step(step))
        used = jax.tree.map(lambda x: x + step, optimizer.init(params))
        checkpoints.save(step, params, used, {"step": step})
    checkpoints.close()
    assert _steps_on_disk(run_dir) == list(SOURCE_STEPS)
    return run_dir


def _finetune(monkeypatch, tmp_path, source, init_from_step):
    """Run the trainer in-process up to the training loop and return what the loop would
    start from (params, optimizer state, step). The data pipeline is stubbed: the first
    batch has no bearing on the initial state and reading it costs seconds of TensorFlow."""
    from seqio_tasks import mixing

    def no_data(*args, **kwargs):
        while True:
            yield {}

    started = {}

    def loop(step_fn, params, opt_state, data, start_step, *rest):
        started.update(params=jax.device_get(params), opt_state=jax.device_get(opt_state),
                       step=start_step)
        return {"step": start_step}

    monkeypatch.setattr(mixing, "mixture_iterator", no_data)
    monkeypatch.setattr(trainer, "_loop", loop)
    config = TrainConfig("pretrain_code_embedded", NUM_STEPS, 8, 64, prefetch_batches=0,
                         init_from=source, init_from_step=init_from_step)
    trainer.train(TINY, config, OPTIMIZER, CheckpointConfig(async_save=False),
                  str(tmp_path / "finetune"))
    return started


@pytest.mark.parametrize("init_from_step,expected_step", [(2, 2), (None, 5)])
def test_finetuning_starts_from_the_chosen_source_step_with_fresh_optimizer_at_step_0(
        monkeypatch, tmp_path, capsys, source_run, init_from_step, expected_step):
    """init_from_step picks an earlier checkpoint of the source, not its latest (which
    None picks); only the params come from it: optimizer state and step start afresh."""
    started = _finetune(monkeypatch, tmp_path, source_run, init_from_step)
    expected = _params_of_step(expected_step)
    assert jax.tree.structure(started["params"]) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, started["params"], expected)
    assert started["step"] == 0
    optimizer, _ = OPTIMIZER.build(NUM_STEPS)
    jax.tree.map(np.testing.assert_array_equal, started["opt_state"], optimizer.init(expected))
    counts = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(started["opt_state"])
              if "count" in jax.tree_util.keystr(path)]
    assert counts and all(int(count) == 0 for count in counts)
    assert (f"initialised params from {source_run} (step {expected_step}); fresh optimizer "
            "state, step 0") in capsys.readouterr().out


def test_a_missing_source_step_is_refused_naming_the_steps_there(monkeypatch, tmp_path,
                                                                   source_run):
    """A step the source does not have stops the run before anything is written, and says
    which steps it could have been; restore_params (also used by evaluation) says the same."""
    message = (f"TrainConfig.init_from_step=3: {source_run} has no checkpoint at that step; "
               "it has [2, 5].")
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        _finetune(monkeypatch, tmp_path, source_run, 3)
    assert not os.path.exists(tmp_path / "finetune")
    message = (f"{os.path.join(source_run, 'checkpoints')} has no checkpoint at step 3; "
               "it has [2, 5].")
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        restore_params(source_run, _abstract(_model_abstract_params()), step=3)


def test_restore_params_reads_the_step_asked_for(source_run):
    """The library call behind init_from: a given step is read as saved, None the newest."""
    abstract = _abstract(_model_abstract_params())
    for step, expected_step in ((2, 2), (None, 5)):
        restored_step, params = restore_params(source_run, abstract, step=step)
        assert restored_step == expected_step
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(params),
                     _params_of_step(expected_step))
