"""Cloud TPU launcher: exact gcloud commands under --dry_run (nothing runs), the resume logic
against scripted `describe` answers, the remote scripts executed by a local shell, the TPU table,
and the partitioning gin files of the README flows."""

import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `launch` is a top-level package of the repository, not installed
    sys.path.insert(0, ROOT)

from launch import launcher as launcher_mod  # noqa: E402
from launch import run_code, startup, topology, tpu, tpu_check  # noqa: E402
from launch.tpu import Result  # noqa: E402

NAME, ZONE = "cr-2b6", "us-central2-b"
BASE = [f"--name={NAME}", f"--zone={ZONE}"]
RUN_2_6B = ["--accelerator_type=v4-32", "--gin_file=gin/models/pangu_2_6b.gin",
            "--gin_file=gin/partitioning/v4_32.gin", "--run_dir=gs://my-bucket/runs/pt_2_6b"]
TRAIN_2_6B = ("$HOME/codereason_venv/bin/python -m codereason_jax.train "
              "--gin_file=gin/models/pangu_2_6b.gin --gin_file=gin/partitioning/v4_32.gin "
              "--multihost=auto --run_dir=gs://my-bucket/runs/pt_2_6b")
TARBALL = os.path.join(ROOT, "dist", "codereason_jax-src.tar.gz")


