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
    # atol: the attention key biases have an exactly zero gradient (softmax ignores a shift
    # shared by all keys), so they hold only Adam-normalised rounding noise, which the
    # reduction order changes (observed up to 1.2e-6 against weights of order 1e-2).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 params_a, params_b)


def _start_hosts(command, run_dir, logs_dir, tag):
    """Two processes x 4 CPU devices on loopback (a fresh coordinator port each time)."""
    port = _free_port()
    hosts = []
    for i in range(2):
        log = open(logs_dir / f"{tag}_{i}.log", "w")
        hosts.append(subprocess.Popen(
            command + [f"--run_dir={run_dir}", "--multihost=explicit",
                       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                       f"--process_id={i}"],
            cwd=ROOT, env=_env(4), stdout=log, stderr=subprocess.STDOUT, text=True))
        log.close()
    return hosts


@pytest.mark.slow  # four training processes; `make test-all`
def test_two_processes_killed_after_a_checkpoint_resume_like_one_process(tmp_path):
    """SIGKILL one of two hosts after the checkpoint of step 4; the survivor blocks in a
    collective and is killed after a bounded wait; both restart into the same run directory,
    resume from the newest complete checkpoint and end with the losses and parameters of an
    uninterrupted 1-process x 8-device run."""
    import signal
    import time

    num_steps, every = 16, 4
    gin_file = tmp_path / "run.gin"
    gin_file.write_text(RUN_GIN + f"TrainConfig.num_steps = {num_steps}\n"
                        "TrainConfig.mesh_shape = (2, 1, 4)\n"
                        f"CheckpointConfig.every_steps = {every}\n")
    command = [sys.executable, "-m", "codereason_jax.train", f"--gin_file={gin_file}"]
    multi, single = tmp_path / "multi", tmp_path / "single"
    reference = subprocess.Popen(command + [f"--run_dir={single}"], cwd=ROOT, env=_env(8),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hosts = _start_hosts(command, multi, tmp_path, "first")
    try:
        first_checkpoint = multi / "checkpoints" / str(every)  # renamed into place when complete
        deadline = time.monotonic() + 300
        while not first_checkpoint.is_dir() and time.monotonic() < deadline:
            assert all(h.poll() is None for h in hosts), "a host exited before the kill"
            time.sleep(0.02)
        assert first_checkpoint.is_dir(), "no checkpoint within 300 s"
        hosts[1].send_signal(signal.SIGKILL)
        hosts[1].wait()
        try:  # process 0 now waits on a collective that never completes
            hosts[0].wait(timeout=20)
        except subprocess.TimeoutExpired:
            hosts[0].send_signal(signal.SIGKILL)
            hosts[0].wait()
    finally:
        for host in hosts:
            host.kill()
    with open(multi / "metrics.jsonl") as f:
        cut = [json.loads(line)["step"] for line in f]
    assert len(cut) < num_steps, "the run finished before the kill"

    hosts = _start_hosts(command, multi, tmp_path, "second")
    try:
        codes = [h.wait(timeout=600) for h in hosts]
        ref_out, _ = reference.communicate(timeout=600)
    finally:
        for process in hosts + [reference]:
            process.kill()
    outputs = [(tmp_path / f"second_{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], outputs
    assert reference.returncode == 0, ref_out
    resumed = [int(line.rsplit(" ", 1)[1]) for line in outputs[0].splitlines()
               if line.startswith("resuming from the checkpoint of step")]
    assert len(resumed) == 1 and resumed[0] % every == 0 and every <= resumed[0] < num_steps

    def losses(run):
        with open(run / "metrics.jsonl") as f:
            records = [json.loads(line) for line in f]
        assert [r["step"] for r in records] == list(range(num_steps))  # each step once
        return [r["loss"] for r in records]

    # Cross-process reductions may add in another order: equal to float tolerance.
    np.testing.assert_allclose(losses(multi), losses(single), rtol=1e-6)
    step_a, params_a = final_params(str(multi))
    step_b, params_b = final_params(str(single))
    assert step_a == step_b == num_steps
    # atol: the attention key biases have an exactly zero gradient (softmax ignores a shift
    # shared by all keys), so they hold only Adam-normalised rounding noise, which the
    # reduction order changes (observed up to 1.2e-6 against weights of order 1e-2).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 params_a, params_b)


@pytest.mark.slow  # four training processes; `make test-all`
def test_sigterm_to_one_of_two_processes_checkpoints_both_at_the_same_step(tmp_path):
    """A preemption notice reaches the hosts at different steps: SIGTERM to process 1 only must
    still make both save the same step and exit 0 (not wait for each other for ever), and a
    restart resumes from exactly that step."""
    import re
    import signal
    import time

    num_steps = 12
    gin_file = tmp_path / "run.gin"
    gin_file.write_text(RUN_GIN + f"TrainConfig.num_steps = {num_steps}\n"
                        "TrainConfig.mesh_shape = (2, 1, 4)\n"
                        "CheckpointConfig.every_steps = 100\n")
    command = [sys.executable, "-m", "codereason_jax.train", f"--gin_file={gin_file}"]
    run_dir = tmp_path / "multi"
    hosts = _start_hosts(command, run_dir, tmp_path, "first")
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (
                metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert all(h.poll() is None for h in hosts), "a host exited before the signal"
            time.sleep(0.02)
        hosts[1].send_signal(signal.SIGTERM)
        codes = [h.wait(timeout=120) for h in hosts]  # a hang fails here
    finally:
        for host in hosts:
            host.kill()
    outputs = [(tmp_path / f"first_{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], outputs
    saved = [re.findall(r"SIGTERM: saved the checkpoint of step (\d+)", out) for out in outputs]
    assert saved[0] == saved[1] and len(saved[0]) == 1, saved
    step = int(saved[0][0])
    assert 2 <= step < num_steps and (run_dir / "checkpoints" / str(step)).is_dir()

    hosts = _start_hosts(command, run_dir, tmp_path, "second")
    try:
        codes = [h.wait(timeout=600) for h in hosts]
    finally:
        for host in hosts:
            host.kill()
    outputs = [(tmp_path / f"second_{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], outputs
    assert f"resuming from the checkpoint of step {step}" in outputs[0]
    with open(run_dir / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == list(range(num_steps))
