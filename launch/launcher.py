"""The gcloud commands of each subcommand, and the resume logic, sent through a Runner."""

from __future__ import annotations

import argparse
import os
import shlex
import time
from typing import Callable

from launch import startup
from launch.gcloud import classify_failure, info, last_line
from launch.run_code import ROOT as ROOT
from launch.run_code import RunCode
from launch.unattended import Unattended
from launch.runner import Result, Runner
from launch.topology import (LaunchError, TpuType, check_run_fits_slice, gin_bindings,
                             resolve_gin_path, tpu_type)
from launch.worker_layout import (ALIVE, LOCAL_TARBALL, REMOTE_LOG, REMOTE_LOGS, REMOTE_PID,
                                  REMOTE_SRC, REMOTE_TARBALL, REMOTE_VENV, STATE_MARK, shell_line,
                                  worker_data_dir)

WORK_DIR = os.path.join(ROOT, "dist")  # local files the commands upload (code, startup script)

# Node states (TPU API v2) and queued-resource states, grouped by what resume does with them.
# Only a terminal state leads to deletion: a node whose VMs are gone for good (PREEMPTED,
# TERMINATED), or a queued resource that is itself SUSPENDED or FAILED. A queued resource's node
# is never judged on its own: while the request is ACTIVE its node is repaired or restarted,
# and a preempted node moves the request to SUSPENDED. Everything else is waited out, and a
# state nobody knows yet counts as busy: waiting never destroys capacity.
NODE_READY = {"READY"}
NODE_GONE = {"PREEMPTED", "TERMINATED"}
NODE_HELD = {"STOPPED", "SUSPENDED", "HIDDEN"}  # kept on purpose: a person starts or deletes it
NODE_BUSY = {"CREATING", "STARTING", "RESTARTING", "REIMAGING", "REPAIRING", "DELETING",
             "STOPPING", "SUSPENDING", "HIDING", "UNHIDING", "UNKNOWN", "STATE_UNSPECIFIED"}
QR_READY = {"ACTIVE"}
QR_GONE = {"SUSPENDED", "FAILED"}
QR_BUSY = {"CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING", "SUSPENDING",
           "DELETING", "STATE_UNSPECIFIED"}
NOT_FOUND = "NOT_FOUND"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AUTOCHECKPOINT_GENERATIONS = ("v4", "v5litepod")  # Cloud TPU Autocheckpoint (preview)