@pytest.fixture
def no_subprocess(monkeypatch):
    """Any attempt to start a process fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a dry run started a process: {args}")
    for name in ("run", "call", "check_call", "check_output", "Popen"):
        monkeypatch.setattr(subprocess, name, refuse)
    monkeypatch.setattr(os, "system", refuse)


def dry_full(capsys, *argv):
    """(stdout lines, stderr) of a dry run: one command per line, the plan on stderr."""
    code = tpu.main([*argv, "--dry_run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines and all(line.strip() and shlex.split(line) for line in lines)
    return lines, err


def dry(capsys, *argv):
    return dry_full(capsys, *argv)[0]


def first_launch_code_lines(run_dir, commit="HEAD"):
    """What a first launch runs to store the run's code (a dry run pretends commit HEAD and
    no code.json yet)."""
    dist = os.path.join(ROOT, "dist")
    return [f"git -C {ROOT} rev-parse --verify HEAD",
            f"gcloud storage cat {run_dir}/launch/code.json",
            f"git -C {ROOT} status --porcelain --untracked-files=no",
            f"mkdir -p {dist}",
            f"git -C {ROOT} archive --format=tar.gz --prefix=codereason_jax/ "
            f"--output={dist}/code-{commit[:12]}.tar.gz {commit}",
            f"gcloud storage cp {dist}/code-{commit[:12]}.tar.gz {run_dir}/launch/code.tar.gz",
            f"gcloud storage cp {dist}/code-{commit[:12]}.json {run_dir}/launch/code.json"]


def remote_script(line: str) -> str:
    """The --command=... of an ssh line."""
    (command,) = [a for a in shlex.split(line) if a.startswith("--command=")]
    return command[len("--command="):]


def ssh_prefix(worker="all"):
    return f"gcloud compute tpus tpu-vm ssh {NAME} --worker={worker} "


# ---------------------------------------------------------------------- dry-run commands


def test_create_plain_and_queued(capsys, no_subprocess):
    assert dry(capsys, "create", *BASE, "--accelerator_type=v4-32") == [
        f"gcloud compute tpus tpu-vm create {NAME} --accelerator-type=v4-32 "
        f"--version=tpu-ubuntu2204-base --zone={ZONE}"]
    assert dry(capsys, "create", *BASE, "--accelerator_type=v4-64", "--queued", "--spot",
               "--project=my-proj") == [
        f"gcloud compute tpus queued-resources create {NAME} --node-id={NAME} "
        f"--accelerator-type=v4-64 --runtime-version=tpu-ubuntu2204-base --spot "
        f"--zone={ZONE} --project=my-proj",
        # the request returns at once: poll until ACTIVE (a dry run polls once)
        f"gcloud compute tpus queued-resources describe {NAME} '--format=value(state.state)' "
        f"--zone={ZONE} --project=my-proj"]
    lines = dry(capsys, "create", *BASE, "--accelerator_type=v5litepod-16", "--queued",
                "--best_effort")
    assert lines[0] == (f"gcloud alpha compute tpus queued-resources create {NAME} "
                        f"--node-id={NAME} --accelerator-type=v5litepod-16 "
                        f"--runtime-version=v2-alpha-tpuv5-lite --best-effort --zone={ZONE}")


def test_delete_plain_and_queued(capsys, no_subprocess):
    assert dry(capsys, "delete", *BASE) == [
        f"gcloud compute tpus tpu-vm delete {NAME} --quiet --zone={ZONE}"]
    assert dry(capsys, "delete", *BASE, "--queued") == [
        f"gcloud compute tpus queued-resources delete {NAME} --force --quiet --zone={ZONE}"]


def test_setup_ships_the_committed_tree_and_installs_with_constraints(capsys, no_subprocess):
    lines = dry(capsys, "setup", *BASE)
    assert lines[:3] == [
        f"mkdir -p {os.path.join(ROOT, 'dist')}",
        f"git -C {ROOT} archive --format=tar.gz --prefix=codereason_jax/ --output={TARBALL} HEAD",
        f"gcloud compute tpus tpu-vm scp {TARBALL} {NAME}:codereason_jax-src.tar.gz "
        f"--worker=all --zone={ZONE}"]
    assert len(lines) == 4 and lines[3].startswith(ssh_prefix("all") + "'--command=")
    script = remote_script(lines[3])
    steps = script.split("; ")
    assert steps[0] == "set -eu"
    assert "tar -xzf $HOME/codereason_jax-src.tar.gz -C $HOME" in steps
    assert ("$HOME/codereason_venv/bin/pip install --quiet -c requirements/constraints.txt -e . "
            "'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
            in steps)
    assert ("$HOME/codereason_venv/bin/pip install --quiet --no-deps "
            "-c requirements/constraints.txt t5" in steps)
    assert "python3.11 -m venv $HOME/codereason_venv" in script


def test_setup_through_gcs_with_data(capsys, no_subprocess):
    lines = dry(capsys, "setup", *BASE, "--stage=gs://my-bucket/stage",
                "--data_from=gs://my-bucket/codereason_data", "--ref=v0.1")
    assert lines[1].endswith(" v0.1")
    assert lines[2] == (f"gcloud storage cp {TARBALL} "
                        "gs://my-bucket/stage/codereason_jax-src.tar.gz")
    steps = remote_script(lines[3]).split("; ")
    assert steps[1] == ("gcloud storage cp gs://my-bucket/stage/codereason_jax-src.tar.gz "
                        "$HOME/codereason_jax-src.tar.gz")
    assert ("gcloud storage rsync --recursive gs://my-bucket/codereason_data "
            "$HOME/codereason_data" in steps)


def test_run_starts_every_worker_under_nohup_and_follows_worker_0(capsys, no_subprocess):
    lines, plan = dry_full(capsys, "run", *BASE, *RUN_2_6B, "--gin.TrainConfig.num_steps=1000",
                           "--gin.TrainConfig.mixture='pretrain_code_paper'")
    assert "4 host(s) x 4 devices" in plan and "mesh (data, fsdp, model) = (1, 16, 1)" in plan
    assert lines[:-2] == first_launch_code_lines("gs://my-bucket/runs/pt_2_6b")
    lines = lines[-2:]
    assert lines[0].startswith(ssh_prefix("all") + "'--command=")
    assert lines[0].endswith(f" --zone={ZONE}")
    script = remote_script(lines[0])
    expected_train = (TRAIN_2_6B + " --gin.TrainConfig.num_steps=1000 "
                      + shlex.quote("--gin.TrainConfig.mixture='pretrain_code_paper'"))
    assert (f"setsid nohup env CODEREASON_DATA_DIR=$HOME/codereason_data {expected_train} "
            "> $HOME/codereason_logs/train.log 2>&1 < /dev/null &") in script
    assert "cd $HOME/codereason_jax" in script.split("; ")
    assert lines[1] == (ssh_prefix("0") + "'--command=tail -n +1 -F "
                        f"$HOME/codereason_logs/train.log' --zone={ZONE}")


def test_run_single_host_and_options(capsys, no_subprocess):
    lines = dry(capsys, "run", *BASE, "--accelerator_type=v4-8",
                "--gin_file=gin/models/pangu_350m.gin", "--run_dir=gs://b/r", "--no_follow",
                "--data_dir=gs://b/data", "--env=LIBTPU_INIT_ARGS=--xla_tpu_x=1")
    assert lines[:-1] == first_launch_code_lines("gs://b/r")
    lines = lines[-1:]
    script = remote_script(lines[0])
    assert ("env CODEREASON_DATA_DIR=gs://b/data LIBTPU_INIT_ARGS=--xla_tpu_x=1 "
            "$HOME/codereason_venv/bin/python -m codereason_jax.train "
            "--gin_file=gin/models/pangu_350m.gin --multihost=off --run_dir=gs://b/r" in script)


def test_logs_status_stop(capsys, no_subprocess):
    assert dry(capsys, "logs", *BASE, "--worker=2", "--lines=50") == [
        ssh_prefix("2") + f"'--command=tail -n 50 $HOME/codereason_logs/train.log' --zone={ZONE}"]
    status = dry(capsys, "status", *BASE)
    assert status[0] == (f"gcloud compute tpus tpu-vm describe {NAME} "
                         f"'--format=value(state)' --zone={ZONE}")
    assert status[1].startswith(ssh_prefix("all"))
    stop = dry(capsys, "stop", *BASE, "--grace_s=30")
    assert len(stop) == 1 and "kill -TERM $p" in stop[0] and "seq 30" in stop[0]


@pytest.mark.parametrize("argv,message", [
    (["run", *BASE, "--accelerator_type=v4-33", *RUN_2_6B[1:]], "Unknown accelerator type"),
    (["create", *BASE, "--accelerator_type=v5e-16"], "Did you mean v5litepod-16?"),
    (["create", *BASE], "--accelerator_type is required"),
    (["run", f"--name={NAME}", *RUN_2_6B], "--zone is required"),
    (["run", *BASE, *RUN_2_6B[:3], "--run_dir=/tmp/run"], "must be a GCS path gs://BUCKET"),
    (["run", *BASE, *RUN_2_6B[:3], "--run_dir=gs://"], "must be a GCS path gs://BUCKET"),
    (["run", *BASE, *RUN_2_6B[:3]], "--run_dir is required"),
    (["run", *BASE, "--accelerator_type=v4-32", "--run_dir=gs://b/r"], "--gin_file is required"),
    (["run", *BASE, "--accelerator_type=v4-32", "--gin_file=gin/nope.gin", "--run_dir=gs://b/r"],
     "gin file 'gin/nope.gin' not found"),
    # the 13B partitioning (32 devices) on a v4-32 (16 devices)
    (["run", *BASE, "--accelerator_type=v4-32", "--gin_file=gin/models/pangu_13b.gin",
      "--gin_file=gin/partitioning/v4_64.gin", "--run_dir=gs://b/r"],
     "does not match v4-32, which has 16 JAX devices"),
    (["run", *BASE, *RUN_2_6B, "--gin.TrainConfig.batch_size=24"],
     "batch_size = 24 is not divisible by data x fsdp = 16"),
    (["create", *BASE, "--accelerator_type=v4-32", "--best_effort"], "needs --queued"),
    (["setup", *BASE, "--stage=/tmp/x"], "must be a gs:// path"),
    (["delete", *BASE, "--gin.X.y=1"], "only apply to run, resume and create --unattended"),
    (["create", *BASE, "--accelerator_type=v4-32", "--gin.X.y=1"],
     "only apply to run, resume and create --unattended"),
    (["create", *BASE, *RUN_2_6B, "--unattended", "--max_attempts=0"],
     "--max_attempts=0 must be at least 1"),
    (["logs", *BASE, "--attempt=2"], "--attempt needs --run_dir"),
    (["logs", *BASE, "--run_dir=gs://b/r", "--follow"], "--follow streams from the workers"),
    (["setup", *BASE, "--run_dir=gs://b/r", "--ref=v0.1"], "do not apply with --run_dir"),
    (["run", *BASE, *RUN_2_6B, "--gin.TrainConfig.mesh_shape=(1, 16"], "gin syntax error"),
])
def test_invalid_inputs_are_explained(capsys, no_subprocess, argv, message):
    assert tpu.main([*argv, "--dry_run"]) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""


# ------------------------------------------------------------------------------- resume


def kind(argv):
    """A short label for a recorded command."""
    text = shlex.join(argv)
    if argv[0] == "git":
        return f"git {argv[3]}"
    if argv[0] != "gcloud":
        return argv[0]
    if argv[1] == "storage":  # the object's name tells the file apart
        return f"storage {argv[2]} {argv[-1].rsplit('/', 1)[-1]}"
    if " ssh " in text:
        script = remote_script(text)
        for marker, label in (("pip install", "ssh setup"), ("setsid nohup", "ssh launch"),
                              (tpu.STATE_MARK, "ssh train-state"), ("kill -TERM", "ssh stop"),
                              ("tail -n", "ssh follow")):
            if marker in script:
                return label
        raise AssertionError(script)
    group = "queued-resources" if "queued-resources" in argv else "tpu-vm"
    return f"{'qr' if group == 'queued-resources' else 'node'} {argv[argv.index(group) + 1]}"


class FakeRunner(tpu.Runner):
    """Records commands; answers queries from scripted results per kind (the last repeats)."""

    def __init__(self, answers):
        super().__init__(dry_run=False)
        self.answers = {k: list(v) for k, v in answers.items()}
        self.commands = []

    def run(self, argv):
        self.commands.append(list(argv))

    def query(self, argv, dry_run_answer=Result(0)):
        self.commands.append(list(argv))
        queue = self.answers[kind(argv)]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def state(name):
    return Result(0, name + "\n")


GONE = Result(1, "", f"ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: {NAME} not found")
COMMIT = "1234567890abcdef1234567890abcdef12345678"
OTHER = "fedcba0987654321fedcba0987654321fedcba09"


def record(commit=COMMIT):
    return Result(0, json.dumps({"commit": commit, "time": "2026-11-30T08:00:00Z",
                                 "who": "ana@laptop", "dirty_tree": False}))


NO_OBJECT = Result(1, "", "ERROR: (gcloud.storage.cat) The following URLs matched no objects "
                   "or files:\n-gs://my-bucket/runs/pt_2_6b/launch/code.json")
CODE_OK = ["git rev-parse", "storage cat code.json"]  # the run's code is HEAD: nothing to store
STORED = {"git rev-parse": [Result(0, COMMIT + "\n")], "storage cat code.json": [record()]}


def workers(*states):
    return Result(0, "".join(f"{tpu.STATE_MARK} {s} t1v-n-{i}-w-{i}\n"
                             for i, s in enumerate(states)))


def resume(answers, *extra, expect=0):
    runner, naps = FakeRunner({**STORED, **answers}), []
    code = tpu.main(["resume", *BASE, *RUN_2_6B, "--no_follow", *extra], runner=runner,
                    sleep=naps.append)
    assert code == expect
    return [kind(c) for c in runner.commands], runner.commands, naps


SETUP = ["ssh setup"]  # the workers fetch the run's stored code themselves


def test_resume_ready_and_running_everywhere_does_nothing(no_subprocess):
    kinds, _, _ = resume({"node describe": [state("READY")],
                          "ssh train-state": [workers(*["running"] * 4)]})
    assert kinds == [*CODE_OK, "node describe", "ssh train-state"]


def test_resume_ready_but_stopped_relaunches_without_setup(no_subprocess):
    kinds, commands, _ = resume({"node describe": [state("READY")],
                                 "ssh train-state": [workers(*["stopped"] * 4)]})
    assert kinds == [*CODE_OK, "node describe", "ssh train-state", "ssh launch"]
    assert TRAIN_2_6B in remote_script(shlex.join(commands[-1]))


def test_resume_partly_running_stops_everything_first(no_subprocess):
    kinds, _, _ = resume({"node describe": [state("READY")],
                          "ssh train-state": [workers("running", "stopped", "running",
                                                      "running")]})
    assert kinds == [*CODE_OK, "node describe", "ssh train-state", "ssh stop", "ssh launch"]


def test_resume_preempted_recreates_sets_up_from_the_stored_code(no_subprocess):
    kinds, commands, _ = resume({"node describe": [state("PREEMPTED")]})
    assert kinds == [*CODE_OK, "node describe", "node delete", "node create", *SETUP,
                     "ssh launch"]
    assert shlex.join(commands[3]) == (f"gcloud compute tpus tpu-vm delete {NAME} --quiet "
                                       f"--zone={ZONE}")
    assert shlex.join(commands[4]) == (
        f"gcloud compute tpus tpu-vm create {NAME} --accelerator-type=v4-32 "
        f"--version=tpu-ubuntu2204-base --zone={ZONE}")
    steps = remote_script(shlex.join(commands[5])).split("; ")
    # the run's code from the bucket, never the checkout (no git archive, no scp)
    assert steps[1] == ("gcloud storage cp gs://my-bucket/runs/pt_2_6b/launch/code.tar.gz "
                        "$HOME/codereason_jax-src.tar.gz")
    launch = remote_script(shlex.join(commands[-1]))
    assert "--run_dir=gs://my-bucket/runs/pt_2_6b" in launch  # the SAME run directory


def test_resume_not_found_creates(no_subprocess):
    kinds, _, _ = resume({"node describe": [GONE]})
    assert kinds == [*CODE_OK, "node describe", "node create", *SETUP, "ssh launch"]


def test_resume_waits_while_the_node_is_busy(no_subprocess):
    kinds, _, naps = resume({"node describe": [state("REPAIRING"), state("REPAIRING"),
                                               state("READY")],
                             "ssh train-state": [workers(*["stopped"] * 4)]}, "--poll_s=5")
    assert kinds == [*CODE_OK, *["node describe"] * 3, "ssh train-state", "ssh launch"]
    assert naps == [5.0, 5.0]


def test_resume_queued_suspended_deletes_waits_recreates(no_subprocess):
    kinds, commands, naps = resume(
        {"qr describe": [state("SUSPENDED"), state("DELETING"), GONE,
                         state("WAITING_FOR_RESOURCES"), state("PROVISIONING"),
                         state("ACTIVE")]},
        "--queued", "--spot", "--poll_s=60")
    assert kinds == [*CODE_OK, "qr describe", "qr delete", "qr describe", "qr describe",
                     "qr create", "qr describe", "qr describe", "qr describe", *SETUP,
                     "ssh launch"]
    assert shlex.join(commands[3]) == (f"gcloud compute tpus queued-resources delete {NAME} "
                                       f"--force --quiet --zone={ZONE}")
    assert "--spot" in commands[6] and f"--node-id={NAME}" in commands[6]
    assert naps == [60.0] * 3


def test_resume_queued_active_with_preempted_node_waits_for_the_request(no_subprocess):
    """The node's PREEMPTED does not delete an ACTIVE request: the request's own SUSPENDED
    does, when it comes."""
    kinds, _, naps = resume({"qr describe": [state("ACTIVE"), state("SUSPENDED"), GONE,
                                             state("ACTIVE")],
                             "node describe": [state("PREEMPTED")]}, "--queued", "--poll_s=30")
    assert kinds == [*CODE_OK, "qr describe", "node describe", "qr describe", "qr delete",
                     "qr describe", "qr create", "qr describe", *SETUP, "ssh launch"]
    assert naps == [30.0]


NODE_STATES_WAITED = sorted(launcher_mod.NODE_BUSY | {"SOMETHING_NEW"})
QR_STATES_WAITED = sorted(launcher_mod.QR_BUSY | {"SOMETHING_NEW"})


@pytest.mark.parametrize("busy", NODE_STATES_WAITED)
def test_resume_waits_out_every_busy_node_state(no_subprocess, busy):
    kinds, _, naps = resume({"node describe": [state(busy), state("READY")],
                             "ssh train-state": [workers(*["running"] * 4)]}, "--poll_s=7")
    assert kinds == [*CODE_OK, "node describe", "node describe", "ssh train-state"]
    assert naps == [7.0]


@pytest.mark.parametrize("gone", sorted(launcher_mod.NODE_GONE))
def test_resume_recreates_a_node_only_in_a_terminal_state(no_subprocess, gone):
    kinds, _, _ = resume({"node describe": [state(gone)]})
    assert kinds[2:4] == ["node describe", "node delete"]


@pytest.mark.parametrize("held", sorted(launcher_mod.NODE_HELD))
def test_resume_leaves_a_stopped_node_to_its_owner(no_subprocess, capsys, held):
    kinds, _, _ = resume({"node describe": [state(held)]}, expect=2)
    assert kinds == [*CODE_OK, "node describe"]
    err = capsys.readouterr().err
    assert f"error: {NAME} is {held}: it was stopped or set aside on purpose" in err


@pytest.mark.parametrize("busy", QR_STATES_WAITED)
def test_resume_queued_waits_out_every_busy_request_state(no_subprocess, busy):
    kinds, _, naps = resume({"qr describe": [state(busy), state("ACTIVE")],
                             "node describe": [state("READY")],
                             "ssh train-state": [workers(*["running"] * 4)]},
                            "--queued", "--poll_s=7")
    assert kinds == [*CODE_OK, "qr describe", "qr describe", "node describe",
                     "ssh train-state"]
    assert naps == [7.0]


@pytest.mark.parametrize("node", sorted(
    (launcher_mod.NODE_BUSY | launcher_mod.NODE_GONE | launcher_mod.NODE_HELD) - {"UNKNOWN"}))
def test_resume_queued_active_never_judges_the_node_alone(no_subprocess, node):
    kinds, _, _ = resume({"qr describe": [state("ACTIVE")],
                          "node describe": [state(node), GONE, state("READY")],
                          "ssh train-state": [workers(*["running"] * 4)]}, "--queued")
    assert kinds == [*CODE_OK, *["qr describe", "node describe"] * 3, "ssh train-state"]


@pytest.mark.parametrize("gone", sorted(launcher_mod.QR_GONE))
def test_resume_queued_recreates_in_the_requests_terminal_states(no_subprocess, gone):
    kinds, _, _ = resume({"qr describe": [state(gone), GONE, state("ACTIVE")]}, "--queued")
    assert kinds[2:5] == ["qr describe", "qr delete", "qr describe"]


def api_error(status, code=1):
    return Result(code, "", f"ERROR: (gcloud.compute.tpus.queued-resources.describe) {status}")


UNAVAILABLE = api_error("UNAVAILABLE: The service is currently unavailable.")


def test_resume_queued_with_transient_errors_never_deletes(no_subprocess):
    kinds, _, naps = resume(
        {"qr describe": [UNAVAILABLE, api_error("DEADLINE_EXCEEDED: timed out"),
                         state("ACTIVE")],
         "node describe": [api_error("INTERNAL: internal error"),
                           Result(1, "", "ERROR: gcloud crashed (ConnectionError): reset"),
                           state("READY")],
         "ssh train-state": [workers(*["running"] * 4)]}, "--queued")
    assert kinds == [*CODE_OK, "qr describe", "qr describe", "qr describe",
                     "node describe", "node describe", "node describe", "ssh train-state"]
    assert naps == [10.0, 20.0, 10.0, 20.0]  # backoff per query, starting over each time


def test_resume_reports_a_persisting_api_error_in_one_line(no_subprocess, capsys):
    kinds, _, naps = resume({"qr describe": [UNAVAILABLE]}, "--queued", "--api_retries=3",
                            expect=2)
    assert kinds == [*CODE_OK, *["qr describe"] * 4]
    assert naps == [10.0, 20.0, 40.0]
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("error:")] == [
        f"error: {NAME}: `gcloud compute tpus queued-resources describe ...` failed (after 3 "
        "retries; nothing was changed): ERROR: (gcloud.compute.tpus.queued-resources.describe) "
        "UNAVAILABLE: The service is currently unavailable."]


@pytest.mark.parametrize("failure", [
    Result(1, "", "ERROR: PERMISSION_DENIED: tpu.nodes.get"),
    Result(127, "", "sh: 1: gcloud: command not found"),  # "not found", but not the API's
    Result(1, "", "ERROR: (gcloud.compute.tpus.tpu-vm.describe) You do not currently have an "
                  "active account selected."),
])
def test_resume_permanent_failures_are_reported_at_once(no_subprocess, capsys, failure):
    kinds, _, naps = resume({"node describe": [failure]}, expect=2)
    assert kinds == [*CODE_OK, "node describe"] and naps == []
    assert "not retried; nothing was changed" in capsys.readouterr().err


@pytest.mark.parametrize("result,expected", [
    (GONE, "not_found"),
    (Result(1, "", "ERROR: (gcloud.compute.tpus.tpu-vm.describe) HttpError accessing <x>: "
                   "response: <{'status': '404'}>, content <Requested entity was not found.>"),
     "not_found"),
    (NO_OBJECT, "not_found"),
    (Result(127, "", "bash: gcloud: command not found"), "permanent"),
    (Result(1, "", "node not found in cache"), "transient"),  # not gcloud's error line
    (api_error("PERMISSION_DENIED: denied"), "permanent"),
    (api_error("RESOURCE_EXHAUSTED: quota"), "transient"),
    (api_error("UNAVAILABLE: try again"), "transient"),
])
def test_classify_failure(result, expected):
    assert launcher_mod.classify_failure(result) == expected


def test_a_missing_gcloud_is_a_permanent_failure(monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "gcloud")
    monkeypatch.setattr(subprocess, "run", missing)
    result = tpu.Runner().query(["gcloud", "compute", "tpus", "tpu-vm", "describe", NAME])
    assert result == Result(127, "", "gcloud: command not found")
    assert launcher_mod.classify_failure(result) == "permanent"


def test_wait_gives_up_without_deleting(no_subprocess):
    """A slice busy past --wait_timeout_s is an error, and nothing is deleted."""
    runner = FakeRunner({**STORED, "node describe": [state("REPAIRING")]})
    now = [0.0]
    args = tpu.parse_args(["resume", *BASE, *RUN_2_6B, "--wait_timeout_s=250", "--poll_s=100"])
    launcher = tpu.Launcher(args, runner, sleep=lambda s: now.__setitem__(0, now[0] + s),
                            clock=lambda: now[0])
    with pytest.raises(topology.LaunchError, match="still REPAIRING after 250 s of waiting for "
                       "READY or a terminal state; nothing was deleted"):
        launcher.resume()
    assert [kind(c) for c in runner.commands] == [*CODE_OK, *["node describe"] * 4]


def test_resume_dry_run_prints_the_recovery_sequence(capsys, no_subprocess):
    lines = dry(capsys, "resume", *BASE, *RUN_2_6B, "--no_follow")  # assumes PREEMPTED
    code = ["git rev-parse", "storage cat code.json", "git status", "mkdir", "git archive",
            "storage cp code.tar.gz", "storage cp code.json"]  # a dry run has no stored code
    assert [kind(shlex.split(line)) for line in lines] == [
        *code, "node describe", "node delete", "node create", *SETUP, "ssh launch"]
    lines = dry(capsys, "resume", *BASE, *RUN_2_6B, "--no_follow", "--assume_state=READY")
    assert [kind(shlex.split(line)) for line in lines] == [
        *code, "node describe", "ssh train-state", "ssh launch"]


# ------------------------------------------------------------------ one code per run


def launch_run(answers, *extra, expect=0, command="run"):
    runner = FakeRunner(answers)
    code = tpu.main([command, *BASE, *RUN_2_6B, "--no_follow", *extra], runner=runner,
                    sleep=lambda s: None)
    assert code == expect
    return runner


@pytest.fixture
def work_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher_mod, "WORK_DIR", str(tmp_path))
    monkeypatch.setattr(run_code, "utc_now", lambda: "2026-12-01T09:00:00Z")
    monkeypatch.setattr(run_code, "who", lambda: "ana@laptop")
    return tmp_path


def test_first_launch_stores_a_clean_commit_with_its_record(no_subprocess, work_dir):
    runner = launch_run({"git rev-parse": [Result(0, COMMIT + "\n")],
                         "storage cat code.json": [NO_OBJECT], "git status": [Result(0, "")]})
    lines = [shlex.join(c) for c in runner.commands[:7]]
    assert lines == [
        f"git -C {ROOT} rev-parse --verify HEAD",
        "gcloud storage cat gs://my-bucket/runs/pt_2_6b/launch/code.json",
        f"git -C {ROOT} status --porcelain --untracked-files=no",
        f"mkdir -p {work_dir}",
        f"git -C {ROOT} archive --format=tar.gz --prefix=codereason_jax/ "
        f"--output={work_dir}/code-1234567890ab.tar.gz {COMMIT}",
        f"gcloud storage cp {work_dir}/code-1234567890ab.tar.gz "
        "gs://my-bucket/runs/pt_2_6b/launch/code.tar.gz",
        f"gcloud storage cp {work_dir}/code-1234567890ab.json "
        "gs://my-bucket/runs/pt_2_6b/launch/code.json"]
    assert json.loads((work_dir / "code-1234567890ab.json").read_text()) == {
        "commit": COMMIT, "time": "2026-12-01T09:00:00Z", "who": "ana@laptop",
        "dirty_tree": False}
    assert kind(runner.commands[7]) == "ssh launch"


def test_first_launch_refuses_a_dirty_tree_unless_asked(no_subprocess, work_dir, capsys):
    answers = {"git rev-parse": [Result(0, COMMIT + "\n")],
               "storage cat code.json": [NO_OBJECT],
               "git status": [Result(0, " M codereason_jax/trainer.py\n")]}
    runner = launch_run(answers, expect=2)
    assert [kind(c) for c in runner.commands] == [*CODE_OK, "git status"]
    assert "error: the working tree has uncommitted changes" in capsys.readouterr().err
    runner = launch_run(answers, "--allow_dirty")
    assert "git archive" in [kind(c) for c in runner.commands]
    assert json.loads((work_dir / "code-1234567890ab.json").read_text())["dirty_tree"] is True


def test_resume_refuses_another_head_naming_both_commits(no_subprocess, work_dir, capsys):
    kinds, _, _ = resume({"git rev-parse": [Result(0, OTHER + "\n")]}, expect=2)
    assert kinds == CODE_OK  # before any TPU is described, let alone deleted
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: gs://my-bucket/runs/pt_2_6b runs commit 1234567890ab (stored "
        "2026-11-30T08:00:00Z by ana@laptop), but HEAD is fedcba098765. Check out 1234567890ab "
        "to go on with the run's code, or pass --allow_code_change to ship fedcba098765 to "
        "this run from now on.")


def test_allowed_code_change_stores_head_and_keeps_the_history(no_subprocess, work_dir):
    kinds, _, _ = resume({"git rev-parse": [Result(0, OTHER + "\n")],
                          "git status": [Result(0, "")],
                          "node describe": [state("PREEMPTED")]}, "--allow_code_change")
    assert kinds[:7] == [*CODE_OK, "git status", "mkdir", "git archive",
                         "storage cp code.tar.gz", "storage cp code.json"]
    stored = json.loads((work_dir / "code-fedcba098765.json").read_text())
    assert stored["commit"] == OTHER
    assert [r["commit"] for r in stored["previous"]] == [COMMIT]


def test_an_unreadable_code_record_is_never_a_first_launch(no_subprocess, work_dir, capsys):
    denied = Result(1, "", "ERROR: (gcloud.storage.cat) HTTPError 403: PERMISSION_DENIED")
    kinds, _, _ = resume({"storage cat code.json": [denied]}, expect=2)
    assert kinds == CODE_OK  # nothing packed, nothing uploaded, nothing described
    assert "cannot read gs://my-bucket/runs/pt_2_6b/launch/code.json (nothing was uploaded)" \
        in capsys.readouterr().err


# ----------------------------------------------------------------- unattended runs


UNATTENDED_CREATE = (
    f"gcloud alpha compute tpus tpu-vm create {NAME} --accelerator-type=v4-32 "
    "--version=tpu-ubuntu2204-base --spot --metadata-from-file=startup-script={dir}/startup-"
    f"{NAME}.sh --scopes=https://www.googleapis.com/auth/cloud-platform "
    "--autocheckpoint-enabled --zone=" + ZONE)


def test_unattended_create_stores_code_and_startup_script(no_subprocess, work_dir):
    runner = launch_run({**STORED}, "--unattended", "--spot", "--max_attempts=7",
                        command="create")
    lines = [shlex.join(c) for c in runner.commands]
    assert [kind(c) for c in runner.commands] == [*CODE_OK, "storage cp startup.sh",
                                                  "node create"]
    assert lines[2] == (f"gcloud storage cp {work_dir}/startup-{NAME}.sh "
                        "gs://my-bucket/runs/pt_2_6b/launch/startup.sh")
    assert lines[3] == UNATTENDED_CREATE.format(dir=work_dir)
    script = (work_dir / f"startup-{NAME}.sh").read_text()
    assert "MAX_ATTEMPTS=7 " in script and "EXPECTED_DEVICES=16 " in script
    assert "EXPECTED_LOCAL=4 " in script and "HOSTS=4\n" in script


def test_unattended_queued_create_and_generations_without_autocheckpoint(
        no_subprocess, work_dir):
    runner = launch_run({**STORED, "qr describe": [state("ACTIVE")]}, "--unattended",
                        "--queued", "--service_account=trainer@p.iam.gserviceaccount.com",
                        command="create")
    create = shlex.join(runner.commands[3])
    assert create == (
        f"gcloud alpha compute tpus queued-resources create {NAME} --node-id={NAME} "
        "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base "
        f"--metadata-from-file=startup-script={work_dir}/startup-{NAME}.sh "
        "--scopes=https://www.googleapis.com/auth/cloud-platform "
        "--service-account=trainer@p.iam.gserviceaccount.com --autocheckpoint-enabled "
        f"--zone={ZONE}")
    args = tpu.parse_args(["create", *BASE, "--accelerator_type=v5p-8", "--unattended",
                           "--gin_file=gin/models/pangu_350m.gin", "--run_dir=gs://b/r"])
    (argv,) = tpu.Launcher(args, FakeRunner({})).create_commands()
    assert argv[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]  # no alpha, no autocheckpoint
    assert "--autocheckpoint-enabled" not in argv


def test_unattended_resume_recreates_and_lets_the_vms_start(no_subprocess, work_dir):
    kinds, commands, _ = resume({"storage cat STOP": [NO_OBJECT],
                                 "node describe": [state("PREEMPTED")]}, "--unattended")
    assert kinds == [*CODE_OK, "storage cat STOP", "node describe", "node delete",
                     "storage cp startup.sh", "node create"]  # no ssh: the VMs start it
    assert shlex.join(commands[-1]) == UNATTENDED_CREATE.format(dir=work_dir).replace(
        " --spot", "")


def test_unattended_resume_of_a_finished_run_does_nothing(no_subprocess, capsys):
    kinds, _, _ = resume({"storage cat STOP": [Result(0, "finished: the final step is saved\n")],
                          "node describe": [state("PREEMPTED")]}, "--unattended")
    assert kinds == [*CODE_OK, "storage cat STOP"]
    assert "the run is over (finished: the final step is saved)" in capsys.readouterr().err


def test_readme_unattended_flow_dry_runs(capsys, no_subprocess, work_dir):
    """launch/README.md's unattended 2.6B run, as written there."""
    tpu_flags = [f"--name={NAME}", f"--zone={ZONE}", "--project=my-proj"]
    run = ["--accelerator_type=v4-32", "--gin_file=gin/scales/pangu_2_6b.gin",
           "--gin_file=gin/partitioning/v4_32.gin", "--gin_file=gin/cells/pretrain_code.gin",
           "--run_dir=gs://my-bucket/runs/pangu_2_6b/pretrain_code",
           "--tfds_dir=gs://my-bucket/tfds", "--gin.matrix_mixture.corpora='paper_tfds'"]
    lines = dry(capsys, "create", *tpu_flags, "--queued", "--spot", "--unattended", *run)
    assert [kind(shlex.split(line)) for line in lines] == [
        "git rev-parse", "storage cat code.json", "git status", "mkdir", "git archive",
        "storage cp code.tar.gz", "storage cp code.json", "storage cp startup.sh", "qr create",
        "qr describe"]
    assert lines[8].startswith("gcloud alpha compute tpus queued-resources create ")
    assert "--spot" in lines[8] and "--autocheckpoint-enabled" in lines[8]
    for worker in ("0", "all"):
        assert tpu.main(["logs", *tpu_flags, f"--run_dir={run[4][len('--run_dir='):]}",
                         f"--worker={worker}", "--dry_run"]) == 0
    assert tpu.main(["status", *tpu_flags, "--run_dir=gs://my-bucket/runs/x", "--dry_run"]) == 0


