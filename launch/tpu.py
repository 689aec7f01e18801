"""Create, set up, run, resume and delete a Cloud TPU training job.

    python -m launch.tpu create --name=cr-2b6 --zone=us-central2-b --accelerator_type=v4-32
    python -m launch.tpu setup  --name=cr-2b6 --zone=us-central2-b
    python -m launch.tpu run    --name=cr-2b6 --zone=us-central2-b --accelerator_type=v4-32 \\
        --gin_file=gin/models/pangu_2_6b.gin --gin_file=gin/partitioning/v4_32.gin \\
        --run_dir=gs://BUCKET/runs/pretrain_2_6b [--gin.TrainConfig.num_steps=1000]
    python -m launch.tpu resume ... (the create + run flags)   # after a preemption
    python -m launch.tpu logs|status|stop|delete --name=cr-2b6 --zone=us-central2-b

Every subcommand takes ``--dry_run``: it prints each command it would run, one per line,
shell-quoted, and runs nothing. ``--queued`` manages the TPU through a queued resource of the
same name (``--spot``, ``--best_effort``, ``--reserved``). Run it from the repository root;
see launch/README.md for the whole flow.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, Sequence

from launch.topology import (LaunchError, TpuType, check_run_fits_slice, gin_bindings,
                             resolve_gin_path, tpu_type)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Layout on every worker (paths relative to the login user's home directory).
REMOTE_TARBALL = "$HOME/codereason_jax-src.tar.gz"
REMOTE_SRC = "$HOME/codereason_jax"
REMOTE_VENV = "$HOME/codereason_venv"
REMOTE_LOGS = "$HOME/codereason_logs"
REMOTE_LOG = f"{REMOTE_LOGS}/train.log"
REMOTE_PID = f"{REMOTE_LOGS}/train.pid"
DEFAULT_DATA_DIR = "$HOME/codereason_data"
LOCAL_TARBALL = os.path.join("dist", "codereason_jax-src.tar.gz")
STATE_MARK = "codereason-train-state:"
# True on a worker whose trainer process (recorded in the pid file) is alive; the command-line
# test keeps a pid reused after a reboot from counting.
ALIVE = (f'[ -f {REMOTE_PID} ] && grep -qa codereason_jax.train '
         f'"/proc/$(cat {REMOTE_PID})/cmdline" 2>/dev/null')

# Node states (TPU API v2) and queued-resource states, grouped by what resume does with them.
NODE_READY = {"READY"}
NODE_GONE = {"PREEMPTED", "TERMINATED", "STOPPED", "STOPPING", "SUSPENDED", "SUSPENDING",
             "HIDDEN", "HIDING"}
NODE_BUSY = {"CREATING", "STARTING", "RESTARTING", "REIMAGING", "REPAIRING", "DELETING",
             "UNHIDING", "UNKNOWN"}
QR_READY = {"ACTIVE"}
QR_GONE = {"SUSPENDED", "SUSPENDING", "FAILED"}
QR_BUSY = {"CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING", "DELETING"}
NOT_FOUND = "NOT_FOUND"


# -------------------------------------------------------------------------------- runner


@dataclasses.dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str = ""
    stderr: str = ""


class Runner:
    """The one place that runs commands. With ``dry_run`` it prints each command (one line,
    shell-quoted) to ``out`` and runs nothing; a query then returns the answer it is given."""

    def __init__(self, dry_run: bool = False, out=None):
        self.dry_run = dry_run
        self.out = out if out is not None else sys.stdout

    def run(self, argv: Sequence[str]) -> None:
        """Run a command with the terminal attached; a failure raises LaunchError."""
        argv = [str(a) for a in argv]
        if self.dry_run:
            print(shlex.join(argv), file=self.out, flush=True)
            return
        print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)
        code = subprocess.call(argv)
        if code:
            raise LaunchError(f"command failed with exit status {code}: {shlex.join(argv)}")

    def query(self, argv: Sequence[str], dry_run_answer: Result = Result(0)) -> Result:
        """Run a command and capture its output (nothing is raised for a non-zero status)."""
        argv = [str(a) for a in argv]
        if self.dry_run:
            print(shlex.join(argv), file=self.out, flush=True)
            return dry_run_answer
        completed = subprocess.run(argv, capture_output=True, text=True)
        return Result(completed.returncode, completed.stdout, completed.stderr)


# ------------------------------------------------------------------------------ commands


def _info(message: str) -> None:
    """Progress and plans go to stderr: stdout of a dry run holds only commands."""
    print(message, file=sys.stderr, flush=True)


def _remote(*statements: str) -> str:
    """One line of POSIX shell for `--command`: statements joined by '; ' after strict mode."""
    text = "set -eu"
    for statement in statements:  # `cmd &` is already terminated: `&;` is a syntax error
        text += (" " if text.endswith("&") else "; ") + statement
    return text


class Launcher:
    """Builds the gcloud commands of each subcommand and sends them through a Runner."""

    def __init__(self, args: argparse.Namespace, runner: Runner,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.args = args
        self.runner = runner
        self.sleep = sleep
        self.clock = clock

    # ------------------------------------------------------------------ building blocks

    def _scope(self) -> list[str]:
        a = self.args
        return [f"--zone={a.zone}"] + ([f"--project={a.project}"] if a.project else [])

    def _tpu_vm(self, verb: str, *rest: str) -> list[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, *self._scope()]

    def _queued(self, verb: str, *rest: str, alpha: bool = False) -> list[str]:
        return (["gcloud"] + (["alpha"] if alpha else [])
                + ["compute", "tpus", "queued-resources", verb, *rest, *self._scope()])

    def ssh(self, worker: str, command: str) -> list[str]:
        return self._tpu_vm("ssh", self.args.name, f"--worker={worker}", f"--command={command}")

    def describe_node(self) -> list[str]:
        return self._tpu_vm("describe", self.args.name, "--format=value(state)")

    def describe_queued(self) -> list[str]:
        return self._queued("describe", self.args.name, "--format=value(state.state)")

    # ---------------------------------------------------------------------- create/delete

    def tpu(self) -> TpuType:
        if not self.args.accelerator_type:
            raise LaunchError("--accelerator_type is required (e.g. v4-32).")
        return tpu_type(self.args.accelerator_type)

    def create_commands(self) -> list[list[str]]:
        a, tpu = self.args, self.tpu()
        version = a.version or tpu.runtime_version
        if a.queued:
            modes = [flag for flag, on in (("--spot", a.spot), ("--best-effort", a.best_effort),
                                           ("--reserved", a.reserved)) if on]
            return [self._queued("create", a.name, f"--node-id={a.name}",
                                 f"--accelerator-type={tpu.accelerator_type}",
                                 f"--runtime-version={version}", *modes,
                                 alpha=a.best_effort)]
        if a.best_effort:
            raise LaunchError("--best_effort needs --queued (a queued-resource request).")
        modes = [flag for flag, on in (("--spot", a.spot), ("--reserved", a.reserved)) if on]
        return [self._tpu_vm("create", a.name, f"--accelerator-type={tpu.accelerator_type}",
                             f"--version={version}", *modes)]

    def delete_commands(self) -> list[list[str]]:
        a = self.args
        if a.queued:  # --force deletes the node first, then the request
            return [self._queued("delete", a.name, "--force", "--quiet")]
        return [self._tpu_vm("delete", a.name, "--quiet")]

    def create(self) -> None:
        _info(f"creating {self.tpu().describe()}")
        for argv in self.create_commands():
            self.runner.run(argv)
        if self.args.queued:  # the request returns at once; the slice comes when it comes
            self.wait_for(QR_READY, fail=QR_GONE | {NOT_FOUND})

    def delete(self) -> None:
        for argv in self.delete_commands():
            self.runner.run(argv)

    # --------------------------------------------------------------------------- state

    def state(self, dry_run_state: str | None = None) -> str:
        """READY/PREEMPTED/... of the node, or of the queued resource with --queued;
        NOT_FOUND when it does not exist. Other failures (auth, API) raise LaunchError."""
        argv = self.describe_queued() if self.args.queued else self.describe_node()
        pretend = (Result(1, "", f"ERROR: {NOT_FOUND}: not found") if dry_run_state == NOT_FOUND
                   else Result(0, f"{dry_run_state or 'READY'}\n", ""))
        result = self.runner.query(argv, dry_run_answer=pretend)
        if result.returncode == 0:
            return result.stdout.strip().splitlines()[-1].strip() if result.stdout.strip() \
                else "UNKNOWN"
        if NOT_FOUND in result.stderr or "not found" in result.stderr.lower():
            return NOT_FOUND
        raise LaunchError(f"{shlex.join(argv)} failed ({result.returncode}): "
                          f"{result.stderr.strip()}")

    def wait_for(self, wanted: set[str], fail: set[str] = frozenset(),
                 dry_run_state: str | None = None) -> str:
        """Poll the state until it is in ``wanted``; a state in ``fail`` raises. A dry run
        polls once and pretends ``dry_run_state`` (default: one of ``wanted``)."""
        deadline = self.clock() + self.args.wait_timeout_s
        pretend = dry_run_state or sorted(wanted)[0]
        while True:
            state = self.state(dry_run_state=pretend)
            if state in wanted or self.runner.dry_run:
                return state
            if state in fail:
                raise LaunchError(f"{self.args.name} went to state {state} while waiting for "
                                  f"{'/'.join(sorted(wanted))}; run `resume` to recreate it.")
            if self.clock() > deadline:
                raise LaunchError(f"{self.args.name} still in state {state} after "
                                  f"{self.args.wait_timeout_s:g} s of waiting for "
                                  f"{'/'.join(sorted(wanted))}.")
            _info(f"{self.args.name}: {state}; checking again in {self.args.poll_s:g} s")
            self.sleep(self.args.poll_s)

    # ---------------------------------------------------------------------------- setup

    def setup_commands(self) -> list[list[str]]:
        a = self.args
        if a.stage and not a.stage.startswith("gs://"):
            raise LaunchError(f"--stage={a.stage} must be a gs:// path.")
        if a.data_from and not a.data_from.startswith("gs://"):
            raise LaunchError(f"--data_from={a.data_from} must be a gs:// path.")
        # The committed tree (gin files, requirements, packages): what every worker runs.
        archive = ["git", "-C", ROOT, "archive", "--format=tar.gz", "--prefix=codereason_jax/",
                   f"--output={os.path.join(ROOT, LOCAL_TARBALL)}", a.ref]
        commands = [["mkdir", "-p", os.path.join(ROOT, "dist")], archive]
        fetch = []
        if a.stage:
            staged = a.stage.rstrip("/") + "/codereason_jax-src.tar.gz"
            commands.append(["gcloud", "storage", "cp", os.path.join(ROOT, LOCAL_TARBALL),
                             staged])
            fetch = [f"gcloud storage cp {shlex.quote(staged)} {REMOTE_TARBALL}"]
        else:
            commands.append(self._tpu_vm("scp", os.path.join(ROOT, LOCAL_TARBALL),
                                         f"{a.name}:codereason_jax-src.tar.gz", "--worker=all"))
        python = shlex.quote(a.python)
        pip = f"{REMOTE_VENV}/bin/pip install --quiet"
        constraints = "-c requirements/constraints.txt"
        data_dir = _data_dir(a.data_dir)
        script = _remote(
            *fetch,
            # The pinned versions need Python >= 3.11; the TPU images ship Ubuntu 22.04's 3.10.
            f"if ! command -v {python} >/dev/null; then sudo DEBIAN_FRONTEND=noninteractive "
            "apt-get -o DPkg::Lock::Timeout=600 update -qq && sudo DEBIAN_FRONTEND="
            "noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "
            f"{python} {python}-venv; fi",
            f"rm -rf {REMOTE_SRC}",
            f"tar -xzf {REMOTE_TARBALL} -C $HOME",
            f"test -x {REMOTE_VENV}/bin/python || {python} -m venv {REMOTE_VENV}",
            f"{pip} --upgrade pip",
            f"cd {REMOTE_SRC}",
            f"{pip} {constraints} -e . 'jax[tpu]' "
            "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html",
            f"{pip} --no-deps {constraints} t5",
            f"{REMOTE_VENV}/bin/python -c 'import seqio, t5.data.preprocessors, codereason_jax'",
            *([f"mkdir -p {data_dir}",
               f"gcloud storage rsync --recursive {shlex.quote(a.data_from)} {data_dir}"]
              if a.data_from else []),
            f"mkdir -p {REMOTE_LOGS}",
            'echo "$(hostname): set up"')
        commands.append(self.ssh("all", script))
        return commands

    def setup(self) -> None:
        for argv in self.setup_commands():
            self.runner.run(argv)

    # ------------------------------------------------------------------------------ run

    def train_argv(self) -> list[str]:
        """The command every worker runs (relative gin paths: the repository's own tree)."""
        if getattr(self, "_train_argv", None) is None:
            self._train_argv = self._build_train_argv()
        return self._train_argv

    def _build_train_argv(self) -> list[str]:
        a, tpu = self.args, self.tpu()
        if not a.gin_file:
            raise LaunchError("--gin_file is required (repeatable): the model, partitioning "
                              "and run files, e.g. --gin_file=gin/models/pangu_2_6b.gin "
                              "--gin_file=gin/partitioning/v4_32.gin")
        if not a.run_dir:
            raise LaunchError("--run_dir is required: a gs://BUCKET/... directory that every "
                              "host shares (checkpoints, metrics, TensorBoard).")
        if not a.run_dir.startswith("gs://") or not a.run_dir[5:].split("/")[0]:
            raise LaunchError(f"--run_dir={a.run_dir} must be a GCS path gs://BUCKET/...: every "
                              "host writes its shards of each checkpoint there, and it outlives "
                              "a preempted VM.")
        gin_files = [self._repo_relative(path) for path in a.gin_file]
        bindings = [arg[len("--gin."):].replace("=", " = ", 1) for arg in a.gin_bindings]
        for line in check_run_fits_slice(tpu, gin_bindings(gin_files, bindings, ROOT)):
            _info(line)
        multihost = "auto" if tpu.hosts > 1 else "off"
        return ([f"{REMOTE_VENV}/bin/python", "-m", "codereason_jax.train"]
                + [f"--gin_file={path}" for path in gin_files]
                + [f"--multihost={multihost}", f"--run_dir={a.run_dir}"] + list(a.gin_bindings))

    @staticmethod
    def _repo_relative(path: str) -> str:
        resolved = os.path.abspath(resolve_gin_path(path, ROOT))
        relative = os.path.relpath(resolved, ROOT)
        if relative.startswith(".."):
            raise LaunchError(f"gin file {path} is outside the repository; only the repository "
                              "tree is shipped to the workers. Put it under gin/.")
        return relative

    def launch_script(self) -> str:
        a = self.args
        train = self.train_argv()
        env = [f"CODEREASON_DATA_DIR={_data_dir(a.data_dir)}"]
        if a.tfds_dir:
            env.append(shlex.quote(f"CODEREASON_TFDS_DIR={a.tfds_dir}"))
        env += [shlex.quote(e) for e in a.env]
        venv_python = f"{REMOTE_VENV}/bin/python"
        command = " ".join([venv_python] + [shlex.quote(x) for x in train[1:]])
        return _remote(
            f"mkdir -p {REMOTE_LOGS}",
            f"if {ALIVE}; then "
            f"echo \"$(hostname): training is already running (pid $(cat {REMOTE_PID})); "
            "stop it first (python -m launch.tpu stop)\" >&2; exit 1; fi",
            f"if [ -f {REMOTE_LOG} ]; then mv {REMOTE_LOG} {REMOTE_LOG}.$(date +%Y%m%d-%H%M%S); fi",
            f"cd {REMOTE_SRC}",
            f"setsid nohup env {' '.join(env)} {command} > {REMOTE_LOG} 2>&1 < /dev/null &",
            f"echo $! > {REMOTE_PID}",
            f"echo \"$(hostname): started pid $(cat {REMOTE_PID}), log {REMOTE_LOG}\"")

    def follow_command(self, worker: str = "0", lines: int | None = None,
                       follow: bool = True) -> list[str]:
        tail = f"tail -n {'+1' if lines is None else lines}{' -F' if follow else ''} {REMOTE_LOG}"
        return self.ssh(worker, tail)

    def run(self) -> None:
        self.runner.run(self.ssh("all", self.launch_script()))
        if not self.args.no_follow:
            _info("following worker 0's log (Ctrl-C stops following; training continues)")
            self.runner.run(self.follow_command())

    # --------------------------------------------------------------------- stop, status

    def stop_script(self) -> str:
        grace = int(self.args.grace_s)
        return _remote(
            f"if {ALIVE}; then "
            f"p=$(cat {REMOTE_PID}); kill -TERM $p; "
            f"for i in $(seq {grace}); do kill -0 $p 2>/dev/null || break; sleep 1; done; "
            "if kill -0 $p 2>/dev/null; then kill -KILL $p; echo \"$(hostname): killed $p\"; "
            "else echo \"$(hostname): stopped $p\"; fi; "
            "else echo \"$(hostname): not running\"; fi")

    def stop(self) -> None:
        self.runner.run(self.ssh("all", self.stop_script()))

    def train_state_command(self) -> list[str]:
        return self.ssh("all", _remote(
            f"if {ALIVE}; then "
            f"echo \"{STATE_MARK} running $(hostname)\"; "
            f"else echo \"{STATE_MARK} stopped $(hostname)\"; fi"))

    def train_states(self, hosts: int) -> tuple[int, int]:
        """(running, stopped) trainer processes over the workers."""
        pretend = Result(0, "".join(f"{STATE_MARK} stopped w{i}\n" for i in range(hosts)))
        result = self.runner.query(self.train_state_command(), dry_run_answer=pretend)
        words = [line.split(STATE_MARK, 1)[1].split()[0]
                 for line in result.stdout.splitlines() if STATE_MARK in line]
        return words.count("running"), hosts - words.count("running")

    def status(self) -> None:
        state = self.state()
        if self.runner.dry_run:
            _info(f"{self.args.name}: {state} (pretended by the dry run)")
        else:
            print(f"{self.args.name}: {state}", flush=True)
        if state in NODE_READY | QR_READY:
            self.runner.run(self.ssh("all", _remote(
                f"if {ALIVE}; then echo \"$(hostname): training (pid $(cat {REMOTE_PID}))\"; "
                "else echo \"$(hostname): not training\"; fi",
                f"tail -n 2 {REMOTE_LOG} 2>/dev/null || true")))

    def logs(self) -> None:
        self.runner.run(self.follow_command(self.args.worker, self.args.lines,
                                            self.args.follow))

    # --------------------------------------------------------------------------- resume

    def resume(self) -> None:
        """Bring the job back after a preemption: recreate the TPU if it is gone, set it up
        again, and relaunch into the same run directory (training restores the newest
        checkpoint there). A job running on every worker is left alone."""
        tpu = self.tpu()
        self.train_argv()  # validate the run before touching anything
        ready = QR_READY if self.args.queued else NODE_READY
        state = self.state(dry_run_state=self.args.assume_state)
        _info(f"{self.args.name}: {state}")
        if state in NODE_BUSY | QR_BUSY:  # creating, provisioning, repairing, deleting
            state = self.wait_for(ready | NODE_GONE | QR_GONE | {NOT_FOUND},
                                  dry_run_state=sorted(ready)[0])
            _info(f"{self.args.name}: {state}")
        if self.args.queued and state in QR_READY:  # the request is ACTIVE; is its node?
            node = self.runner.query(self.describe_node(), dry_run_answer=Result(0, "READY\n"))
            node_state = node.stdout.strip() if node.returncode == 0 else NOT_FOUND
            if node_state not in NODE_READY:
                _info(f"{self.args.name}: queued resource ACTIVE, node {node_state}")
                state = "SUSPENDED"
        if state in NODE_GONE | QR_GONE:
            _info(f"{self.args.name} is {state}: deleting and recreating it")
            self.delete()
            if self.args.queued:
                self.wait_for({NOT_FOUND})
            state = NOT_FOUND
        fresh = state == NOT_FOUND
        if fresh:
            self.create()
        elif state not in ready:
            raise LaunchError(f"{self.args.name} is in state {state}; resume does not know what "
                              "to do with it. Inspect it with `status`, or `delete` it.")
        running = 0
        if fresh or self.args.force_setup:
            if not fresh:
                running, _ = self.train_states(tpu.hosts)
                if running:
                    self.stop()
                    running = 0
            self.setup()
        else:
            running, _ = self.train_states(tpu.hosts)
            if running == tpu.hosts:
                _info(f"training is running on all {tpu.hosts} workers; nothing to resume")
                if not self.args.no_follow:
                    self.runner.run(self.follow_command())
                return
        if running:  # some workers lost their process: the others hang in collectives
            _info(f"training runs on {running} of {tpu.hosts} workers; stopping it everywhere")
            self.stop()
        self.run()


def _data_dir(value: str | None) -> str:
    return DEFAULT_DATA_DIR if not value else shlex.quote(value)


# ---------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="TPU node name (and queued-resource id)")
    common.add_argument("--zone", help="e.g. us-central2-b (v4)")
    common.add_argument("--project", help="GCP project (default: gcloud's configured one)")
    common.add_argument("--queued", action="store_true",
                        help="the TPU is (to be) managed by a queued resource of the same name")
    common.add_argument("--dry_run", action="store_true",
                        help="print every command, one per line, and run nothing")

    machine = argparse.ArgumentParser(add_help=False)
    machine.add_argument("--accelerator_type", help="e.g. v4-32, v5litepod-16, v5p-64, v6e-16")
    machine.add_argument("--version", help="TPU runtime (default per generation, e.g. "
                         "tpu-ubuntu2204-base for v4)")
    machine.add_argument("--spot", action="store_true", help="Spot capacity (preemptible)")
    machine.add_argument("--best_effort", action="store_true",
                         help="best-effort queued resource (gcloud alpha; needs --queued)")
    machine.add_argument("--reserved", action="store_true", help="use reserved capacity")
    machine.add_argument("--wait_timeout_s", type=float, default=24 * 3600,
                         help="how long to wait for a queued resource to become ACTIVE")
    machine.add_argument("--poll_s", type=float, default=60.0)

    install = argparse.ArgumentParser(add_help=False)
    install.add_argument("--ref", default="HEAD",
                         help="git revision shipped to the workers (commit first!)")
    install.add_argument("--stage", help="gs:// folder to stage the source tarball through "
                         "(default: scp to every worker)")
    install.add_argument("--data_from", help="gs:// folder copied to every worker's data dir")
    install.add_argument("--python", default="python3.11", help="interpreter for the venv")

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data_dir", help="CODEREASON_DATA_DIR on the workers "
                      "(default $HOME/codereason_data)")

    train = argparse.ArgumentParser(add_help=False)
    train.add_argument("--gin_file", action="append", default=[],
                       help="gin file under the repository (repeatable, in order)")
    train.add_argument("--run_dir", help="gs://BUCKET/... shared by all hosts")
    train.add_argument("--tfds_dir", help="CODEREASON_TFDS_DIR on the workers: where the "
                       "prepared *_tfds corpora are (gs://BUCKET/tfds)")
    train.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                       help="extra environment for the trainer (repeatable)")
    train.add_argument("--no_follow", action="store_true",
                       help="do not stream worker 0's log after starting")

    grace = argparse.ArgumentParser(add_help=False)
    grace.add_argument("--grace_s", type=int, default=120,
                       help="seconds between SIGTERM (checkpoint and exit) and SIGKILL")

    parser = argparse.ArgumentParser(prog="python -m launch.tpu",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="Gin bindings --gin.NAME=VALUE after `run`/`resume` "
                                     "are passed to the trainer.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create", parents=[common, machine], help="create the TPU VM(s)")
    sub.add_parser("setup", parents=[common, install, data],
                   help="ship the committed code to every worker and install it")
    sub.add_parser("run", parents=[common, machine, train, data],
                   help="start training on every worker (nohup), follow worker 0")
    sub.add_parser("resume", parents=[common, machine, install, train, data, grace],
                   help="after a preemption: recreate if needed, set up, relaunch").add_argument(
        "--assume_state", default="PREEMPTED",
        help="with --dry_run: the state to pretend the TPU is in (READY, PREEMPTED, NOT_FOUND)")
    resume = sub.choices["resume"]
    resume.add_argument("--force_setup", action="store_true",
                        help="set up again even if the TPU survived")
    logs = sub.add_parser("logs", parents=[common], help="show a worker's training log")
    logs.add_argument("--worker", default="0", help="worker index or 'all'")
    logs.add_argument("--lines", type=int, default=100)
    logs.add_argument("--follow", action="store_true", help="keep streaming (tail -F)")
    sub.add_parser("status", parents=[common], help="TPU state and each worker's trainer")
    sub.add_parser("stop", parents=[common, grace],
                   help="SIGTERM the trainer on every worker (it checkpoints), then SIGKILL")
    sub.add_parser("delete", parents=[common], help="delete the TPU (or queued resource)")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    gin_args = [a for a in argv if a.startswith("--gin.")]
    rest = [a for a in argv if not a.startswith("--gin.")]
    args = build_parser().parse_args(rest)
    args.gin_bindings = gin_args
    for arg in gin_args:
        if "=" not in arg or len(arg.split("=", 1)[0]) <= len("--gin."):
            raise LaunchError(f"Malformed gin flag {arg!r}; write --gin.NAME=VALUE.")
    if gin_args and args.command not in ("run", "resume"):
        raise LaunchError(f"--gin.* bindings only apply to run and resume, not {args.command}.")
    if not args.zone:
        raise LaunchError("--zone is required (e.g. --zone=us-central2-b for v4).")
    for name in ("accelerator_type",):
        if args.command in ("create", "run", "resume") and not getattr(args, name):
            raise LaunchError(f"--{name} is required for {args.command} (e.g. v4-32).")
    for item in args.env if hasattr(args, "env") else ():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", item):
            raise LaunchError(f"--env={item} must be KEY=VALUE.")
    if getattr(args, "best_effort", False) and not args.queued:
        raise LaunchError("--best_effort needs --queued (a queued-resource request).")
    if getattr(args, "spot", False) and getattr(args, "best_effort", False):
        raise LaunchError("--spot and --best_effort exclude each other.")
    for attr, default in (("gin_file", []), ("env", []), ("run_dir", None), ("no_follow", False),
                          ("data_dir", None), ("tfds_dir", None)):
        if not hasattr(args, attr):
            setattr(args, attr, default)
    return args


def main(argv: Sequence[str] | None = None, runner: Runner | None = None,
         sleep: Callable[[float], None] = time.sleep) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        launcher = Launcher(args, runner or Runner(dry_run=args.dry_run), sleep=sleep)
        if args.command in ("create", "run", "resume"):
            launcher.tpu()  # an unknown accelerator type stops here
        getattr(launcher, args.command)()
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
