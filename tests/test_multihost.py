"""Two processes x 4 CPU devices (jax.distributed on loopback) train like one process x 8."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from test_trainer import RUN_GIN, final_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")


@pytest.mark.slow  # three training processes; `make test-all`
def test_two_processes_match_one_process(tmp_path):
    gin_file = tmp_path / "run.gin"
    gin_file.write_text(RUN_GIN + "TrainConfig.num_steps = 6\n"
                        "TrainConfig.mesh_shape = (2, 1, 4)\nCheckpointConfig.every_steps = 3\n")
    command = [sys.executable, "-m", "codereason_jax.train", f"--gin_file={gin_file}"]
    port = _free_port()
    hosts = [subprocess.Popen(
        command + [f"--run_dir={tmp_path / 'multi'}", "--multihost=explicit",
                   f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                   f"--process_id={i}"],
        cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    single = subprocess.run(command + [f"--run_dir={tmp_path / 'single'}"], cwd=ROOT,
                            env=_env(8), capture_output=True, text=True, timeout=600)
    outputs = []
    for host in hosts:
        try:
            outputs.append(host.communicate(timeout=600)[0])
        finally:
            host.kill()
    assert single.returncode == 0, single.stdout + single.stderr
    assert all(h.returncode == 0 for h in hosts), outputs

    def losses(run):
        with open(tmp_path / run / "metrics.jsonl") as f:
            return [json.loads(line)["loss"] for line in f]

    multi, one = losses("multi"), losses("single")
    assert len(multi) == len(one) == 6  # only process 0 writes metrics
    # Cross-process reductions may add in another order: equal to float tolerance.
    np.testing.assert_allclose(multi, one, rtol=1e-6)
    # The 2-process checkpoint restores in this single process like the 1-process one.
    step_a, params_a = final_params(str(tmp_path / "multi"))
    step_b, params_b = final_params(str(tmp_path / "single"))
    assert step_a == step_b == 6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 params_a, params_b)
