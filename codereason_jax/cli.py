"""One error surface for every command line of the project.

A user's mistake (a bad flag, gin binding or file, a run directory that does not fit the
command, data that cannot be read) prints one ``error: ...`` line to stderr and exits 2; the
traceback behind it only with ``--debug`` or ``CODEREASON_DEBUG=1``. A failed write to a
run's storage (disk full, permission, quota) exits 4: the run's last checkpoint is intact and
the same command resumes once the storage is fixed. Anything else is our bug and keeps its
traceback.

Exit status: 0 done, 1 some work failed (reported above), 2 fix the command or its input,
3 training diverged (non-finite steps), 4 the run's storage refused a write, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Sequence

DEBUG_ENV = "CODEREASON_DEBUG"
USAGE, DIVERGED, WRITE_FAILED, INTERRUPTED = 2, 3, 4, 130


class UserError(Exception):
    """A mistake the user can fix; the message says what and how."""


class RunWriteError(Exception):
    """A run's storage refused a write; the message names the path and what failed."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that are the user's to fix (imported here, not at module load, so
    that a command line pays only for what it uses)."""
    from codereason_jax.checkpoints import CheckpointError
    from codereason_jax.model.config import ConfigError
    from codereason_jax.partitioning import PartitioningError
    from seqio_tasks.packing import OverlongExampleError
    from seqio_tasks.schedules import ScheduleError
    from seqio_tasks.sources.files import DataFileError

    return (UserError, ConfigError, CheckpointError, PartitioningError, ScheduleError,
            DataFileError, OverlongExampleError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError, PermissionError)


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line, without the context lines gin appends."""
    lines = [line.strip() for line in str(err).splitlines()
             if line.strip() and not line.strip().startswith("In call to configurable")
             and not line.strip().startswith("In file ")]
    return " ".join(lines) or type(err).__name__


def run(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` (``--debug`` removed) and turn user errors into one line and a code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return INTERRUPTED
    except RunWriteError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        return WRITE_FAILED
    except user_errors() as err:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        return USAGE


def add_debug_flag(parser) -> None:
    """Document ``--debug`` in a parser's help (``run`` removes it before parsing)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback behind an error (also {DEBUG_ENV}=1)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors read like every other error: one ``error:`` line, exit 2."""

    def error(self, message: str):
        self.exit(USAGE, f"error: {message} (see {self.prog} --help)\n")
