"""MBPP checks: the program that tests a completion against its asserts (see ``runner.py``)."""

from __future__ import annotations

import json
from typing import Sequence

from .wire import CHECK_MARKER

# The second line makes a check fail loudly if it is ever run as a plain Python program.
_GUARD = "raise SystemExit('an MBPP check: run it with codereason_jax.evaluation.sandbox')"


def mbpp_program(completion: str, tests: Sequence[str], setup_code: str = "",
                 test_imports: Sequence[str] = ()) -> str:
    """The program that checks an MBPP `completion` against its assert `tests`.

    The solution's side (``test_imports`` of sanitized MBPP, the completion, then full MBPP's
    ``test_setup_code``, which builds objects from the completion's classes) runs in a worker
    process, each part compiled separately so that a completion cannot swallow what follows (an
    open string or bracket, a trailing ``if False:``). The tests never enter that process: the
    runner evaluates each assert itself over plain values from the worker, so the verdict is
    out of the solution's reach. ``\\r\\n`` line endings are normalised.
    """
    tests = [t.replace("\r\n", "\n") for t in tests]
    if not tests or not all(t.strip() for t in tests):
        raise ValueError("mbpp_program needs at least one non-empty test")
    parts = {"test_imports": "\n".join(test_imports).replace("\r\n", "\n"),
             "completion": completion.replace("\r\n", "\n"),
             "setup_code": setup_code.replace("\r\n", "\n"), "tests": tests}
    return "\n".join([CHECK_MARKER, _GUARD, json.dumps(parts)]) + "\n"
