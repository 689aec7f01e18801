"""Two processes x 4 CPU devices (jax.distributed on loopback) train like one process x 8.

No clocks: the coordinator's port is held by the test from the moment it is chosen (see
``held_port``), and a host is interrupted at a step it reached (``CODEREASON_FAILPOINT=pause@K``
stops it there), never "after a while".
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from test_trainer import RUN_GIN, final_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def held_port():
    """A loopback port that nobody else can be given while the test needs it.

    Finding a free port and releasing it before the coordinator binds it races with every other
    process on the machine. Instead the test keeps a socket bound to the port (SO_REUSEADDR,
    never listening) for as long as the hosts run: the kernel hands that port to no other
    ``bind(port 0)`` or outgoing connection, while the coordinator (gRPC, which also sets
    SO_REUSEADDR) can still bind it and listen.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# JAX's SLURM detection derives the coordinator's port from the job id: 61440 + id mod 4096.
SLURM_PORTS = 61440


@contextlib.contextmanager
def held_slurm_job():
    """A SLURM job id whose coordinator port is held by the test (as in ``held_port``)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for offset in range(4096):
            job_id = (os.getpid() + offset) % 4096
            try:
                s.bind(("127.0.0.1", SLURM_PORTS + job_id))
            except OSError:
                continue
            yield job_id
            return
        raise AssertionError("no free port in 61440-65535 for a SLURM-style coordinator")


def _slurm_env(job_id: int, process_id: int) -> dict:
    """What a two-task SLURM step on one node sets; gloo for cross-process CPU collectives
    (``--multihost=auto`` leaves the backend's default, right on TPU and GPU)."""
    return {"SLURM_JOB_ID": str(job_id), "SLURM_STEP_NODELIST": "127.0.0.1",
            "SLURM_NTASKS": "2", "SLURM_PROCID": str(process_id),
            "SLURM_LOCALID": str(process_id), "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}


def _env(devices: int, failpoint: str | None = None) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("CODEREASON_FAILPOINT", None)
    if failpoint:
        env["CODEREASON_FAILPOINT"] = failpoint
    return env


def wait_stopped(process: subprocess.Popen) -> None:
    """Block until ``process`` stops itself at its failpoint (SIGSTOP): an event, not a time."""
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here
        raise AssertionError(f"the process ended ({process.returncode}) before its failpoint")


def wait_for_path(path, hosts, guard_s=600):
    """Block until ``path`` exists (a file written is the event). ``guard_s`` only bounds a
    hang; no outcome depends on it."""
    give_up = time.monotonic() + guard_s
    while not path.exists():
        assert all(h.poll() is None for h in hosts), f"a host exited before {path} appeared"
        assert time.monotonic() < give_up, f"{path} never appeared (hung?)"
        time.sleep(0.05)


def _start_hosts(command, run_dir, logs_dir, tag, port, failpoints=None, slurm_job=None):
    """Two processes x 4 CPU devices on loopback; ``failpoints``: process id -> failpoint.
    With ``slurm_job``, the hosts find each other from SLURM's variables (``--multihost=auto``)
    instead of flags."""
    hosts = []
    for i in range(2):
        log = open(logs_dir / f"{tag}_{i}.log", "w")
        env = _env(4, (failpoints or {}).get(i))
        if slurm_job is None:
            flags = ["--multihost=explicit", f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=2", f"--process_id={i}"]
        else:
            flags = ["--multihost=auto"]
            env.update(_slurm_env(slurm_job, i))
        hosts.append(subprocess.Popen(
            command + [f"--run_dir={run_dir}"] + flags, cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT, text=True))
        log.close()
    return hosts


def _finish(hosts, logs_dir, tag):
    """Exit codes and outputs of hosts left to run to their end (a hang fails at the guard)."""
    try:
        codes = [h.wait(timeout=600) for h in hosts]
    finally:
        for host in hosts:
            host.kill()
    return codes, [(logs_dir / f"{tag}_{i}.log").read_text() for i in range(2)]


def _write_gin(tmp_path, num_steps, every):
    gin_file = tmp_path / "run.gin"
    gin_file.write_text(RUN_GIN + f"TrainConfig.num_steps = {num_steps}\n"
                        "TrainConfig.mesh_shape = (2, 1, 4)\n"
                        f"CheckpointConfig.every_steps = {every}\n")
    return [sys.executable, "-m", "codereason_jax.train", f"--gin_file={gin_file}"]


def _losses(run_dir, num_steps):
    with open(run_dir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == list(range(num_steps))  # each step once
    return [r["loss"] for r in records]


def _assert_like_one_process(multi, single, num_steps):
    # Cross-process reductions may add in another order: equal to float tolerance.
    np.testing.assert_allclose(_losses(multi, num_steps), _losses(single, num_steps), rtol=1e-6)
    # The 2-process checkpoint restores in this single process like the 1-process one.
    step_a, params_a = final_params(str(multi))
    step_b, params_b = final_params(str(single))
    assert step_a == step_b == num_steps
    # atol: the attention key biases have an exactly zero gradient (softmax ignores a shift
    # shared by all keys), so they hold only Adam-normalised rounding noise, which the
    # reduction order changes (observed up to 1.2e-6 against weights of order 1e-2).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 params_a, params_b)


def test_two_processes_match_one_process(tmp_path):
    """The default tier's multi-host run: 3 steps, a checkpoint, metrics from process 0 only."""
    num_steps = 3
    command = _write_gin(tmp_path, num_steps, every=3)
    multi, single = tmp_path / "multi", tmp_path / "single"
    with held_port() as port:
        hosts = _start_hosts(command, multi, tmp_path, "multi", port)
        reference = subprocess.run(command + [f"--run_dir={single}"], cwd=ROOT, env=_env(8),
                                   capture_output=True, text=True, timeout=600)
        codes, outputs = _finish(hosts, tmp_path, "multi")
    assert reference.returncode == 0, reference.stdout + reference.stderr
    assert codes == [0, 0], outputs
    _assert_like_one_process(multi, single, num_steps)  # only process 0 writes metrics


@pytest.mark.slow  # three training processes; `make test-slow`
def test_multihost_auto_finds_the_cluster_from_the_environment(tmp_path):
    """``--multihost=auto`` (what Cloud TPU runs use) takes process count, id and coordinator
    from the cluster's environment, here a SLURM step's, and trains like one process."""
    num_steps = 3
    command = _write_gin(tmp_path, num_steps, every=3)
    multi, single = tmp_path / "multi", tmp_path / "single"
    with held_slurm_job() as job_id:
        hosts = _start_hosts(command, multi, tmp_path, "auto", None, slurm_job=job_id)
        reference = subprocess.run(command + [f"--run_dir={single}"], cwd=ROOT, env=_env(8),
                                   capture_output=True, text=True, timeout=600)
        codes, outputs = _finish(hosts, tmp_path, "auto")
    assert reference.returncode == 0, reference.stdout + reference.stderr
    assert codes == [0, 0], outputs
    assert "8 cpu device(s), 2 process(es)" in outputs[0], outputs[0]
    _assert_like_one_process(multi, single, num_steps)


@pytest.mark.slow  # four training processes; `make test-slow`
def test_two_processes_killed_after_a_checkpoint_resume_like_one_process(tmp_path):
    """SIGKILL one of two hosts at step 9 (the checkpoint of step 4 complete, that of step 8
    being written); the survivor, blocked in a collective, is killed too; both restart into the
    same run directory, resume from the newest complete checkpoint and end with the losses and
    parameters of an uninterrupted 1-process x 8-device run."""
    num_steps, every = 16, 4
    command = _write_gin(tmp_path, num_steps, every)
    multi, single = tmp_path / "multi", tmp_path / "single"
    reference = subprocess.Popen(command + [f"--run_dir={single}"], cwd=ROOT, env=_env(8),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with held_port() as port:
        hosts = _start_hosts(command, multi, tmp_path, "first", port, {1: "pause@9"})
        try:
            # Process 1 stops itself after step 9; it has started the save of step 8, which
            # waits for that of step 4 (on both hosts: step 9 needed process 0 too).
            wait_stopped(hosts[1])
            wait_for_path(multi / "checkpoints" / str(every), hosts[:1])
            hosts[1].send_signal(signal.SIGKILL)
            hosts[1].wait()
            # Process 0 waits on a collective that can never complete.
            hosts[0].send_signal(signal.SIGKILL)
            hosts[0].wait()
        finally:
            for host in hosts:
                host.kill()
    with open(multi / "metrics.jsonl") as f:
        cut = [json.loads(line)["step"] for line in f]
    assert len(cut) < num_steps, "the run finished before the kill"

    with held_port() as port:
        codes, outputs = _finish(_start_hosts(command, multi, tmp_path, "second", port),
                                 tmp_path, "second")
    try:
        ref_out, _ = reference.communicate(timeout=600)
    finally:
        reference.kill()
    assert codes == [0, 0], outputs
    assert reference.returncode == 0, ref_out
    resumed = [int(line.rsplit(" ", 1)[1]) for line in outputs[0].splitlines()
               if line.startswith("resuming from the checkpoint of step")]
    assert len(resumed) == 1 and resumed[0] in (4, 8), resumed
    _assert_like_one_process(multi, single, num_steps)
