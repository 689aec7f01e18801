"""The trainer: end-to-end runs, fine-tuning, guards, the train step in-process."""

import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax import partitioning
from codereason_jax.checkpoints import abstract_like, restore_params
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.optim import OptimizerConfig
from codereason_jax.trainer import TrainConfig, make_train_step
from test_loss_oracle import nll_from_logits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = PanGuConfig(vocab_size=8192, max_seq_len=64, num_layers=3, d_model=32, num_heads=4,
                   d_ff=64, dropout_rate=0.1)
RUN_GIN = """
PanGuConfig.vocab_size = 8192
PanGuConfig.max_seq_len = 64
PanGuConfig.num_layers = 3
PanGuConfig.d_model = 32
PanGuConfig.num_heads = 4
PanGuConfig.d_ff = 64
TrainConfig.mixture = 'pretrain_code_embedded'
TrainConfig.num_steps = 12
TrainConfig.batch_size = 8
TrainConfig.sequence_length = 64
TrainConfig.log_every = 4
OptimizerConfig.peak_learning_rate = 1e-2
OptimizerConfig.warmup_steps = 2
CheckpointConfig.every_steps = 4
"""


def write_gin(tmp_path, extra=""):
    path = tmp_path / "run.gin"
    path.write_text(RUN_GIN + extra)
    return str(path)


