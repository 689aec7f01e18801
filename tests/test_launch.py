"""Cloud TPU launcher: exact gcloud commands under --dry_run (nothing runs), the resume logic
against scripted `describe` answers, the remote scripts executed by a local shell, the TPU table,
and the partitioning gin files of the README flows."""

import math
import os
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `launch` is a top-level package of the repository, not installed
    sys.path.insert(0, ROOT)

from launch import topology, tpu  # noqa: E402
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
    assert len(lines) == 2
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
    assert len(lines) == 1
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
    (["delete", *BASE, "--gin.X.y=1"], "only apply to run and resume"),
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
    if argv[0] != "gcloud":
        return argv[0] if argv[0] != "git" else "git archive"
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


def workers(*states):
    return Result(0, "".join(f"{tpu.STATE_MARK} {s} t1v-n-{i}-w-{i}\n"
                             for i, s in enumerate(states)))


def resume(answers, *extra, expect=0):
    runner, naps = FakeRunner(answers), []
    code = tpu.main(["resume", *BASE, *RUN_2_6B, "--no_follow", *extra], runner=runner,
                    sleep=naps.append)
    assert code == expect
    return [kind(c) for c in runner.commands], runner.commands, naps


SETUP = ["mkdir", "git archive", "node scp", "ssh setup"]


def test_resume_ready_and_running_everywhere_does_nothing(no_subprocess):
    kinds, _, _ = resume({"node describe": [state("READY")],
                          "ssh train-state": [workers(*["running"] * 4)]})
    assert kinds == ["node describe", "ssh train-state"]


def test_resume_ready_but_stopped_relaunches_without_setup(no_subprocess):
    kinds, commands, _ = resume({"node describe": [state("READY")],
                                 "ssh train-state": [workers(*["stopped"] * 4)]})
    assert kinds == ["node describe", "ssh train-state", "ssh launch"]
    assert TRAIN_2_6B in remote_script(shlex.join(commands[-1]))


def test_resume_partly_running_stops_everything_first(no_subprocess):
    kinds, _, _ = resume({"node describe": [state("READY")],
                          "ssh train-state": [workers("running", "stopped", "running",
                                                      "running")]})
    assert kinds == ["node describe", "ssh train-state", "ssh stop", "ssh launch"]


def test_resume_preempted_recreates_sets_up_and_relaunches(no_subprocess):
    kinds, commands, _ = resume({"node describe": [state("PREEMPTED")]})
    assert kinds == ["node describe", "node delete", "node create", *SETUP, "ssh launch"]
    assert shlex.join(commands[1]) == (f"gcloud compute tpus tpu-vm delete {NAME} --quiet "
                                       f"--zone={ZONE}")
    assert shlex.join(commands[2]) == (
        f"gcloud compute tpus tpu-vm create {NAME} --accelerator-type=v4-32 "
        f"--version=tpu-ubuntu2204-base --zone={ZONE}")
    launch = remote_script(shlex.join(commands[-1]))
    assert "--run_dir=gs://my-bucket/runs/pt_2_6b" in launch  # the SAME run directory


def test_resume_not_found_creates(no_subprocess):
    kinds, _, _ = resume({"node describe": [GONE]})
    assert kinds == ["node describe", "node create", *SETUP, "ssh launch"]


def test_resume_waits_while_the_node_is_busy(no_subprocess):
    kinds, _, naps = resume({"node describe": [state("REPAIRING"), state("REPAIRING"),
                                               state("READY")],
                             "ssh train-state": [workers(*["stopped"] * 4)]}, "--poll_s=5")
    assert kinds == ["node describe"] * 3 + ["ssh train-state", "ssh launch"]
    assert naps == [5.0]


def test_resume_queued_suspended_deletes_waits_recreates(no_subprocess):
    kinds, commands, naps = resume(
        {"qr describe": [state("SUSPENDED"), state("DELETING"), GONE,
                         state("WAITING_FOR_RESOURCES"), state("PROVISIONING"),
                         state("ACTIVE")]},
        "--queued", "--spot", "--poll_s=60")
    assert kinds == ["qr describe", "qr delete", "qr describe", "qr describe", "qr create",
                     "qr describe", "qr describe", "qr describe", *SETUP, "ssh launch"]
    assert shlex.join(commands[1]) == (f"gcloud compute tpus queued-resources delete {NAME} "
                                       f"--force --quiet --zone={ZONE}")
    assert "--spot" in commands[4] and f"--node-id={NAME}" in commands[4]
    assert naps == [60.0] * 3


def test_resume_queued_active_with_preempted_node_recreates(no_subprocess):
    kinds, _, _ = resume({"qr describe": [state("ACTIVE"), GONE, state("ACTIVE")],
                          "node describe": [state("PREEMPTED")]}, "--queued")
    assert kinds == ["qr describe", "node describe", "qr delete", "qr describe", "qr create",
                     "qr describe", *SETUP, "ssh launch"]


def test_resume_describe_failure_is_reported(no_subprocess, capsys):
    denied = Result(1, "", "ERROR: PERMISSION_DENIED: tpu.nodes.get")
    kinds, _, _ = resume({"node describe": [denied]}, expect=2)
    assert kinds == ["node describe"]
    assert "PERMISSION_DENIED" in capsys.readouterr().err


def test_resume_dry_run_prints_the_recovery_sequence(capsys, no_subprocess):
    lines = dry(capsys, "resume", *BASE, *RUN_2_6B, "--no_follow")  # assumes PREEMPTED
    assert [kind(shlex.split(line)) for line in lines] == [
        "node describe", "node delete", "node create", *SETUP, "ssh launch"]
    lines = dry(capsys, "resume", *BASE, *RUN_2_6B, "--no_follow", "--assume_state=READY")
    assert [kind(shlex.split(line)) for line in lines] == [
        "node describe", "ssh train-state", "ssh launch"]


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
    script = remote_script(lines[0])
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
                          capture_output=True, text=True, timeout=300)


def test_aot_check_refuses_a_mesh_other_than_the_partitioning_files():
    wrong = _aot("--mesh=2x8x1")
    assert wrong.returncode == 2
    assert "differs from TrainConfig.mesh_shape = (1, 16, 1)" in wrong.stderr


@pytest.mark.slow  # compiles a step for 16 emulated devices (about 30 s on 2 cores)
def test_aot_check_compiles_with_a_partitioning_file():
    fits = _aot("--mesh=1x16x1", "--batch_size=16", "--sequence_length=64", "--hbm_gib=1")
    assert fits.returncode == 0, fits.stderr[-2000:]
    assert "over 16 emulated devices" in fits.stdout and "remat full, scan True" in fits.stdout
