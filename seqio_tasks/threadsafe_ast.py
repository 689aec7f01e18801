"""Serialise ``ast.parse`` across threads, process-wide.

CPython 3.11 keeps the AST constructor's recursion counter in per-interpreter state, so two
threads building Python ASTs at once corrupt it and one of them fails with "SystemError: AST
constructor recursion depth mismatch" (python/cpython#106905 and related reports). Our data
layer makes that concurrent: tf.data runs each source's Python generator in its own thread
(the embedded corpora parse standard-library files there), while the thread that builds a
dataset runs TensorFlow's autograph, which parses the mapped functions' source, and the
trainer builds datasets from its prefetch thread too. Every caller of ``ast.parse`` (including
``ast.literal_eval`` and third-party parsers such as gast) looks the function up on the module,
so replacing it with a locked wrapper covers them all; parsing is a small part of the work.
"""

from __future__ import annotations

import ast
import functools
import threading

_LOCK = threading.RLock()


def install() -> None:
    """Wrap ``ast.parse`` in a process-wide lock (idempotent)."""
    if getattr(ast.parse, "_codereason_locked", False):
        return
    original = ast.parse

    @functools.wraps(original)
    def parse(*args, **kwargs):
        with _LOCK:
            return original(*args, **kwargs)

    parse._codereason_locked = True  # type: ignore[attr-defined]
    ast.parse = parse
