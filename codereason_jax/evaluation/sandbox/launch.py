"""Launching one sandboxed run: the bootstrap process, its pipes, the wall clock and cleanup.

The harness side of process isolation (``bootstrap.py`` is the sandbox side): start the
bootstrap without ``preexec_fn`` (the harness may be a multi-threaded JAX process), feed it the
nonce, read stdout, stderr and the result pipe under the wall clock, kill the whole process group
and turn what came back into an :class:`ExecutionResult`.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from .config import DEFAULT_ENV_PATH, MAX_MESSAGE, SETUP_FAILED, ExecutionResult, Plan, \
    SandboxConfig

_HERE = os.path.dirname(os.path.abspath(__file__))
BOOTSTRAP = os.path.join(_HERE, "bootstrap.py")
SUPPORT_FILES = ("runner.py", "worker.py", "wire.py")  # copied into the sandbox
FORCE_REMOUNT_LOOP = False  # tests: exercise the pre-5.12 read-only fallback
# Tests: isolation steps the bootstrap fails as a kernel or container without them would
# ("unshare", "read_only", "proc"), so the refusal to run unisolated is tested on a machine
# that has the isolation. Empty outside tests.
SIMULATE_FAILURES: tuple[str, ...] = ()

lock = threading.Lock()
_base_dirs: dict[str, str] = {}


def _base_dir(config: SandboxConfig) -> str:
    """The host directory of this process's runs, with the runner's files (created once)."""
    root = config.tmp_root or tempfile.gettempdir()
    with lock:
        if root not in _base_dirs:
            path = tempfile.mkdtemp(prefix="codereason_sandbox_", dir=root)
            os.chmod(path, 0o711)  # the sandbox user may traverse it, not list it
            os.mkdir(os.path.join(path, "lib"))
            os.chmod(os.path.join(path, "lib"), 0o755)  # listable: the runner imports from it
            for name in SUPPORT_FILES:
                target = os.path.join(path, "lib", name)
                shutil.copyfile(os.path.join(_HERE, name), target)
                os.chmod(target, 0o644)
            _base_dirs[root] = path
            atexit.register(shutil.rmtree, path, True)
        return _base_dirs[root]


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


def run_once(source: str, config: SandboxConfig, plan: Plan, *, required: bool) -> tuple[
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
    env = {"PATH": DEFAULT_ENV_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONIOENCODING": "utf-8", "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [plan.python, "-S", "-B", os.path.join(base, "lib", "runner.py"), program]
    if plan.block_network:
        argv.append("--block-network")
    res_r, res_w = os.pipe()
    spec = {"result_fd": res_w, "setup_failed_code": SETUP_FAILED, "namespaces": plan.namespaces,
            "required": required, "expose": list(plan.expose), "base_dir": base,
            "workdir": workdir, "program": program,
            "support": [os.path.join(base, "lib", name) for name in SUPPORT_FILES],
            "uid": plan.uid, "gid": plan.gid,
            "disk_bytes": config.max_disk_bytes, "python": plan.python, "argv": argv, "env": env,
            "backstop_s": math.ceil(config.timeout_s) + 5,
            "force_remount_loop": FORCE_REMOUNT_LOOP,
            "simulate_failures": list(SIMULATE_FAILURES),
            "limits": {"as": config.memory_bytes, "cpu": config.cpu_limit,
                       "fsize": config.max_file_bytes, "nofile": config.max_open_files,
                       "nproc": config.max_processes}}
    cmd = [plan.python, "-I", "-S", "-B", BOOTSTRAP, json.dumps(spec)]
    proc = None
    streams = {"stdout": bytearray(), "stderr": bytearray(), "result": bytearray()}
    caps = {"stdout": config.max_output_bytes, "stderr": config.max_output_bytes,
            "result": 1 << 20}
    truncated = timed_out = False
    try:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=(res_w,), cwd="/",
                                    env={"PATH": DEFAULT_ENV_PATH, "LANG": "C.UTF-8"},
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
        if 128 < code < 128 + 65 and code != SETUP_FAILED:
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
        result.exc_message = str(record.get("exc_message"))[:MAX_MESSAGE]
    if timed_out:
        result.status, result.detail = "timeout", f"wall clock limit of {config.timeout_s:g} s"
    elif setup_error is not None or not setup:  # the program never started
        result.status = "error"
        result.detail = ("sandbox setup failed: " + (setup_error or "no detail"))[:MAX_MESSAGE]
    elif record is not None and record.get("status") == "passed" and code == 0:
        result.status = "passed"
    elif record is not None and record.get("status") == "failed":
        result.detail = f"{result.exc_type}: {result.exc_message}"[:MAX_MESSAGE]
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