def test_create_takes_run_flags_only_when_unattended(capsys):
    assert tpu.main(["create", *BASE, *RUN_2_6B, "--dry_run"]) == 2
    assert "only with --unattended" in capsys.readouterr().err


# ------------------------------------------------------------------------ logs kept


def test_status_shows_an_unattended_runs_attempts(no_subprocess, capsys):
    lines = dry(capsys, "status", *BASE, "--run_dir=gs://b/r")
    assert lines[2:] == ["gcloud storage cat gs://b/r/launch/STOP",
                         "gcloud storage cat 'gs://b/r/launch/attempts/worker-*.tsv'"]
    runner = FakeRunner({"node describe": [GONE],  # the VMs are gone; the record is not
                         "storage cat STOP": [Result(0, "gave up: crashed (exit 1) on attempt "
                                                        "3 of 3\n")],
                         "storage cat worker-*.tsv": [Result(0, "3\tT\tend\t1\tgave up\n")]})
    assert tpu.main(["status", *BASE, "--run_dir=gs://b/r"], runner=runner) == 0
    assert capsys.readouterr().out == (f"{NAME}: NOT_FOUND\nrun: over: gave up: crashed (exit "
                                       "1) on attempt 3 of 3\n3\tT\tend\t1\tgave up\n")


def test_logs_from_the_bucket(no_subprocess, capsys):
    assert dry(capsys, "logs", *BASE, "--run_dir=gs://b/r", "--worker=3") == [
        "gcloud storage cat gs://b/r/launch/logs/worker-3.log"]
    assert dry(capsys, "logs", *BASE, "--run_dir=gs://b/r", "--worker=all", "--attempt=2") == [
        "gcloud storage cat 'gs://b/r/launch/logs/attempt-2/worker-*.log'"]
    runner = FakeRunner({"storage cat worker-0.log": [
        Result(0, "".join(f"step {i}\n" for i in range(10)))]})
    assert tpu.main(["logs", *BASE, "--run_dir=gs://b/r", "--lines=2"], runner=runner) == 0
    assert capsys.readouterr().out == "step 8\nstep 9\n"


