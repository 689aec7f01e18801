"""The unattended run: the startup script every (re)created TPU VM runs, and its decisions.

Cloud TPU runs a VM's ``startup-script`` metadata at every boot, so a recreated slice starts
training by itself from the code and wheel set stored with the run. The script is
``startup.sh.in`` filled in here; whether an attempt is relaunched is ``decide``, one pure
function that the script calls on the VM (``python3 -m launch.startup decide ...``), so the
tests and the VMs apply the same rule.

Layout of a run's launcher files, ``<run_dir>/launch/`` in the bucket:
``code.tar.gz`` and ``code.json`` (the code of the run, and its commit, time and author),
``env/wheels-<constraints hash>.tar`` (the wheel set), ``startup.sh`` (this script, as sent),
``attempts/worker-N.tsv`` (one line per attempt event), ``logs/worker-N.log`` (the current
attempt's log, uploaded every minute) and ``logs/attempt-K/worker-N.log``, and ``STOP`` (why the
run is over: finished, failed, or the retry cap; no VM starts it again while it exists).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
from typing import Sequence

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "startup.sh.in")
TPU_LOCK = "/tmp/libtpu_lockfile"
DEFAULT_MAX_ATTEMPTS = 20

# Exit statuses of `python -m codereason_jax.train` (codereason_jax/cli.py).
USER_ERROR, DIVERGED = 2, 3
PERMANENT = {USER_ERROR: "failed: the command or its input is wrong (exit 2); fix it and "
                         "start a new attempt by removing launch/STOP",
             DIVERGED: "failed: training diverged (exit 3)"}
KNOWN = {0: "stopped before the final step (a SIGTERM save)", 1: "crashed (exit 1)",
         4: "the run's storage refused a write (exit 4)", 130: "interrupted (exit 130)",
         137: "killed (exit 137, SIGKILL or out of memory)", 143: "terminated (exit 143)"}


def launch_dir(run_dir: str) -> str:
    """The launcher's own folder in a run directory (code, env, attempts, logs)."""
    return run_dir.rstrip("/") + "/launch"


@dataclasses.dataclass(frozen=True)
class Decision:
    """``action``: ``relaunch`` (try again on this VM), ``over`` (the run is finished or failed
    for good: write STOP), or ``exit`` (the VM is going down; its next boot decides again)."""
    action: str
    reason: str

    def line(self) -> str:
        return f"{self.action}\t{self.reason}"


def decide(status: int, stage: str, finished: bool, attempt: int, max_attempts: int,
           terminating: bool = False) -> Decision:
    """What follows an attempt that ended with ``status`` in ``stage`` (setup or train).

    A finished run (exit 0 at the final step) and a permanent failure (exit 2: a user error,
    exit 3: diverged) are never relaunched; a VM that is being stopped does not relaunch
    (its next boot does); anything else is relaunched until ``max_attempts`` is reached.
    """
    if stage == "train" and status == 0 and finished:
        return Decision("over", "finished: the final step is saved")
    if stage == "train" and status in PERMANENT:
        return Decision("over", PERMANENT[status])
    what = (KNOWN.get(status, f"exit {status}") if stage == "train"
            else f"setup failed (exit {status})")
    if terminating:
        return Decision("exit", f"{what}; the VM is stopping, its next boot resumes")
    if attempt >= max_attempts:
        return Decision("over", f"gave up: {what} on attempt {attempt} of {max_attempts}")
    return Decision("relaunch", f"{what}; relaunching (attempt {attempt} of {max_attempts})")


def render(*, run_dir: str, train_command: Sequence[str], env: Sequence[str], devices: int,
           local_devices: int, hosts: int, max_attempts: int, python: str = "python3.11",
           data_from: str | None = None, tpu_lock: str = TPU_LOCK) -> str:
    """The startup script of one run. ``train_command`` is the trainer's argv after the
    interpreter (shell-quoted here; the venv's python is put in front); ``env`` holds
    KEY=VALUE words ready for the shell, so that ``"$DATA"`` can stay a live reference."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    with open(TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    command = " ".join(["env", *env, '"$VENV/bin/python"', *map(shlex.quote, train_command)])
    values = {"RUN_DIR": shlex.quote(run_dir), "LAUNCH_DIR": shlex.quote(launch_dir(run_dir)),
              "MAX_ATTEMPTS": str(int(max_attempts)), "DEVICES": str(int(devices)),
              "LOCAL_DEVICES": str(int(local_devices)), "HOSTS": str(int(hosts)),
              "PYTHON": shlex.quote(python), "DATA_FROM": shlex.quote(data_from or ""),
              "TPU_LOCK": shlex.quote(tpu_lock), "TRAIN_COMMAND": command}
    wanted = set(re.findall(r"@([A-Z_]+)@", text))
    if wanted != set(values):  # the template and this function must name the same values
        raise AssertionError(f"template values {sorted(wanted)} != {sorted(values)}")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """``decide`` for the startup script: prints ``ACTION<TAB>REASON``."""
    parser = argparse.ArgumentParser(prog="python3 -m launch.startup")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decide", help="what follows an attempt")
    d.add_argument("--status", type=int, required=True)
    d.add_argument("--stage", choices=("setup", "train"), required=True)
    d.add_argument("--finished", choices=("yes", "no"), default="no")
    d.add_argument("--attempt", type=int, required=True)
    d.add_argument("--max_attempts", type=int, required=True)
    d.add_argument("--terminating", choices=("0", "1"), default="0")
    args = parser.parse_args(argv)
    print(decide(args.status, args.stage, args.finished == "yes", args.attempt,
                 args.max_attempts, args.terminating == "1").line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
