"""The ahead-of-time fit check compiles the real step for a mesh and enforces a budget."""

import os
import re
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
    assert "over 16 emulated devices" in out
    gib = {name: float(line.rsplit(None, 2)[-2]) for line in out.splitlines()
           for name in ("parameters", "optimizer state", "batch", "temporaries", "total")
           if line.strip().startswith(name)}
    # 1,907,456 fp32 params = 7,629,824 bytes = 0.0071 GiB replicated; over model 4 alone
    # 0.0018 (printed 0.002), over fsdp 2 alone 0.0036; over fsdp 2 x model 4 about 0.0009.
    assert gib["parameters"] == 0.001
    assert gib["optimizer state"] == 0.002  # Adam's mu and nu: twice the parameters
    # The total is the sum of the four parts (each printed rounded to 0.001).
    assert gib["temporaries"] > 0
    assert abs(gib["total"] - sum(v for k, v in gib.items() if k != "total")) <= 0.002
    fits = re.search(r"^fits: (\d+\.\d+) of 1\.0 GiB per device$", out, re.M)
    assert fits and abs(float(fits.group(1)) - gib["total"]) <= 0.005
    # By hand: N_matmul = 4 (4 d^2 + 2 d d_ff) + V d = 4 (65,536 + 131,072) + 8192 * 128
    # = 1,835,008; per token 6 N + 6 L T d = 11,010,048 + 393,216 = 11,403,264; times
    # 8 * 128 / 16 = 64 tokens per device = 729,808,896.
    assert "model FLOPs per step per device: 7.298e+08" in out


def test_over_budget_exits_1_with_advice():
    result = aot("--mesh=1x1x1", "--batch_size=64", "--sequence_length=256", "--hbm_gib=0.01")
    assert result.returncode == 1
    assert "exceeds the budget of 0.01 GiB" in result.stderr and "remat" in result.stderr


def test_bad_mesh_is_explained():
    result = aot("--mesh=2x2")
    assert result.returncode != 0 and "must be DATAxFSDPxMODEL" in result.stderr
