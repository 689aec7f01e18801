"""The one place where the launcher runs commands, or only prints them under --dry_run."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from typing import Sequence

from launch.topology import LaunchError


@dataclasses.dataclass(frozen=True)
class Result:
    """What a query gives back: exit status and captured output (pretended in a dry run)."""
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
        try:
            code = subprocess.call(argv)
        except FileNotFoundError:
            raise LaunchError(f"{argv[0]} is not installed (or not on PATH): {shlex.join(argv)}"
                              ) from None
        if code:
            raise LaunchError(f"command failed with exit status {code}: {shlex.join(argv)}")

    def query(self, argv: Sequence[str], dry_run_answer: Result = Result(0)) -> Result:
        """Run a command and capture its output (nothing is raised for a non-zero status)."""
        argv = [str(a) for a in argv]
        if self.dry_run:
            print(shlex.join(argv), file=self.out, flush=True)
            return dry_run_answer
        try:
            completed = subprocess.run(argv, capture_output=True, text=True)
        except FileNotFoundError:  # what a shell reports as status 127: never retried
            return Result(127, "", f"{argv[0]}: command not found")
        return Result(completed.returncode, completed.stdout, completed.stderr)
