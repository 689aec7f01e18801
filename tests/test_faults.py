"""The fault suite: a training run meets kills, corrupt files, a full disk, a changed config and a
read-only directory, and loses nothing.

Every fault is placed at a step, never at a time (``codereason_jax.failpoints``): the run stops
itself at the step (SIGSTOP) and the test kills it there, so the outcome does not depend on how
loaded the machine is. Each test ends by checking that nothing was lost (the resumed run equals
the uninterrupted one bitwise, or the directory is byte-for-byte unchanged) and that the user saw
the expected message.

``CODEREASON_FAULT_TABLE=docs/faults.md pytest tests/test_faults.py -m "slow or not slow"``
writes the table of faults and outcomes that the docs show.
"""

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from test_trainer import ROOT, final_params, losses, write_gin

TABLE_ENV = "CODEREASON_FAULT_TABLE"
OUTCOMES: list[tuple[str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    """Collect (fault, outcome) rows; write them as a markdown table when asked to."""
    yield
    target = os.environ.get(TABLE_ENV)
    if not target or not OUTCOMES:
        return
    lines = ["| fault | what the run did |", "|---|---|"]
    lines += [f"| {fault} | {outcome} |" for fault, outcome in OUTCOMES]
    with open(target, "w") as f:
        f.write("# Faults tried on a training run, and what happened\n\n"
                "Produced by the fault suite (`tests/test_faults.py`): "
                f"`{TABLE_ENV}=docs/faults.md python -m pytest tests/test_faults.py "
                "-m 'slow or not slow'`. Each row is a test that passed: the outcome was "
                "checked, not only observed. The runs are the 12-step tiny model of the "
                "trainer tests, checkpointing every 4 steps.\n\n" + "\n".join(lines) + "\n")


def record(fault: str, outcome: str) -> None:
    OUTCOMES.append((fault, outcome))


def launch(gin_file, run_dir, *bindings, failpoint=None, stderr_path=None):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("CODEREASON_FAILPOINT", None)
    if failpoint:
        env["CODEREASON_FAILPOINT"] = failpoint
    stderr = open(stderr_path, "w") if stderr_path else subprocess.STDOUT
    process = subprocess.Popen(
        [sys.executable, "-m", "codereason_jax.train", f"--gin_file={gin_file}",
         f"--run_dir={run_dir}", *bindings],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    if stderr_path:
        stderr.close()
    return process


def until_paused(process) -> str:
    """Read the run's output until it reports the failpoint, then wait until it has stopped
    itself there: the line is printed just before the SIGSTOP, and a signal sent in between
    would be handled before the stop and leave the run stopped for good."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("failpoint: paused at step"):
            _, status = os.waitpid(process.pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                process.returncode = os.waitstatus_to_exitcode(status)
                raise AssertionError("the run ended at its failpoint:\n" + "".join(seen))
            return "".join(seen)
    process.wait()
    raise AssertionError("the run ended before its failpoint:\n" + "".join(seen))


def run(gin_file, run_dir, *bindings, failpoint=None, tmp_path=None):
    """(exit code, stdout, stderr) of a run to its end."""
    stderr_path = str(tmp_path / f"stderr-{len(os.listdir(tmp_path))}.txt")
    process = launch(gin_file, run_dir, *bindings, failpoint=failpoint, stderr_path=stderr_path)
    out, _ = process.communicate(timeout=600)
    with open(stderr_path) as f:
        return process.returncode, out, f.read()


def snapshot(directory) -> dict[str, str]:
    """relative path -> sha256 of every file under ``directory``."""
    digests = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def copy_of(run_dir, tmp_path) -> str:
    """A copy of a finished run directory, to damage."""
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    return copy


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def complete_steps(run_dir) -> list[int]:
    directory = os.path.join(run_dir, "checkpoints")
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every fault is compared with."""
    tmp_path = tmp_path_factory.mktemp("reference")
    gin_file = write_gin(tmp_path)
    run_dir = str(tmp_path / "run")
    code, out, err = run(gin_file, run_dir, tmp_path=tmp_path)
    assert code == 0, out + err
    return gin_file, run_dir


def assert_same_as(reference_dir, run_dir):
    assert losses(run_dir) == losses(reference_dir)  # bitwise, each step once
    (step_a, params_a), (step_b, params_b) = final_params(reference_dir), final_params(run_dir)
    assert step_a == step_b == 12
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def _kill_at(reference, tmp_path, failpoint, torn_line=False):
    gin_file, reference_dir = reference
    run_dir = str(tmp_path / "run")
    process = launch(gin_file, run_dir, failpoint=failpoint)
    until_paused(process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    saved = complete_steps(run_dir)
    assert losses(run_dir).keys() != losses(reference_dir).keys()  # it really was cut short
    if torn_line:  # the kill landed mid-append
        with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
            f.write('{"step": 6, "loss": 8.1')
    # The restart reads its batches without the background prefetcher: the same batches.
    code, out, err = run(gin_file, run_dir, "--gin.TrainConfig.prefetch_batches=0",
                         tmp_path=tmp_path)
    assert code == 0, out + err
    if saved:
        assert f"resuming from the checkpoint of step {saved[-1]}" in out
    if torn_line:
        assert "dropped the partial last line" in out
    assert_same_as(reference_dir, run_dir)
    return saved


def test_sigkill_at_a_step_and_a_torn_log_line_lose_nothing(reference, tmp_path):
    saved = _kill_at(reference, tmp_path, "pause@6", torn_line=True)
    record("SIGKILL after step 6 (checkpoint of step 4 saved or in flight)",
           f"resumed from step {saved[-1] if saved else 0}; every loss and the final "
           "parameters bitwise equal to the uninterrupted run")
    record("torn last line of `metrics.jsonl` (a kill mid-append)",
           "the fragment dropped with a warning; resume went on; each step logged once")


@pytest.mark.slow  # three more kill-and-resume pairs; `make test-slow`
def test_sigkill_at_random_steps_and_mid_save_lose_nothing(reference, tmp_path):
    rng = random.Random(20261204)
    for failpoint in [f"pause@{rng.randrange(1, 12)}", f"pause@{rng.randrange(1, 12)}",
                      "pause_saving@8"]:
        directory = tmp_path / failpoint.replace("@", "-")
        directory.mkdir()
        saved = _kill_at(reference, directory, failpoint)
        where = ("while the checkpoint of step 8 was being written"
                 if failpoint.startswith("pause_saving") else f"after step {failpoint[6:]}")
        record(f"SIGKILL {where}", f"resumed from step {saved[-1] if saved else 0}; bitwise "
               "equal to the uninterrupted run")


def test_sigterm_saves_the_step_it_reached_and_resumes(reference, tmp_path):
    gin_file, reference_dir = reference
    run_dir = str(tmp_path / "run")
    process = launch(gin_file, run_dir, "--gin.CheckpointConfig.every_steps=100",
                     failpoint="pause@3")
    until_paused(process)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    assert "SIGTERM: saved the checkpoint of step 3 and stopped" in out
    assert complete_steps(run_dir) == [3]
    code, out, err = run(gin_file, run_dir, "--gin.CheckpointConfig.every_steps=100",
                         tmp_path=tmp_path)
    assert code == 0, out + err
    assert "resuming from the checkpoint of step 3" in out
    assert_same_as(reference_dir, run_dir)
    record("SIGTERM (preemption notice) during step 3",
           "checkpoint of step 3 saved, exit 0; the rerun resumed there, bitwise equal")


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_last_checkpoint(reference,
                                                                               tmp_path):
    gin_file, reference_dir = reference
    run_dir = str(tmp_path / "run")
    # From step 6 no file may grow past 64 KiB: the checkpoint of step 8 cannot be written.
    code, out, err = run(gin_file, run_dir, failpoint="fsize@6:65536", tmp_path=tmp_path)
    assert code == 4, out + err
    errors = error_lines(err)
    assert len(errors) == 1, err
    assert "could not write the checkpoint of step 8" in errors[0]
    assert "File too large" in errors[0] and "the checkpoint of step 4 is intact" in errors[0]
    assert "Traceback" not in out + err
    assert complete_steps(run_dir) == [4]
    code, out, err = run(gin_file, run_dir, tmp_path=tmp_path)
    assert code == 0, out + err
    assert "resuming from the checkpoint of step 4" in out
    assert_same_as(reference_dir, run_dir)
    record("disk full while saving step 8 (a file-size limit from step 6)",
           "exit 4 with one `error:` line naming the file and that step 4 is intact, no "
           "traceback; the rerun resumed from step 4, bitwise equal")


def test_a_changed_model_is_refused_and_the_directory_left_byte_for_byte(reference, tmp_path):
    gin_file, reference_dir = reference
    run_dir = copy_of(reference_dir, tmp_path)
    before = snapshot(run_dir)
    code, out, err = run(gin_file, run_dir, "--gin.PanGuConfig.num_layers=4",
                         tmp_path=tmp_path)
    assert code == 2, out + err
    errors = error_lines(err)
    assert len(errors) == 1 and "Traceback" not in out + err, err
    assert "PanGuConfig.num_layers 3 -> 4 (changes the parameter shapes)" in errors[0]
    assert f"--init_from={run_dir}" in errors[0] and "new --run_dir" in errors[0]
    assert snapshot(run_dir) == before
    record("rerun with another model (`--gin.PanGuConfig.num_layers=4`)",
           "exit 2 with one `error:` line naming the field, both values and the ways forward; "
           "every file byte-for-byte unchanged")


def test_a_changed_schedule_is_refused_and_the_directory_left_byte_for_byte(reference,
                                                                          tmp_path):
    gin_file, reference_dir = reference
    run_dir = copy_of(reference_dir, tmp_path)
    before = snapshot(run_dir)
    code, out, err = run(gin_file, run_dir, "--gin.TrainConfig.num_steps=16",
                         "--gin.TrainConfig.mixture='pretrain_nl_embedded'", tmp_path=tmp_path)
    assert code == 2, out + err
    errors = error_lines(err)
    assert len(errors) == 1 and "Traceback" not in out + err, err
    assert "TrainConfig.mixture 'pretrain_code_embedded' -> 'pretrain_nl_embedded'" in errors[0]
    assert "changes the data mixture" in errors[0] and "allow_schedule_change" in errors[0]
    assert snapshot(run_dir) == before
    record("resume to a longer run with another data mixture",
           "exit 2 with one `error:` line naming the field, both values and "
           "`allow_schedule_change`; every file byte-for-byte unchanged")


def test_a_corrupt_newest_checkpoint_is_moved_aside_and_saved_again(reference, tmp_path):
    gin_file, reference_dir = reference
    run_dir = copy_of(reference_dir, tmp_path)
    params_dir = os.path.join(run_dir, "checkpoints", "12", "params")
    files = [os.path.join(d, f) for d, _, names in os.walk(params_dir) for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)
    code, out, err = run(gin_file, run_dir, tmp_path=tmp_path)
    assert code == 0, out + err
    assert "the checkpoint of step 12 cannot be loaded" in out
    assert "resuming from the checkpoint of step 8" in out
    assert os.path.isdir(os.path.join(run_dir, "checkpoints_corrupt", "12"))
    assert complete_steps(run_dir)[-1] == 12  # saved again when reached
    assert_same_as(reference_dir, run_dir)
    record("newest checkpoint truncated (half of its largest params file)",
           "moved to `checkpoints_corrupt/12` with a warning (kept); resumed from step 8 and "
           "saved step 12 again, bitwise equal")


def _make_read_only(directory):
    """chmod for a normal user; a read-only bind mount for root (who ignores permissions)."""
    if os.geteuid() != 0:
        for folder, subdirs, names in os.walk(directory):
            for name in names + subdirs:
                os.chmod(os.path.join(folder, name), 0o555 if name in subdirs else 0o444)
        os.chmod(directory, 0o555)
        return lambda: subprocess.run(["chmod", "-R", "u+w", str(directory)], check=True)
    mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"root here cannot bind-mount: {mounted.stderr.decode().strip()}")
    subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True)
    return lambda: subprocess.run(["umount", str(directory)], check=True)


def test_a_read_only_run_directory_is_one_error_and_nothing_changes(reference, tmp_path):
    gin_file, reference_dir = reference
    run_dir = copy_of(reference_dir, tmp_path)
    before = snapshot(run_dir)
    restore = _make_read_only(run_dir)
    try:
        code, out, err = run(gin_file, run_dir, "--gin.TrainConfig.num_steps=14",
                             tmp_path=tmp_path)
    finally:
        restore()
    assert code == 4, out + err
    errors = error_lines(err)
    assert len(errors) == 1 and "Traceback" not in out + err, err
    assert "could not" in errors[0] and run_dir in errors[0]
    assert snapshot(run_dir) == before
    record("read-only run directory (resume to a longer run)",
           "exit 4 with one `error:` line naming the file it could not write; nothing changed")
