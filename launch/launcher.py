"""The gcloud commands of each subcommand, and the resume logic, sent through a Runner."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Callable

from launch.runner import Result, Runner
from launch.topology import (LaunchError, TpuType, check_run_fits_slice, gin_bindings,
                             resolve_gin_path, tpu_type)
from launch.worker_layout import (ALIVE, LOCAL_TARBALL, REMOTE_LOG, REMOTE_LOGS, REMOTE_PID,
                                  REMOTE_SRC, REMOTE_TARBALL, REMOTE_VENV, STATE_MARK, shell_line,
                                  worker_data_dir)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def _info(message: str) -> None:
    """Progress and plans go to stderr: stdout of a dry run holds only commands."""
    print(message, file=sys.stderr, flush=True)


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
        data_dir = worker_data_dir(a.data_dir)
        script = shell_line(
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
        env = [f"CODEREASON_DATA_DIR={worker_data_dir(a.data_dir)}"]
        if a.tfds_dir:
            env.append(shlex.quote(f"CODEREASON_TFDS_DIR={a.tfds_dir}"))
        env += [shlex.quote(e) for e in a.env]
        venv_python = f"{REMOTE_VENV}/bin/python"
        command = " ".join([venv_python] + [shlex.quote(x) for x in train[1:]])
        return shell_line(
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
        return shell_line(
            f"if {ALIVE}; then "
            f"p=$(cat {REMOTE_PID}); kill -TERM $p; "
            f"for i in $(seq {grace}); do kill -0 $p 2>/dev/null || break; sleep 1; done; "
            "if kill -0 $p 2>/dev/null; then kill -KILL $p; echo \"$(hostname): killed $p\"; "
            "else echo \"$(hostname): stopped $p\"; fi; "
            "else echo \"$(hostname): not running\"; fi")

    def stop(self) -> None:
        self.runner.run(self.ssh("all", self.stop_script()))

    def train_state_command(self) -> list[str]:
        return self.ssh("all", shell_line(
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
            self.runner.run(self.ssh("all", shell_line(
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
