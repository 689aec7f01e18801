"""Command-line entry points, run as a user runs them (subprocesses, real gin files)."""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_model_info_13b_is_abstract_and_fast():
    start = time.monotonic()
    result = run("codereason_jax.model_info", "--gin_file=gin/models/pangu_13b.gin")
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "params: 12800870400"
    assert lines[1].split() == ["name", "shape", "dtype", "logical", "axes", "params"]
    word = next(line for line in lines if line.startswith("word_embeddings "))
    assert word.split() == ["word_embeddings", "(40000,", "5120)", "float32", "(vocab,",
                            "embed)", "204,800,000"]
    # 39 blocks x 16 params + query layer 16 + ln_f 2 + 3 tables, + header and rule lines.
    assert len(lines) == 3 + 39 * 16 + 16 + 2 + 3
    # 13B fp32 weights would be 51 GB; an abstract table takes seconds.
    assert elapsed < 60


def test_model_info_reports_bad_binding_and_exits_2():
    result = run("codereason_jax.model_info", "--gin_file=gin/models/pangu_2_6b.gin",
                 "--gin.PanGuConfig.num_heads=7")
    assert result.returncode == 2
    assert "PanGuConfig.d_model=2560 is not divisible by PanGuConfig.num_heads=7" in (
        result.stderr)
    assert result.stdout == ""
