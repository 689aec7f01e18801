"""The ahead-of-time fit check compiles the real step for a mesh and enforces a budget."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def aot(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)  # aot_check sets the device count itself
    return subprocess.run([sys.executable, "-m", "codereason_jax.aot_check",
                           "--gin_file=gin/models/pangu_tiny.gin", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_fits_and_reports_per_device_bytes():
    result = aot("--mesh=2x2x4", "--batch_size=8", "--sequence_length=128", "--hbm_gib=1")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "over 16 emulated devices" in out and "fits:" in out
    # 1,907,456 fp32 params over fsdp 2 x model 4 (embed and wide dims both sharded): the
    # per-device parameter bytes are far below the replicated 7.3 MiB.
    line = next(x for x in out.splitlines() if x.strip().startswith("parameters"))
    assert float(line.split()[1]) < 0.003  # GiB
    assert "model FLOPs per step per device" in out


def test_over_budget_exits_1_with_advice():
    result = aot("--mesh=1x1x1", "--batch_size=64", "--sequence_length=256", "--hbm_gib=0.01")
    assert result.returncode == 1
    assert "exceeds the budget of 0.01 GiB" in result.stderr and "remat" in result.stderr


def test_bad_mesh_is_explained():
    result = aot("--mesh=2x2")
    assert result.returncode != 0 and "must be DATAxFSDPxMODEL" in result.stderr
