"""Deterministic fault injection: faults placed at a step, never at a time.

The fault suite (tests/test_faults.py) must kill a run at a known point, not "after a while":
on a loaded machine a timed kill lands after the run has finished. ``CODEREASON_FAILPOINT``
holds comma-separated ``NAME@STEP[:ARG]`` entries, where STEP counts completed steps:

- ``pause@K``: when K steps are done and their metrics written (before the checkpoint of step
  K is saved), print ``failpoint: paused at step K`` and stop the process (SIGSTOP). The test
  then sends SIGKILL, or SIGTERM and SIGCONT, to a process frozen exactly there.
- ``pause_saving@K``: the same, just after the (asynchronous) save of step K has started, so a
  kill lands while the checkpoint is being written.
- ``fsize@K:BYTES``: from step K on, no file may grow beyond BYTES (``RLIMIT_FSIZE``, with
  SIGXFSZ ignored so that the write fails with EFBIG): a disk that fills up at a known step.

Unset (the normal case) every call is a dictionary lookup that finds nothing.
"""

from __future__ import annotations

import os
import resource
import signal
import sys

ENV = "CODEREASON_FAILPOINT"
NAMES = ("pause", "pause_saving", "fsize")


def _parse(text: str) -> dict[tuple[str, int], str]:
    points = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, _, rest = entry.partition("@")
        step, _, arg = rest.partition(":")
        if name not in NAMES or not step.isdigit():
            raise ValueError(f"{ENV}: {entry!r} is not NAME@STEP[:ARG] with NAME in {NAMES}")
        points[(name, int(step))] = arg
    return points


_POINTS = _parse(os.environ.get(ENV, ""))


def placed(name: str, step: int) -> bool:
    """Whether the fault ``name`` is placed at ``step``."""
    return (name, step) in _POINTS


def reached(name: str, step: int) -> None:
    """Trigger the fault ``name`` if one is placed at ``step``."""
    if (name, step) not in _POINTS:
        return
    arg = _POINTS[(name, step)]
    if name == "fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(arg)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(
            resource.RLIMIT_FSIZE)[1]))
        print(f"failpoint: files limited to {limit} bytes from step {step}", flush=True)
        return
    print(f"failpoint: paused at step {step} ({name})", flush=True)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