# ------------------------------------------------------- the VMs' startup script


@pytest.mark.parametrize("status,stage,finished,attempt,action,reason", [
    (0, "train", True, 1, "over", "finished: the final step is saved"),
    (0, "train", True, 20, "over", "finished: the final step is saved"),
    (0, "train", False, 1, "relaunch",
     "stopped before the final step (a SIGTERM save); relaunching (attempt 1 of 3)"),
    (2, "train", False, 1, "over", startup.PERMANENT[2]),
    (3, "train", False, 1, "over", "failed: training diverged (exit 3)"),
    (1, "train", False, 2, "relaunch", "crashed (exit 1); relaunching (attempt 2 of 3)"),
    (4, "train", False, 1, "relaunch",
     "the run's storage refused a write (exit 4); relaunching (attempt 1 of 3)"),
    (137, "train", False, 1, "relaunch",
     "killed (exit 137, SIGKILL or out of memory); relaunching (attempt 1 of 3)"),
    (1, "train", False, 3, "over", "gave up: crashed (exit 1) on attempt 3 of 3"),
    (2, "setup", False, 1, "relaunch", "setup failed (exit 2); relaunching (attempt 1 of 3)"),
    (1, "setup", False, 3, "over", "gave up: setup failed (exit 1) on attempt 3 of 3"),
])
def test_decide_which_exits_relaunch(status, stage, finished, attempt, action, reason):
    assert startup.decide(status, stage, finished, attempt, 3) == startup.Decision(action, reason)