def launch(gin_file, run_dir, *bindings):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-m", "codereason_jax.train", f"--gin_file={gin_file}",
         f"--run_dir={run_dir}", *bindings],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(gin_file, run_dir, *bindings, timeout=1200):
    process = launch(gin_file, run_dir, *bindings)
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def losses(run_dir):
    """step -> loss; each step must appear once (a resumed run replaces what it recomputes)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"duplicate or unordered steps: {steps}"
    return {r["step"]: r["loss"] for r in records}


def final_params(run_dir, config=TINY):
    model = PanGuDecoder(config)
    abstract = nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"])
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    step, params = restore_params(run_dir, abstract_like(
        abstract, jax.tree.map(lambda _: device, abstract)))
    return step, jax.device_get(params)


def checkpoint_steps(run_dir):
    return sorted(int(d) for d in os.listdir(os.path.join(run_dir, "checkpoints"))
                  if d.isdigit())


# Kills, SIGTERM, corrupt checkpoints, torn logs, a full disk and a changed model or schedule:
# tests/test_faults.py.


def test_rules_mapping_two_axes_of_a_tensor_to_one_mesh_axis_are_refused(tmp_path):
    rules = ("(('vocab', 'model'), ('embed', 'fsdp'), ('mlp', 'fsdp'), ('heads', 'model'), "
             "('kv', None), ('position', None), ('layers', None), "
             "('activation_batch', ('data', 'fsdp')), ('activation_length', None), "
             "('activation_embed', None), ('activation_mlp', 'model'), "
             "('activation_heads', 'model'), ('activation_kv', None), "
             "('activation_vocab', 'model'))")
    code, out = run(write_gin(tmp_path), str(tmp_path / "run"),
                    f"--gin.TrainConfig.logical_axis_rules={rules}")
    assert code == 2
    assert "logical axes 'embed' and 'mlp' both map to mesh axis 'fsdp'" in out


def test_finetune_from_a_checkpoint_of_another_mesh(tmp_path):
    gin_file = write_gin(tmp_path)
    pretrain, finetune = str(tmp_path / "pretrain"), str(tmp_path / "finetune")
    code, out = run(gin_file, pretrain, "--gin.TrainConfig.mesh_shape=(2, 1, 4)",
                    "--gin.TrainConfig.num_steps=4")
    assert code == 0, out
    code, out = run(gin_file, finetune, "--gin.TrainConfig.mesh_shape=(1, 8, 1)",
                    "--gin.TrainConfig.num_steps=4",
                    "--gin.TrainConfig.mixture='sft_stepwise_decrease_embedded'",
                    "--gin.TrainConfig.overlong='truncate'",
                    f"--gin.TrainConfig.init_from='{pretrain}'",
                    "--gin.OptimizerConfig.peak_learning_rate=0.0",
                    "--gin.OptimizerConfig.end_learning_rate=0.0")
    assert code == 0, out
    assert "initialised params from" in out and "step 0" in out
    # With a zero learning rate the fine-tuned params are exactly the pre-trained ones.
    _, before = final_params(pretrain)
    _, after = final_params(finetune)
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert sorted(losses(finetune)) == [0, 1, 2, 3]


@pytest.mark.parametrize("binding,message", [
    ("--gin.TrainConfig.batch_sise=8", "batch_sise"),
    ("--gin.PanGuConfig.num_heads=5", "PanGuConfig.d_model=32 is not divisible"),
    ("--gin.TrainConfig.grad_accumulation=3", "not divisible by TrainConfig.grad_accumulation"),
])
def test_gin_errors_stop_before_any_work(tmp_path, binding, message):
    code, out = run(write_gin(tmp_path), str(tmp_path / "run"), binding)
    assert code == 2 and message in out
    assert not os.path.exists(tmp_path / "run")  # a refused command leaves no directory


def test_missing_required_value_is_named(tmp_path):
    path = tmp_path / "partial.gin"
    path.write_text(RUN_GIN.replace("TrainConfig.mixture = 'pretrain_code_embedded'\n", ""))
    code, out = run(str(path), str(tmp_path / "run"))
    assert code == 2 and "TrainConfig is missing required values: mixture" in out


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path):
    """Every step is non-finite (a learning rate of 1e38 overflows the params' norm): each is
    skipped while the step counter advances, so the checkpoint of step 2 (after two skipped
    updates) holds the initial params bitwise; the third in a row stops the run before its
    step is saved."""
    run_dir = str(tmp_path / "run")
    code, out = run(write_gin(tmp_path), run_dir,
                    "--gin.OptimizerConfig.peak_learning_rate=1e38",
                    "--gin.OptimizerConfig.warmup_steps=0",
                    "--gin.TrainConfig.max_consecutive_nonfinite=3",
                    "--gin.CheckpointConfig.every_steps=2")
    assert code == 3, out
    assert "3 consecutive non-finite steps up to step 2" in out
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [(r["step"], r["finite"]) for r in records] == [(0, False), (1, False), (2, False)]
    # Steps 0 and 1 were skipped, then saved as step 2; step 2 stopped the run (no step 3).
    assert checkpoint_steps(run_dir) == [2]
    # The trainer's initialisation: model.init(key(seed=0), zeros([batch, length])), jitted.
    initial = jax.device_get(jax.jit(lambda key: nn.meta.unbox(PanGuDecoder(TINY).init(
        key, jnp.zeros((8, 64), jnp.int32))["params"]))(jax.random.key(0)))
    saved_step, saved = final_params(run_dir)
    assert saved_step == 2
    assert jax.tree.structure(saved) == jax.tree.structure(initial)
    jax.tree.map(np.testing.assert_array_equal, saved, initial)


# --- the step function in-process ------------------------------------------------------------

def _step_setup(config, accumulation, mesh_shape=(2, 1, 4)):
    mesh = partitioning.make_mesh(mesh_shape)
    rules = partitioning.DEFAULT_RULES
    model = PanGuDecoder(config)
    train_config = TrainConfig(mixture="unused", num_steps=10, batch_size=8, sequence_length=32,
                               grad_accumulation=accumulation)
    optimizer, _ = OptimizerConfig(peak_learning_rate=1e-2, warmup_steps=0).build(10)
    params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 32), jnp.int32))["params"])
    step = jax.jit(make_train_step(model, optimizer, train_config, rules))
    return mesh, step, params, optimizer.init(params)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, 8192, size=(8, 33)).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
            "positions": np.tile(np.arange(32, dtype=np.int32), (8, 1)),
            "segment_ids": np.ones((8, 32), np.int32),
            "loss_weights": rng.integers(0, 2, size=(8, 32)).astype(np.float32)}


def test_gradient_accumulation_equals_one_big_batch():
    """k micro-batches give the big batch's loss and gradient (seen in Adam's first moment,
    which after one step is (1 - b1) x the clipped gradient)."""
    config = dataclasses.replace(TINY, dropout_rate=0.0)
    results = []
    for accumulation in (1, 4):
        mesh, step, params, opt_state = _step_setup(config, accumulation)
        with jax.set_mesh(mesh):
            _, new_opt, metrics = step(params, opt_state, _batch(), 0)
        first_moment = jax.device_get(new_opt)[1][0].mu  # chain: (clip, (adam, decay, lr))
        results.append((first_moment, float(metrics["loss"]), float(metrics["grad_norm"])))
    (m1, l1, g1), (m4, l4, g4) = results
    assert l1 == pytest.approx(l4, rel=1e-6) and g1 == pytest.approx(g4, rel=1e-5)
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(m1))
    assert scale > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale),
                 m1, m4)


def test_nonfinite_batch_leaves_the_state_untouched():
    mesh, step, params, opt_state = _step_setup(TINY, 2)
    bad = _batch()
    bad["loss_weights"][3, 5] = np.inf
    with jax.set_mesh(mesh):
        new_params, new_opt, metrics = step(params, opt_state, bad, 0)
    assert not bool(metrics["finite"])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(new_params), params)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(new_opt), opt_state)


def test_periodic_evaluation_writes_per_source_loss_and_task_metrics(tmp_path):
    run_dir = tmp_path / "run"
    code, out = run(write_gin(tmp_path), str(run_dir), "--gin.TrainConfig.num_steps=4",
                    "--gin.TrainConfig.eval_every=2",
                    "--gin.TrainConfig.eval_tasks=('eval_embedded_codeqa',)",
                    "--gin.TrainConfig.eval_max_examples=3")
    assert code == 0, out
    records = [json.loads(line) for line in open(run_dir / "eval.jsonl")]
    assert [r["step"] for r in records] == [2, 4]
    sources = ("embedded_code", "embedded_text")
    for record in records:
        assert set(record) == {"step", "eval_loss/embedded_code", "eval_loss/embedded_text",
                               "eval/eval_embedded_codeqa/accuracy"}
        # 3 questions: the accuracy is 100 k / 3 for an integer k.
        k = record["eval/eval_embedded_codeqa/accuracy"] * 3 / 100
        assert min(abs(k - j) for j in range(4)) < 1e-9, record
    # The final step is saved (CheckpointConfig.every_steps = 4): the params the last
    # evaluation scored.
    assert checkpoint_steps(run_dir) == [4]

    # The evaluator's batches: the first TrainConfig.eval_batches (2) batches of each source's
    # validation split, at the run's batch size, sequence length and seed.
    from seqio_tasks import mixing
    batches = {}
    for source in sources:
        iterator = mixing.mixture_iterator(source, sequence_length=64, batch_size=8, seed=0,
                                           split="validation")
        batches[source] = [next(iterator) for _ in range(2)]
    model = PanGuDecoder(dataclasses.replace(TINY, dropout_rate=0.0))
    apply = jax.jit(lambda p, b: model.apply({"params": p}, b["inputs"], b["positions"],
                                             b["segment_ids"]))
    saved_step, params = final_params(str(run_dir))
    assert saved_step == 4
    for source in sources:
        total = weight = 0.0
        for batch in batches[source]:
            w = np.asarray(batch["loss_weights"], np.float64)
            total += float((nll_from_logits(apply(params, batch), batch["targets"]) * w).sum())
            weight += float(w.sum())
        assert weight > 0
        assert records[1][f"eval_loss/{source}"] == pytest.approx(total / weight, rel=1e-4), (
            source)
    # Training lowers the validation loss of both sources (deterministic: measured 2 -> 4).
    for source in sources:
        assert records[1][f"eval_loss/{source}"] < records[0][f"eval_loss/{source}"], source


# --- a URL run directory ---------------------------------------------------------------------

URL_RUN = r'''
import json, os, shutil, sys
import orbax.checkpoint as ocp
import tensorflow as tf
from codereason_jax import train

gin_file, orbax_root = sys.argv[1], sys.argv[2]
run = "ram://runs/x"  # TF's in-memory file system: a bucket without a network


class LocalOrbax(ocp.CheckpointManager):
    """Orbax (tensorstore) has no ram:// driver: it gets the URL the trainer computed and keeps
    the checkpoints under orbax_root/<the URL's path> instead."""

    def __init__(self, directory, *args, **kwargs):
        assert str(directory) == run + "/checkpoints", directory
        super().__init__(os.path.join(orbax_root, str(directory)[len("ram://"):]), *args,
                         **kwargs)