class Launcher(RunCode, Unattended):
    """Builds the gcloud commands of each subcommand and sends them through a Runner."""

    def __init__(self, args: argparse.Namespace, runner: Runner,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.args = args
        self.runner = runner
        self.sleep = sleep
        self.clock = clock
        self.work_dir = WORK_DIR
        self._code: dict | None = None

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

    def autocheckpoint(self) -> bool:
        """Ask Cloud TPU for Autocheckpoint (a SIGTERM before maintenance, on which the trainer
        saves) where it is offered: unattended runs on v4 and v5e, unless turned off."""
        a = self.args
        return (bool(getattr(a, "unattended", False)) and not getattr(a, "no_autocheckpoint", False)
                and self.tpu().generation.name in AUTOCHECKPOINT_GENERATIONS)

    def startup_path(self) -> str:
        return os.path.join(self.work_dir, f"startup-{self.args.name}.sh")

    def create_commands(self) -> list[list[str]]:
        a, tpu = self.args, self.tpu()
        version = a.version or tpu.runtime_version
        extra: list[str] = []
        alpha = bool(a.best_effort)
        if getattr(a, "unattended", False):
            extra += [f"--metadata-from-file=startup-script={self.startup_path()}",
                      f"--scopes={CLOUD_PLATFORM_SCOPE}"]
            if a.service_account:
                extra.append(f"--service-account={a.service_account}")
            if self.autocheckpoint():
                extra.append("--autocheckpoint-enabled")
                alpha = True
        if a.queued:
            modes = [flag for flag, on in (("--spot", a.spot), ("--best-effort", a.best_effort),
                                           ("--reserved", a.reserved)) if on]
            return [self._queued("create", a.name, f"--node-id={a.name}",
                                 f"--accelerator-type={tpu.accelerator_type}",
                                 f"--runtime-version={version}", *modes, *extra,
                                 alpha=alpha)]
        if a.best_effort:
            raise LaunchError("--best_effort needs --queued (a queued-resource request).")
        modes = [flag for flag, on in (("--spot", a.spot), ("--reserved", a.reserved)) if on]
        argv = self._tpu_vm("create", a.name, f"--accelerator-type={tpu.accelerator_type}",
                            f"--version={version}", *modes, *extra)
        return [argv[:1] + ["alpha"] + argv[1:]] if alpha else [argv]

    def delete_commands(self) -> list[list[str]]:
        a = self.args
        if a.queued:  # --force deletes the node first, then the request
            return [self._queued("delete", a.name, "--force", "--quiet")]
        return [self._tpu_vm("delete", a.name, "--quiet")]

    def create(self) -> None:
        info(f"creating {self.tpu().describe()}")
        if getattr(self.args, "unattended", False):
            self.prepare_unattended()
        for argv in self.create_commands():
            self.runner.run(argv)
        if self.args.queued:  # the request returns at once; the slice comes when it comes
            self.wait_for(QR_READY, fail=QR_GONE | {NOT_FOUND})

    def delete(self) -> None:
        for argv in self.delete_commands():
            self.runner.run(argv)

    # --------------------------------------------------------------------------- state

    def query_retrying(self, argv: list[str], pretend: Result = Result(0)) -> Result:
        """A query whose transient failures are retried with exponential backoff (10 s,
        20 s, ... at most 5 min apart, ``--api_retries`` times); a NOT_FOUND or a permanent
        failure comes back at once, and so does the last failure when the retries run out."""
        retries = int(getattr(self.args, "api_retries", 5))
        for attempt in range(retries + 1):
            result = self.runner.query(argv, dry_run_answer=pretend)
            if result.returncode == 0 or classify_failure(result) != "transient":
                return result
            if attempt < retries:
                delay = min(300.0, 10.0 * 2 ** attempt)
                info(f"{shlex.join(argv[:5])} ...: {last_line(result.stderr)}; retrying in "
                      f"{delay:g} s ({attempt + 1} of {retries})")
                self.sleep(delay)
        return result

    def _answer(self, argv: list[str], result: Result) -> str:
        """The state in a describe answer, NOT_FOUND for a confirmed absence; anything else
        raises with gcloud's own last line (and nothing is deleted)."""
        if result.returncode == 0:
            lines = result.stdout.strip().splitlines()
            return lines[-1].strip() if lines else "UNKNOWN"
        kind = classify_failure(result)
        if kind == "not_found":
            return NOT_FOUND
        retries = int(getattr(self.args, "api_retries", 5))
        why = f"after {retries} retries" if kind == "transient" else "not retried"
        raise LaunchError(f"{self.args.name}: `{shlex.join(argv[:5])} ...` failed "
                          f"({why}; nothing was changed): {last_line(result.stderr)}")

    @staticmethod
    def _pretend(dry_run_state: str | None) -> Result:
        if dry_run_state == NOT_FOUND:
            return Result(1, "", "ERROR: (gcloud.compute.tpus.describe) NOT_FOUND: not found")
        return Result(0, f"{dry_run_state or 'READY'}\n", "")

    def state(self, dry_run_state: str | None = None) -> str:
        """READY/PREEMPTED/... of the node, or of the queued resource with --queued;
        NOT_FOUND when the API says it does not exist. Transient failures are retried; a
        failure that persists, or cannot pass (auth, permissions), raises LaunchError."""
        argv = self.describe_queued() if self.args.queued else self.describe_node()
        return self._answer(argv, self.query_retrying(argv, self._pretend(dry_run_state)))

    def node_state(self, dry_run_state: str = "READY") -> str:
        argv = self.describe_node()
        return self._answer(argv, self.query_retrying(argv, self._pretend(dry_run_state)))

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
            self._nap(state, deadline, "/".join(sorted(wanted)))

    def _nap(self, state: str, deadline: float, wanted: str) -> None:
        if self.clock() > deadline:
            raise LaunchError(f"{self.args.name} still {state} after {self.args.wait_timeout_s:g}"
                              f" s of waiting for {wanted}; nothing was deleted.")
        info(f"{self.args.name}: {state}; checking again in {self.args.poll_s:g} s")
        self.sleep(self.args.poll_s)

    def settle(self) -> str:
        """Wait until the TPU is usable or gone: READY (a node, or an ACTIVE queued resource
        whose node is READY), a terminal state (NODE_GONE, or QR_GONE of the request itself),
        or NOT_FOUND. Busy states are waited out; a node kept on purpose (STOPPED, ...)
        raises. A dry run pretends ``--assume_state`` once, and READY after a busy one."""
        a = self.args
        deadline = self.clock() + a.wait_timeout_s
        pretend = a.assume_state
        while True:
            state = self.state(dry_run_state=pretend)
            info(f"{a.name}: {state}")
            if a.queued:
                if state in QR_GONE | {NOT_FOUND}:
                    return state
                if state in QR_READY:
                    node = self.node_state()
                    if node in NODE_READY:
                        return "READY"
                    state = f"ACTIVE (node {node})"  # the request decides, not its node
            else:
                if state in NODE_READY | NODE_GONE | {NOT_FOUND}:
                    return state
                if state in NODE_HELD:
                    raise LaunchError(
                        f"{a.name} is {state}: it was stopped or set aside on purpose, and "
                        "resume does not delete it. Start it (gcloud compute tpus tpu-vm start) "
                        "or delete it, then resume.")
            if self.runner.dry_run:
                info("(dry run: a real resume waits here until the state changes)")
                pretend = "ACTIVE" if a.queued else "READY"
                continue
            self._nap(state, deadline, "READY or a terminal state")

    # ---------------------------------------------------------------------------- setup

    def setup_commands(self) -> list[list[str]]:
        a = self.args
        if a.stage and not a.stage.startswith("gs://"):
            raise LaunchError(f"--stage={a.stage} must be a gs:// path.")
        if a.data_from and not a.data_from.startswith("gs://"):
            raise LaunchError(f"--data_from={a.data_from} must be a gs:// path.")
        commands: list[list[str]] = []
        fetch = []
        if getattr(a, "run_dir", None):  # the run's own code, stored at its first launch
            self._check_run_dir()  # --ref/--stage with --run_dir are refused by parse_args
            stored = self.code_urls()[0]
            fetch = [f"gcloud storage cp {shlex.quote(stored)} {REMOTE_TARBALL}"]
        else:
            # The committed tree (gin files, requirements, packages): what every worker runs.
            commands = [["mkdir", "-p", os.path.join(ROOT, "dist")],
                        ["git", "-C", ROOT, "archive", "--format=tar.gz",
                         "--prefix=codereason_jax/",
                         f"--output={os.path.join(ROOT, LOCAL_TARBALL)}", a.ref]]
        if getattr(a, "run_dir", None):
            pass  # fetched from the run's folder in the bucket
        elif a.stage:
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
        if getattr(self.args, "run_dir", None):
            self.ensure_code()
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
        self._check_run_dir()
        gin_files = [self._repo_relative(path) for path in a.gin_file]
        bindings = [arg[len("--gin."):].replace("=", " = ", 1) for arg in a.gin_bindings]
        for line in check_run_fits_slice(tpu, gin_bindings(gin_files, bindings, ROOT)):
            info(line)
        multihost = "auto" if tpu.hosts > 1 else "off"
        return ([f"{REMOTE_VENV}/bin/python", "-m", "codereason_jax.train"]
                + [f"--gin_file={path}" for path in gin_files]
                + [f"--multihost={multihost}", f"--run_dir={a.run_dir}"] + list(a.gin_bindings))

    def _check_run_dir(self) -> None:
        run_dir = self.args.run_dir
        if not run_dir:
            raise LaunchError("--run_dir is required: a gs://BUCKET/... directory that every "
                              "host shares (checkpoints, metrics, TensorBoard).")
        if not run_dir.startswith("gs://") or not run_dir[5:].split("/")[0]:
            raise LaunchError(f"--run_dir={run_dir} must be a GCS path gs://BUCKET/...: every "
                              "host writes its shards of each checkpoint there, and it outlives "
                              "a preempted VM.")

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
        self.train_argv()  # validate the run before touching anything
        self.ensure_code()
        self.runner.run(self.ssh("all", self.launch_script()))
        if not self.args.no_follow:
            info("following worker 0's log (Ctrl-C stops following; training continues)")
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
            info(f"{self.args.name}: {state} (pretended by the dry run)")
        else:
            print(f"{self.args.name}: {state}", flush=True)
        if state in NODE_READY | QR_READY:
            self.runner.run(self.ssh("all", shell_line(
                f"if {ALIVE}; then echo \"$(hostname): training (pid $(cat {REMOTE_PID}))\"; "
                "else echo \"$(hostname): not training\"; fi",
                f"tail -n 2 {REMOTE_LOG} 2>/dev/null || true")))
        if getattr(self.args, "run_dir", None):  # an unattended run's record, VMs or not
            self._check_run_dir()
            over = self.run_over()
            show = info if self.runner.dry_run else print  # a dry run's stdout: commands
            show(f"run: {'over: ' + over if over else 'not over'}")
            attempts = startup.launch_dir(self.args.run_dir) + "/attempts/worker-*.tsv"
            result = self.query_retrying(["gcloud", "storage", "cat", attempts])
            for line in result.stdout.splitlines()[-self.args.lines:]:
                show(line)

    # --------------------------------------------------------------------------- resume

    def resume(self) -> None:
        """Bring the job back after a preemption: recreate the TPU only if it is gone for good
        (see ``settle``), set it up again from the run's stored code, and relaunch into the
        same run directory (training restores the newest checkpoint there). A job running on
        every worker is left alone. With --unattended a recreated slice starts itself."""
        a = self.args
        tpu = self.tpu()
        self.train_argv()  # validate the run before touching anything
        self.ensure_code()
        if a.unattended:
            over = self.run_over()
            if over:
                info(f"the run is over ({over}); nothing to resume. Remove "
                      f"{startup.launch_dir(a.run_dir)}/STOP to start it again.")
                return
        state = self.settle()
        if state in NODE_GONE | QR_GONE:
            info(f"{a.name} is {state}: deleting and recreating it")
            self.delete()
            if a.queued:
                self.wait_for({NOT_FOUND})
            state = NOT_FOUND
        fresh = state == NOT_FOUND
        if fresh:
            self.create()
            if a.unattended:
                info("the VMs set up and start training by themselves (startup script); "
                      f"read their logs with `logs --run_dir={a.run_dir}`")
                return
        elif a.unattended:
            info(f"{a.name} is READY and runs the job itself (startup script); see `status`")
            return
        running = 0
        if fresh or a.force_setup:
            if not fresh:
                running, _ = self.train_states(tpu.hosts)
                if running:
                    self.stop()
                    running = 0
            self.setup()
        else:
            running, _ = self.train_states(tpu.hosts)
            if running == tpu.hosts:
                info(f"training is running on all {tpu.hosts} workers; nothing to resume")
                if not a.no_follow:
                    self.runner.run(self.follow_command())
                return
        if running:  # some workers lost their process: the others hang in collectives
            info(f"training runs on {running} of {tpu.hosts} workers; stopping it everywhere")
            self.stop()
        self.runner.run(self.ssh("all", self.launch_script()))
        if not a.no_follow:
            self.runner.run(self.follow_command())