def test_decide_on_a_stopping_vm_leaves_it_to_the_next_boot(capsys):
    assert startup.decide(0, "train", False, 1, 3, terminating=True) == startup.Decision(
        "exit", "stopped before the final step (a SIGTERM save); the VM is stopping, its next "
        "boot resumes")
    assert startup.decide(0, "train", True, 1, 3, terminating=True).action == "over"
    assert startup.main(["decide", "--status=3", "--stage=train", "--attempt=1",
                         "--max_attempts=3"]) == 0
    assert capsys.readouterr().out == "over\tfailed: training diverged (exit 3)\n"


def rendered(**overrides):
    values = dict(run_dir="gs://b/r un", train_command=["-m", "codereason_jax.train",
                                                       "--gin.X.y='a b'", "--run_dir=gs://b/r"],
                  env=['CODEREASON_DATA_DIR="$DATA"'], devices=16, local_devices=4, hosts=4,
                  max_attempts=5)
    values.update(overrides)
    return startup.render(**values)


def test_startup_script_content():
    script = rendered(data_from="gs://b/data")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "RUN_DIR='gs://b/r un'                 # the trainer's run directory " \
        "(checkpoints, metrics)" in lines
    assert any(line.startswith("LAUNCH='gs://b/r un/launch' ") for line in lines)
    assert any(line.startswith("DATA_FROM=gs://b/data ") for line in lines)
    assert any(line.startswith("TPU_LOCK=/tmp/libtpu_lockfile") for line in lines)
    assert ('  (cd "$SRC" && env CODEREASON_DATA_DIR="$DATA" "$VENV/bin/python" -m '
            "codereason_jax.train '--gin.X.y='\"'\"'a b'\"'\"'' --run_dir=gs://b/r) 2>&1 "
            '| tee -a "$log"') in lines
    assert "@" not in script.replace("$@", "").replace('"$@"', "")
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    with pytest.raises(ValueError, match="at least 1"):
        rendered(max_attempts=0)


FAKE_GCLOUD = r"""#!/bin/sh
# gcloud storage cp/cat/ls/rsync over a local folder standing for gs://
echo "$*" >> "$FAKE_GCS/calls"
map() { case "$1" in gs://*) echo "$FAKE_GCS/${1#gs://}";; *) echo "$1";; esac; }
absent() { echo "ERROR: (gcloud.storage.$1) The following URLs matched no objects or files:" >&2
           exit 1; }
case "$2" in
  cp) src=$(map "$3"); dst=$(map "$4"); [ -f "$src" ] || absent cp
      mkdir -p "$(dirname "$dst")"; cp "$src" "$dst" ;;
  cat) src=$(map "$3"); [ -f "$src" ] || absent cat; cat "$src" ;;
  ls) [ -e "$(map "$3")" ] || absent ls; echo "$3" ;;
  *) exit 2 ;;
esac
"""

