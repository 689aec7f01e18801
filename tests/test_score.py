"""score: per-position log-probabilities of given token ids from a checkpoint."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax import score
from codereason_jax.convert_pangu import save_checkpoint
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.model.abstract import abstract_params

GIN = """PanGuConfig.vocab_size = 64
PanGuConfig.num_layers = 3
PanGuConfig.d_model = 32
PanGuConfig.num_heads = 4
PanGuConfig.d_ff = 128
PanGuConfig.max_seq_len = 16
"""
IDS = [3, 17, 63, 0, 42, 42, 8, 31, 9]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialised tiny model saved in the run layout; (dir, gin file, params)."""
    root = tmp_path_factory.mktemp("score")
    config = PanGuConfig(vocab_size=64, num_layers=3, d_model=32, num_heads=4, d_ff=128,
                         max_seq_len=16)
    rng = np.random.default_rng(3)  # random weights without compiling an init
    params = jax.tree.map(lambda x: (0.3 * rng.standard_normal(x.shape)).astype(np.float32),
                          nn.meta.unbox(abstract_params(config)))
    save_checkpoint(str(root / "ckpt"), params,
                    {"step": 0, "model_config": dataclasses.asdict(config)})
    (root / "model.gin").write_text(GIN)
    return str(root / "ckpt"), str(root / "model.gin"), config, params


def test_prints_one_log_prob_per_predicted_position(checkpoint, capsys):
    directory, gin_file, config, params = checkpoint
    rc = score.main([f"--checkpoint={directory}", f"--gin_file={gin_file}",
                     "--token_ids=" + ",".join(map(str, IDS))])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = captured.out.splitlines()
    assert len(lines) == len(IDS) - 1
    printed = np.array([float(line) for line in lines])
    logits = jax.jit(PanGuDecoder(config).apply)({"params": params}, jnp.asarray([IDS]))[0]
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    expected = log_probs[np.arange(len(IDS) - 1), IDS[1:]]
    np.testing.assert_allclose(printed, expected, rtol=1e-6, atol=1e-6)
    assert np.all(printed < 0) and np.ptp(printed) > 0.1  # a real, non-uniform model
    # The limits hold their ends: max_seq_len ids, and id vocab_size - 1, are accepted.
    assert score.parse_token_ids(",".join(["63"] * 16), config) == [63] * 16


@pytest.mark.parametrize("ids, message", [
    ("5", "at least 2 ids"),
    ("5,64", "outside [0, 64)"),
    ("5,x", "not a comma-separated list"),
    (",".join(["1"] * 17), "exceed PanGuConfig.max_seq_len=16"),
])
def test_bad_token_ids_are_reported(checkpoint, capsys, ids, message):
    directory, gin_file, _, _ = checkpoint
    rc = score.main([f"--checkpoint={directory}", f"--gin_file={gin_file}", f"--token_ids={ids}"])
    captured = capsys.readouterr()
    assert rc == 2 and message in captured.err and captured.out == ""


def test_missing_checkpoint_is_reported(tmp_path, checkpoint, capsys):
    _, gin_file, _, _ = checkpoint
    rc = score.main([f"--checkpoint={tmp_path / 'nothing'}", f"--gin_file={gin_file}",
                     "--token_ids=1,2"])
    assert rc == 2 and "No checkpoint directory" in capsys.readouterr().err


def test_config_that_does_not_fit_the_checkpoint_is_explained(checkpoint, capsys):
    directory, gin_file, _, _ = checkpoint
    rc = score.main([f"--checkpoint={directory}", f"--gin_file={gin_file}", "--token_ids=1,2",
                     "--gin.PanGuConfig.scan_layers=True"])
    err = capsys.readouterr().err
    assert rc == 2 and "the checkpoint was written with scan_layers=False (gin: True)" in err