ocp.CheckpointManager = LocalOrbax
common = [f"--gin_file={gin_file}", f"--run_dir={run}", "--gin.TrainConfig.eval_every=2"]
first = train.main(common + ["--gin.TrainConfig.num_steps=6"])
files_after_first = sorted(tf.io.gfile.listdir(run))
# Lose the newest checkpoint (6): the rerun resumes from 4 and must forget metrics 4..5, eval 6.
shutil.rmtree(os.path.join(orbax_root, "runs/x/checkpoints/6"))
second = train.main(common + ["--gin.TrainConfig.num_steps=8"])
read = lambda name: tf.io.gfile.GFile(run + "/" + name).read()
print("RESULT " + json.dumps({
    "codes": [first, second], "files_after_first": files_after_first,
    "files": sorted(tf.io.gfile.listdir(run)),
    "tensorboard": tf.io.gfile.listdir(run + "/tensorboard"),
    "metrics": [json.loads(line)["step"] for line in read("metrics.jsonl").splitlines()],
    "eval": [json.loads(line)["step"] for line in read("eval.jsonl").splitlines()],
    "config": read("config.gin")}))
'''


def test_a_url_run_dir_trains_and_resumes_without_local_files(tmp_path):
    """run_dir=ram://...: config.gin, metrics.jsonl, eval.jsonl and TensorBoard go through the
    path layer to the URL (each step once after a resume), Orbax gets URL/checkpoints, and
    nothing lands in the working directory."""
    gin_file, orbax_root, cwd = write_gin(tmp_path), tmp_path / "orbax", tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", URL_RUN, gin_file, str(orbax_root)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=1200)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["codes"] == [0, 0], out
    assert "resuming from the checkpoint of step 4" in out
    assert {"config.gin", "metrics.jsonl", "eval.jsonl", "tensorboard"} <= set(
        result["files_after_first"]) and "checkpoints" not in result["files"]
    assert result["tensorboard"]
    assert result["metrics"] == list(range(8))  # buffered, dropped, redone: each step once
    assert result["eval"] == [2, 4, 6, 8]
    assert "TrainConfig.mixture = 'pretrain_code_embedded'" in result["config"]
    saved = sorted(int(d) for d in os.listdir(orbax_root / "runs" / "x" / "checkpoints")
                   if d.isdigit())
    assert saved[-1] == 8
    assert os.listdir(cwd) == []  # no ./ram: folder, no local metrics