# The venv's python on the VM: the TPU check passes (or fails with FAKE_TPU_BAD=1); the trainer
# takes its exit status and last line from the next line of $FAKE_TRAIN_PLAN.
FAKE_VENV_PYTHON = r"""#!/bin/sh
if [ "$2" = launch.tpu_check ]; then
  [ -z "$FAKE_TPU_BAD" ] || { echo "error: JAX sees 12 devices" >&2; exit 2; }
  echo "worker 0: jax.device_count() = 16"; exit 0
fi
printf '%s
' "$*" >> "$FAKE_GCS/trainer_argv"
plan=$(head -n 1 "$FAKE_TRAIN_PLAN"); sed -i 1d "$FAKE_TRAIN_PLAN"
status=${plan%% *}; how=${plan#* }
echo "step 1 loss 9.0"
case "$how" in
  sigterm) echo started > "$FAKE_STARTED"; read go < "$FAKE_GO"
           echo "done: step 40, last finite loss 3.0000 (preempted; rerun to resume)" ;;
  finished) echo "done: step 100, last finite loss 2.0000" ;;
  preempted) echo "done: step 40, last finite loss 3.0000 (preempted; rerun to resume)" ;;
esac
exit "$status"
"""


class FakeVM:
    """One worker of an unattended run: the startup script under bash with gcloud, curl and
    the venv's python faked, a folder standing for the bucket, and no waiting."""

    def __init__(self, root, max_attempts=5):
        self.root, self.gcs, self.base = root, root / "gcs", root / "base"
        self.launch = self.gcs / "b" / "r" / "launch"
        self.launch.mkdir(parents=True)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name, text in (("gcloud", FAKE_GCLOUD), ("curl", "#!/bin/sh\necho 0\n")):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        # The run's stored code: what the startup script needs of the repository.
        code = root / "code" / "codereason_jax"
        shutil.copytree(os.path.join(ROOT, "launch"), code / "launch",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (code / "requirements").mkdir()
        shutil.copy(os.path.join(ROOT, "requirements", "constraints.txt"), code / "requirements")
        subprocess.run(["tar", "-czf", str(self.launch / "code.tar.gz"), "-C", str(root / "code"),
                        "codereason_jax"], check=True)
        # The environment built at an earlier boot (the wheel set is not under test here).
        key = hashlib.sha256((code / "requirements" / "constraints.txt").read_bytes())
        venv = self.base / "venv" / "bin"
        venv.mkdir(parents=True)
        (self.base / "venv" / f".env-{key.hexdigest()[:12]}").write_text("")
        (venv / "python").write_text(FAKE_VENV_PYTHON)
        (venv / "python").chmod(0o755)
        self.plan = root / "plan"
        self.lock = root / "libtpu_lockfile"
        self.script = root / "startup.sh"
        self.script.write_text(startup.render(
            run_dir="gs://b/r", train_command=["-m", "codereason_jax.train", "--run_dir=gs://b/r"],
            env=['CODEREASON_DATA_DIR="$DATA"'], devices=16, local_devices=4, hosts=4,
            max_attempts=max_attempts, python="python3", tpu_lock=str(self.lock)))
        self.env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_GCS=str(self.gcs),
                        FAKE_TRAIN_PLAN=str(self.plan), CODEREASON_BASE=str(self.base),
                        CODEREASON_RELAUNCH_PAUSE_S="0", CODEREASON_UPLOAD_EVERY_S="3600")

    def boot(self, *plan, **env):
        """Run the startup script once, as a (re)booted VM does; ``plan``: the trainer's
        "STATUS HOW" per attempt."""
        self.plan.write_text("".join(line + "\n" for line in plan))
        return subprocess.run(["bash", str(self.script)], env={**self.env, **env},
                              capture_output=True, text=True, timeout=600)

    def attempts(self):
        path = self.launch / "attempts" / "worker-0.tsv"
        return [line.split("\t") for line in path.read_text().splitlines()]

    def events(self):
        return [(a, event, status, reason) for a, _time, event, status, reason in self.attempts()]

    def trainer_runs(self):
        path = self.gcs / "trainer_argv"
        return path.read_text().splitlines() if path.exists() else []


needs_bash = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("tar")),
                                reason="needs bash and tar")


@needs_bash
def test_unattended_lifecycle_crash_preemption_finish_and_no_relaunch(tmp_path):
    vm = FakeVM(tmp_path, max_attempts=5)
    booted = vm.boot("1 crash", "0 preempted", "0 finished")
    assert booted.returncode == 0, booted.stdout + booted.stderr
    assert vm.events() == [
        ("1", "start", "-", "boot or relaunch"),
        ("1", "end", "1", "crashed (exit 1); relaunching (attempt 1 of 5)"),
        ("2", "start", "-", "boot or relaunch"),
        ("2", "end", "0",
         "stopped before the final step (a SIGTERM save); relaunching (attempt 2 of 5)"),
        ("3", "start", "-", "boot or relaunch"),
        ("3", "end", "0", "finished: the final step is saved")]
    assert vm.trainer_runs() == ["-m codereason_jax.train --run_dir=gs://b/r"] * 3
    assert (vm.launch / "STOP").read_text() == "finished: the final step is saved\n"
    # the logs outlive the VM: the current attempt's, and each attempt's at its end
    assert (vm.launch / "logs" / "worker-0.log").read_text().endswith(
        "done: step 100, last finite loss 2.0000\n")
    assert "preempted" in (vm.launch / "logs" / "attempt-2" / "worker-0.log").read_text()
    # a finished run is not started again by the next boot
    again = vm.boot("0 finished")
    assert again.returncode == 0 and "the run is over (finished" in again.stdout
    assert len(vm.trainer_runs()) == 3 and len(vm.events()) == 6


@needs_bash
def test_unattended_vm_shutdown_saves_and_leaves_the_next_attempt_to_the_next_boot(tmp_path):
    """Preemption: the VM stops, SIGTERM reaches the startup script and the trainer, which
    saves and exits 0 before the final step; the script records it and does not relaunch."""
    vm = FakeVM(tmp_path)
    started, go = tmp_path / "started", tmp_path / "go"
    os.mkfifo(started)
    os.mkfifo(go)
    vm.plan.write_text("0 sigterm\n0 finished\n")
    script = subprocess.Popen(["bash", str(vm.script)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**vm.env, "FAKE_STARTED": str(started), "FAKE_GO": str(go)})
    try:
        with open(started) as f:  # the trainer runs: an event, not a deadline
            assert f.readline() == "started\n"
        script.send_signal(signal.SIGTERM)  # the VM is going down
        with open(go, "w") as f:  # ...and the trainer, told as well, saves and exits 0
            f.write("go\n")
        out, _ = script.communicate(timeout=600)
    finally:
        if script.poll() is None:
            script.kill()
    assert script.returncode == 0, out
    assert vm.events() == [
        ("1", "start", "-", "boot or relaunch"),
        ("1", "end", "0", "stopped before the final step (a SIGTERM save); the VM is "
         "stopping, its next boot resumes")]
    assert not (vm.launch / "STOP").exists() and len(vm.trainer_runs()) == 1
    assert "preempted" in (vm.launch / "logs" / "worker-0.log").read_text()
    booted = vm.boot("0 finished")  # the recreated VM's boot: attempt 2 finishes the run
    assert booted.returncode == 0, booted.stdout
    assert vm.events()[-1] == ("2", "end", "0", "finished: the final step is saved")


@needs_bash
def test_unattended_crash_loop_stops_at_the_retry_cap(tmp_path):
    vm = FakeVM(tmp_path, max_attempts=3)
    booted = vm.boot("1 crash", "1 crash", "1 crash", "1 crash")
    assert booted.returncode == 0, booted.stdout + booted.stderr
    assert [e[1:3] for e in vm.events()] == [("start", "-"), ("end", "1")] * 3
    assert vm.events()[-1][3] == "gave up: crashed (exit 1) on attempt 3 of 3"
    assert (vm.launch / "STOP").read_text() == "gave up: crashed (exit 1) on attempt 3 of 3\n"
    assert len(vm.trainer_runs()) == 3


@needs_bash
def test_unattended_reboots_count_against_the_cap(tmp_path):
    """A VM that dies mid-attempt records no end; its starts still count at the next boot."""
    vm = FakeVM(tmp_path, max_attempts=2)
    (vm.launch / "attempts").mkdir()
    (vm.launch / "attempts" / "worker-0.tsv").write_text(
        "1\t2026-12-01T00:00:00Z\tstart\t-\tboot or relaunch\n"
        "2\t2026-12-01T01:00:00Z\tstart\t-\tboot or relaunch\n")
    booted = vm.boot("0 finished")
    assert booted.returncode == 1
    assert vm.events()[-1] == ("2", "stop", "-", "gave up: 2 attempts on this worker")
    assert vm.trainer_runs() == []
    assert (vm.launch / "STOP").read_text() == "gave up after 2 attempts (worker 0)\n"


@needs_bash
@pytest.mark.parametrize("status,reason", [
    ("2", startup.PERMANENT[2]), ("3", "failed: training diverged (exit 3)")])
def test_unattended_permanent_failures_are_not_relaunched(tmp_path, status, reason):
    vm = FakeVM(tmp_path)
    assert vm.boot(f"{status} failed", "0 finished").returncode == 0
    assert vm.events() == [("1", "start", "-", "boot or relaunch"), ("1", "end", status, reason)]
    assert (vm.launch / "STOP").read_text() == reason + "\n"


@needs_bash
def test_unattended_tpu_check_failure_fails_the_attempt_before_training(tmp_path):
    vm = FakeVM(tmp_path, max_attempts=1)
    booted = vm.boot("0 finished", FAKE_TPU_BAD="1")
    assert "error: JAX sees 12 devices" in booted.stdout
    assert vm.events()[-1] == ("1", "end", "1", "gave up: setup failed (exit 1) on attempt 1 "
                               "of 1")
    assert vm.trainer_runs() == []


@pytest.mark.skipif(not (shutil.which("bash") and (shutil.which("lsof") or shutil.which("fuser"))),
                    reason="needs bash and lsof or fuser")
def test_stale_tpu_lock_is_removed_and_a_held_one_kept(tmp_path):
    lock = tmp_path / "libtpu_lockfile"
    script = tmp_path / "startup.sh"
    script.write_text(rendered(tpu_lock=str(lock)))
    env = dict(os.environ, CODEREASON_STARTUP_LIBRARY="1", CODEREASON_BASE=str(tmp_path))

    def clear():
        return subprocess.run(["bash", "-c", f'source {shlex.quote(str(script))}; WORKER=0; '
                               f'mkdir -p "$LOGS"; clear_stale_lock'], env=env,
                              capture_output=True, text=True, timeout=60)

    lock.write_text("")
    assert "removed the stale TPU lock" in clear().stdout and not lock.exists()
    lock.write_text("")
    holder = subprocess.Popen(["sh", "-c", 'exec 3<"$1"; echo held; read x', "sh", str(lock)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # the lock is open: an event, no sleep
        result = clear()
        assert f"held by {holder.pid}" in result.stdout and lock.exists()
    finally:
        holder.communicate("done\n", timeout=60)


def test_tpu_check_compares_the_counts():
    assert tpu_check.mismatch(16, 4, 16, 4) is None
    assert tpu_check.mismatch(16, 4, 12, 4) == (
        "JAX sees 12 devices (4 on this worker); the slice should have 16 (4 per worker). "
        "Check the TPU runtime (`sudo journalctl -u tpu-runtime`) or recreate the slice.")


# ------------------------------------------------- the remote scripts, run by a local shell


@pytest.mark.skipif(not (shutil.which("sh") and shutil.which("setsid")), reason="needs sh, setsid")
def test_remote_scripts_run_stop_and_report_in_a_posix_shell(tmp_path):
    """The launch/state/stop scripts under `sh`, with a fake venv python: quoting survives,
    a second launch is refused, SIGTERM reaches the trainer."""
    home = tmp_path / "home"
    (home / "codereason_jax").mkdir(parents=True)
    fake = home / "codereason_venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    # The fake trainer writes what it got (argv last, renamed into place), says so on the pipe
    # named by READY_FD if it has one, then lives until SIGTERM or until the test process ends.
    fake.write_text('#!/bin/sh\n'
                    'for a in "$@"; do printf "%s\\n" "$a"; done > "$HOME/argv.part"\n'
                    'echo "$CODEREASON_DATA_DIR" > "$HOME/data_dir"\n'
                    'mv "$HOME/argv.part" "$HOME/argv"\n'
                    'if [ -n "$READY_FD" ]; then echo ready > "/dev/fd/$READY_FD"; fi\n'
                    "trap 'echo SIGTERM; exit 0' TERM\n"
                    'while kill -0 "$TEST_PID" 2>/dev/null; do sleep 0.1; done\n')
    fake.chmod(0o755)
    args = tpu.parse_args(["run", *BASE, *RUN_2_6B, "--gin.PanGuConfig.dtype='bfloat16'"])
    args.grace_s = 20  # a `stop` option; the scripts share one Launcher here
    launcher = tpu.Launcher(args, tpu.Runner(dry_run=True))
    env = dict(os.environ, HOME=str(home), TEST_PID=str(os.getpid()))

    def sh(script, ready_fd=None):
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                              env=dict(env, READY_FD=str(ready_fd)) if ready_fd else env,
                              pass_fds=(ready_fd,) if ready_fd else ())

    def state_script():
        return remote_script(shlex.join(launcher.train_state_command()))

    assert "stopped" in sh(state_script()).stdout
    ready, ready_w = os.pipe()
    try:
        started = sh(launcher.launch_script(), ready_fd=ready_w)
    finally:
        os.close(ready_w)  # now only the fake trainer holds the write end
    try:
        assert started.returncode == 0, started.stderr
        # An event, not a deadline: "ready", or end of file if the fake ended without it.
        assert os.read(ready, 64) == b"ready\n"
    finally:
        os.close(ready)
    try:
        assert (home / "argv").read_text().splitlines() == [
            "-m", "codereason_jax.train", "--gin_file=gin/models/pangu_2_6b.gin",
            "--gin_file=gin/partitioning/v4_32.gin", "--multihost=auto",
            "--run_dir=gs://my-bucket/runs/pt_2_6b", "--gin.PanGuConfig.dtype='bfloat16'"]
        assert (home / "data_dir").read_text().strip() == str(home / "codereason_data")
        assert f"{tpu.STATE_MARK} running" in sh(state_script()).stdout
        again = sh(launcher.launch_script())
        assert again.returncode == 1 and "already running" in again.stderr
        stopped = sh(launcher.stop_script())
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        assert "stopped" in sh(state_script()).stdout
        log = home / "codereason_logs" / "train.log"
        assert "SIGTERM" in log.read_text()
        assert sh(launcher.launch_script()).returncode == 0  # the old log is kept aside
        assert len(list((home / "codereason_logs").glob("train.log.*"))) == 1
    finally:
        sh(launcher.stop_script())


# ----------------------------------------------------------------------- the TPU table


@pytest.mark.parametrize("name,chips,hosts", [
    ("v4-8", 4, 1), ("v4-16", 8, 2), ("v4-32", 16, 4), ("v4-64", 32, 8), ("v4-128", 64, 16),
    ("v5litepod-4", 4, 1), ("v5litepod-8", 8, 1), ("v5litepod-16", 16, 4),
    ("v5litepod-256", 256, 64), ("v5p-8", 4, 1), ("v5p-128", 64, 16), ("v6e-8", 8, 1),
    ("v6e-16", 16, 4), ("v6e-256", 256, 64),
])
def test_tpu_table(name, chips, hosts):
    entry = topology.tpu_type(name)
    assert (entry.chips, entry.hosts, entry.devices) == (chips, hosts, chips)


def test_gin_reading_follows_includes_and_bindings():
    values = topology.gin_bindings(["gin/models/pangu_2_6b.gin", "gin/partitioning/v4_32.gin"],
                                   ["TrainConfig.batch_size = 64"], ROOT)
    assert values["PanGuConfig.vocab_size"] == 40000  # from the included pangu_base.gin
    assert values["TrainConfig.mesh_shape"] == (1, 16, 1)
    assert values["TrainConfig.batch_size"] == 64


# gin's own parser reads the files: what a line-based reading got wrong is read as gin reads it.

V4_32 = topology.tpu_type("v4-32")


def gin_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_gin_reading_keeps_a_hash_inside_a_quoted_value(tmp_path):
    path = gin_file(tmp_path, "run.gin", (
        "TrainConfig.mixture = 'code#1'  # a comment after the value\n"
        "TrainConfig.tags = ['a#]', 'b']\n"
        "TrainConfig.mesh_shape = (1, 16, 1)\n"))
    values = topology.gin_bindings([path], [], ROOT)
    assert values["TrainConfig.mixture"] == "code#1"
    assert values["TrainConfig.tags"] == ["a#]", "b"]
    assert "mesh (data, fsdp, model) = (1, 16, 1)" in topology.check_run_fits_slice(V4_32, values)


def test_gin_reading_ignores_brackets_inside_strings(tmp_path):
    path = gin_file(tmp_path, "run.gin", (
        "TrainConfig.mixture = 'mix(ture'\n"
        "TrainConfig.mesh_shape = (2, 8, 1)\n"
        'PanGuConfig.dtype = "])"\n'
        "TrainConfig.batch_size = 32\n"))
    values = topology.gin_bindings([path], [], ROOT)
    assert (values["TrainConfig.mixture"], values["PanGuConfig.dtype"]) == ("mix(ture", "])")
    plan = topology.check_run_fits_slice(V4_32, values)
    assert "mesh (data, fsdp, model) = (2, 8, 1)" in plan  # not the default (-1, 1, 1)
    assert "global batch 32: 8 rows per host, 2 per data shard" in plan


def test_gin_reading_follows_includes_macros_and_module_names(tmp_path):
    base = gin_file(tmp_path, "base.gin", "FSDP = 8\nBATCH = 32\n"
                    "TrainConfig.mesh_shape = (2, %FSDP, 1)\n")
    run = gin_file(tmp_path, "run.gin", (
        "include 'gin/partitioning/v4_32.gin'  # from the repository root, as gin does\n"
        f"include '{base}'\n"
        "codereason_jax.trainer.TrainConfig.batch_size = %BATCH\n"))
    values = topology.gin_bindings([run], [], ROOT)
    assert values["PanGuConfig.remat_policy"] == "full"  # from the first include
    assert topology._literal(values["TrainConfig.mesh_shape"], values) == (2, 8, 1)
    plan = topology.check_run_fits_slice(V4_32, values)  # the later include wins
    assert "mesh (data, fsdp, model) = (2, 8, 1)" in plan
    assert "global batch 32" in plan[-1]
    missing = gin_file(tmp_path, "missing.gin", "include 'gin/nope.gin'\n")
    with pytest.raises(topology.LaunchError, match=r"missing.gin:1: include 'gin/nope.gin'"):
        topology.gin_bindings([missing], [], ROOT)


def test_gin_reading_agrees_with_gin_itself(tmp_path):
    """Values with `#`, brackets and parentheses inside strings: the launcher's reading and
    gin's own configuration give the same values."""
    import gin

    text = ("LaunchProbe.mixture = 'code#1'  # a comment\n"
            "LaunchProbe.tags = ['a#]', '(b', \"c)\", '[d']\n"
            "LaunchProbe.nested = {'k(': ('v]', 2), 'x#': [1, '#']}\n"
            "LaunchProbe.mesh_shape = (2, 8, 1)  # (not 1, 16, 1)\n"
            "LaunchProbe.note = \"it's ) and ] # too\"\n")
    path = gin_file(tmp_path, "probe.gin", text)
    ours = topology.gin_bindings([path], [], ROOT)

    def probe(mixture=None, tags=None, nested=None, mesh_shape=None, note=None):
        return dict(mixture=mixture, tags=tags, nested=nested, mesh_shape=mesh_shape, note=note)

    gin.clear_config()
    configurable = gin.external_configurable(probe, name="LaunchProbe")
    try:
        gin.parse_config_file(path)
        theirs = configurable()
    finally:
        gin.clear_config()
    assert {key.split(".", 1)[1]: value for key, value in ours.items()} == theirs
    assert theirs["mesh_shape"] == (2, 8, 1) and theirs["note"] == "it's ) and ] # too"


@pytest.mark.parametrize("text,message", [
    ("TrainConfig.mesh_shape = (1, 16, 1\n", "unclosed bracket or quote"),
    ("TrainConfig.mesh_shape (1, 16, 1)\n", r"bad.gin:1: gin syntax error"),
    ("PanGuConfig.dtype = 'bfloat16\nTrainConfig.mesh_shape = (1, 16, 1)\n",
     r"bad.gin:1: gin syntax error"),
    ("TrainConfig.batch_size = 64\nTrainConfig.mesh_shape = (1, 16, 1))\n",
     r"bad.gin:2: gin syntax error"),
])
def test_malformed_gin_file_is_an_error_not_a_default_mesh(tmp_path, text, message):
    path = gin_file(tmp_path, "bad.gin", text)
    with pytest.raises(topology.LaunchError, match=message):
        topology.gin_bindings([path], [], ROOT)


def test_unreadable_gin_file_or_missing_gin_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "latin1.gin"
    path.write_bytes(b"TrainConfig.mixture = '\xe9'\n")  # not UTF-8
    with pytest.raises(topology.LaunchError, match="cannot read gin file"):
        topology.gin_bindings([str(path)], [], ROOT)
    monkeypatch.setitem(sys.modules, "gin", None)  # `import gin` raises ImportError
    with pytest.raises(topology.LaunchError, match="needs gin-config"):
        topology.gin_bindings(["gin/partitioning/v4_32.gin"], [], ROOT)


def test_a_mesh_that_is_not_a_literal_is_refused(tmp_path):
    path = gin_file(tmp_path, "run.gin", "TrainConfig.mesh_shape = @make_mesh()\n")
    with pytest.raises(topology.LaunchError, match=r"= @make_mesh\(\) must be three sizes"):
        topology.check_run_fits_slice(V4_32, topology.gin_bindings([path], [], ROOT))


# ------------------------------------------------------------------- partitioning files

PARTITIONINGS = [  # (partitioning file, scale file, slice, golden shardings of that mesh)
    ("gin/partitioning/v4_32.gin", "gin/scales/pangu_2_6b.gin", "v4-32",
     "shardings_pangu_2_6b_1x16x1.json"),
    ("gin/partitioning/v4_64.gin", "gin/scales/pangu_13b.gin", "v4-64",
     "shardings_pangu_13b_1x32x1.json"),
]


@pytest.mark.parametrize("partitioning,scale,slice_type,golden", PARTITIONINGS)
def test_partitioning_gin_builds_with_its_model_and_a_cell(partitioning, scale, slice_type,
                                                           golden):
    """The README's runs: scale + partitioning + cell (+ the TFDS corpora binding) build the
    trainer's configs, on a mesh that uses exactly the slice's devices."""
    import gin

    from codereason_jax import gin_utils
    from codereason_jax.trainer import TrainConfig

    files = [scale, partitioning, "gin/cells/pretrain_code.gin"]
    bindings = ["matrix_mixture.corpora = 'paper_tfds'"]
    gin_utils.register(TrainConfig)
    try:
        gin_utils.parse(files, bindings)
        model, train = gin_utils.model_config(), gin_utils.build(TrainConfig)
    finally:
        gin.clear_config()
    assert (model.dtype, model.scan_layers, model.remat_policy) == ("bfloat16", True, "full")
    assert (train.batch_size, train.sequence_length) == (64, 1024)  # what aot_check checked
    assert train.mixture == "pretrain_code_paper_tfds"
    entry = topology.tpu_type(slice_type)
    assert math.prod(train.mesh_shape) == entry.devices
    # the launcher's light reading of gin sees the same mesh and batch, and accepts them
    values = topology.gin_bindings(files, bindings, ROOT)
    assert topology._literal(values["TrainConfig.mesh_shape"], values) == train.mesh_shape
    assert topology._literal(values["TrainConfig.batch_size"], values) == 64  # via %PRETRAIN_BATCH
    plan = topology.check_run_fits_slice(entry, values)
    assert f"mesh (data, fsdp, model) = {train.mesh_shape}" in plan
    assert f"global batch 64: {64 // entry.hosts} rows per host" in plan[-1]
    # the golden per-parameter shardings pin this exact (model, mesh) pair
    assert "x".join(map(str, train.mesh_shape)) in golden
    assert os.path.exists(os.path.join(ROOT, "tests", "golden", golden))


def test_readme_flow_dry_runs(capsys, no_subprocess):
    """launch/README.md's 13B run on a v4-64, as written there."""
    run = ["--accelerator_type=v4-64", "--gin_file=gin/scales/pangu_13b.gin",
           "--gin_file=gin/partitioning/v4_64.gin", "--gin_file=gin/cells/pretrain_code.gin",
           "--run_dir=gs://my-bucket/runs/pretrain_code_13b", "--tfds_dir=gs://my-bucket/tfds",
           "--gin.matrix_mixture.corpora='paper_tfds'"]
    lines, plan = dry_full(capsys, "run", *BASE, *run)
    assert "8 host(s) x 4 devices" in plan and "global batch 64: 8 rows per host" in plan
    script = remote_script(lines[-2])
    assert ("env CODEREASON_DATA_DIR=$HOME/codereason_data CODEREASON_TFDS_DIR=gs://my-bucket/tfds "
            "$HOME/codereason_venv/bin/python -m codereason_jax.train "
            "--gin_file=gin/scales/pangu_13b.gin --gin_file=gin/partitioning/v4_64.gin "
            "--gin_file=gin/cells/pretrain_code.gin --multihost=auto "
            "--run_dir=gs://my-bucket/runs/pretrain_code_13b "
            + shlex.quote("--gin.matrix_mixture.corpora='paper_tfds'")) in script


def _aot(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)  # aot_check sets the device count itself
    return subprocess.run([sys.executable, "-m", "codereason_jax.aot_check",
                           "--gin_file=gin/models/pangu_tiny.gin",
                           "--gin_file=gin/partitioning/v4_32.gin", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_aot_check_refuses_a_mesh_other_than_the_partitioning_files():
    wrong = _aot("--mesh=2x8x1")
    assert wrong.returncode == 2
    assert "differs from TrainConfig.mesh_shape = (1, 16, 1)" in wrong.stderr


@pytest.mark.slow  # compiles a step for 16 emulated devices (about 30 s on 2 cores)
def test_aot_check_compiles_with_a_partitioning_file():
    fits = _aot("--mesh=1x16x1", "--batch_size=16", "--sequence_length=64", "--hbm_gib=1")
    assert fits.returncode == 0, fits.stderr[-2000:]
    assert "over 16 emulated devices" in fits.stdout and "remat full, scan True" in fits.stdout
