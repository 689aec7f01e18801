"""The execution sandbox: each attack must end as a failed (or timed-out) run, harness unharmed.

The attack programs try everything they can and finish with ``assert <attack worked>``, so a
``failed``/``timeout`` status means every attempt failed inside the sandbox; the tests then check
the side effects from outside (files, processes, the server socket, the captured output).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from codereason_jax.evaluation import sandbox as sb
from codereason_jax.evaluation.sandbox import harness, launch, runner, wire

REPO = Path(__file__).resolve().parents[1]
MBPP_DIR = REPO.parent / "shared" / "data" / "mbpp"
CFG = sb.SandboxConfig(timeout_s=2.0)
SLACK_S = 2.0  # start-up, teardown and a loaded 2-core machine on top of the timeout


@pytest.fixture(scope="module")
def iso() -> dict:
    return sb.isolation_report(CFG)


def run(source: str, config: sb.SandboxConfig = CFG) -> sb.ExecutionResult:
    return sb.run_program(source, config)


def assert_failed(result: sb.ExecutionResult, *statuses: str) -> None:
    allowed = statuses or ("failed",)
    assert result.status in allowed, result


def sandbox_processes(uid: int | None) -> list[tuple[int, str]]:
    """Processes left from sandbox runs: the runner's command line, or the sandbox uid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        proc_uid = int(next(line for line in status.splitlines()
                            if line.startswith("Uid:")).split()[1])
        if "runner.py" in cmdline or "worker.py" in cmdline or "codereason_sandbox_" in cmdline or (
                uid is not None and proc_uid == uid):
            found.append((int(name), cmdline[:200]))
    return found


def wait_no_sandbox_processes(uid: int | None, before: list, timeout_s: float = 2.0) -> list:
    """New sandbox processes (not in `before`) still alive after `timeout_s`."""
    known = {pid for pid, _ in before}
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in sandbox_processes(uid) if p[0] not in known]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


# ------------------------------------------------------------------------------------ basics

def test_isolation_on_this_machine(iso):
    assert Path(iso["python"]).is_file()
    if os.geteuid() == 0:
        assert iso["uid"] not in (None, 0)
    if iso["warnings"]:
        pytest.skip("degraded sandbox on this machine: " + "; ".join(iso["warnings"]))
    assert iso["namespaces"] and iso["read_only_root"] and iso["network"].startswith("namespace")


def test_passing_program_and_output():
    result = run("import sys\nprint('hello')\nprint('err', file=sys.stderr)\nassert 1 + 1 == 2\n")
    assert result.status == "passed", result
    assert result.passed and result.exit_code == 0
    assert result.stdout == "hello\n" and result.stderr == "err\n"
    assert 0 < result.duration_s < CFG.timeout_s


def test_program_runs_unprivileged_in_an_empty_temp_dir(iso):
    result = run("import os, json\n"
                 "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'cwd': os.getcwd(),"
                 " 'files': sorted(os.listdir('.')), 'env': dict(os.environ),"
                 " 'hashseed': hash('abc')}))\n")
    assert result.status == "passed", result
    info = json.loads(result.stdout)
    if os.geteuid() == 0:
        assert info["uid"] == info["euid"] == iso["uid"] != 0
    assert info["files"] == ["program.py"]
    assert "codereason_sandbox_" in info["cwd"] and info["env"]["HOME"] == info["cwd"]
    assert set(info["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONHASHSEED",
                                "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONNOUSERSITE",
                                "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "LC_CTYPE"}
    again = json.loads(run("import json\nprint(json.dumps({'hashseed': hash('abc')}))").stdout)
    assert again["hashseed"] == info["hashseed"]  # PYTHONHASHSEED=0: repeatable set order


def test_failing_assert():
    result = run("def add(a, b):\n    return a - b\nassert add(1, 2) == 3, 'add is wrong'\n")
    assert_failed(result)
    assert result.exc_type == "AssertionError" and result.exc_message == "add is wrong"
    assert result.exit_code == 1 and "add is wrong" in result.stderr


def test_syntax_and_runtime_errors():
    result = run("def f(:\n    pass\n")
    assert_failed(result)
    assert result.exc_type == "SyntaxError"
    result = run("undefined_name\n")
    assert_failed(result)
    assert result.exc_type == "NameError"


def test_exits_are_not_passes():
    """sys.exit(0), os._exit(0), exit() and a forked child that finishes do not count as a pass."""
    for source in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "exit()\n",
                   "raise KeyboardInterrupt\n"):
        result = run(source)
        assert_failed(result)
    # The child of a fork returns from the program too; only the main process may report.
    result = run("import os, time\nif os.fork() == 0:\n    pass\nelse:\n    time.sleep(0.2)\n"
                 "    raise ValueError('parent fails')\n")
    assert_failed(result)
    assert result.exc_type == "ValueError"


def test_output_is_capped_and_the_pipe_is_drained():
    config = sb.SandboxConfig(timeout_s=1.5, max_output_bytes=4096)
    start = time.monotonic()
    result = run("while True:\n    print('x' * 10000)\n", config)
    assert result.status == "timeout", result
    assert len(result.stdout.encode()) <= 4096 and result.output_truncated
    assert time.monotonic() - start < config.timeout_s + SLACK_S


# ------------------------------------------------------------------------------ time limits

def test_infinite_loop_times_out_within_bound():
    start = time.monotonic()
    result = run("while True:\n    pass\n")
    elapsed = time.monotonic() - start
    assert result.status == "timeout", result
    assert CFG.timeout_s <= elapsed < CFG.timeout_s + SLACK_S


def test_loop_swallowing_every_exception_times_out():
    source = ("import signal\n"
              "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU):\n"
              "    signal.signal(s, signal.SIG_IGN)\n"
              "while True:\n"
              "    try:\n"
              "        while True:\n"
              "            pass\n"
              "    except BaseException:\n"
              "        pass\n")
    start = time.monotonic()
    result = run(source)
    assert result.status == "timeout", result
    assert time.monotonic() - start < CFG.timeout_s + SLACK_S


def test_sleep_is_bounded_by_the_wall_clock():
    start = time.monotonic()
    result = run("import time\ntime.sleep(1000)\n")
    assert result.status == "timeout", result
    assert time.monotonic() - start < CFG.timeout_s + SLACK_S


def test_cpu_time_limit():
    config = sb.SandboxConfig(timeout_s=10.0, cpu_seconds=1)
    result = run("while True:\n    pass\n", config)
    assert result.status == "timeout", result
    assert "CPU" in result.detail and result.duration_s < config.timeout_s  # not the wall clock


# -------------------------------------------------------------------------- resource attacks

def test_fork_bomb_is_contained_and_cleaned_up(iso):
    config = sb.SandboxConfig(timeout_s=3.0)
    source = ("import os\n"
              "while True:\n"
              "    try:\n"
              "        os.fork()\n"
              "    except BaseException:\n"
              "        pass\n")
    before = sandbox_processes(iso["uid"])
    start = time.monotonic()
    result = run(source, config)
    elapsed = time.monotonic() - start
    assert_failed(result, "failed", "timeout")
    assert elapsed < config.timeout_s + SLACK_S + 1
    assert wait_no_sandbox_processes(iso["uid"], before) == []
    # The machine still works for the next program.
    assert run("print('ok')").status == "passed"


def test_subprocess_bomb_is_contained(iso):
    source = ("import subprocess, sys\n"
              "procs = []\n"
              "while True:\n"
              "    procs.append(subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(100)']))\n")
    before = sandbox_processes(iso["uid"])
    result = run(source)
    assert_failed(result, "failed", "timeout")
    assert wait_no_sandbox_processes(iso["uid"], before) == []


def test_memory_bomb_fails():
    for source in ("x = bytearray(10 * 2**30)\n",
                   "x = [0] * (10 * 2**30 // 8)\n",
                   "chunks = []\nwhile True:\n    chunks.append(b'x' * (64 << 20))\n"):
        result = run(source, sb.SandboxConfig(timeout_s=10.0))
        assert_failed(result)
        assert result.exc_type == "MemoryError", result


def test_large_files_fail():
    result = run("with open('big', 'wb') as f:\n    f.write(b'x' * (64 << 20))\n")
    assert_failed(result)
    assert result.exc_type in ("OSError", "MemoryError"), result


def test_disk_quota_of_the_temp_dir(iso):
    if not iso["namespaces"]:
        pytest.skip("the size-limited tmpfs working directory needs a mount namespace")
    result = run("for i in range(100):\n"
                 "    with open('f%d' % i, 'wb') as f:\n"
                 "        f.write(b'x' * (8 << 20))\n")
    assert_failed(result)
    assert result.exc_type == "OSError" and "space" in result.exc_message, result


# ------------------------------------------------------------------------ file system attacks

@pytest.fixture
def open_dir():
    """A world-writable directory (not sticky) outside the sandbox, with a world-writable file."""
    path = Path("/tmp") / f"sandbox_test_{secrets.token_hex(6)}"
    path.mkdir()
    path.chmod(0o777)
    sentinel = path / "sentinel.txt"
    sentinel.write_text("keep me")
    sentinel.chmod(0o666)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_writes_outside_the_temp_dir_fail(iso, open_dir):
    tag = secrets.token_hex(6)
    targets = [f"/tmp/pwned_{tag}", str(REPO / f"pwned_{tag}"), str(open_dir / f"pwned_{tag}"),
               f"/dev/shm/pwned_{tag}", f"/var/tmp/pwned_{tag}", str(Path.home() / f"pwned_{tag}")]
    source = (f"import os\nwritten = []\nfor path in {targets!r}:\n"
              "    try:\n"
              "        with open(path, 'w') as f:\n"
              "            f.write('pwned')\n"
              "        written.append(path)\n"
              "    except OSError:\n"
              "        pass\n"
              "print(written)\n"
              "assert written, 'no write succeeded'\n")
    result = run(source)
    if not iso["namespaces"]:
        # World-writable directories cannot be protected without a mount namespace.
        for path in targets:
            Path(path).unlink(missing_ok=True)
        pytest.skip("no mount namespace on this machine")
    assert_failed(result)
    assert result.stdout.strip() == "[]"
    for path in targets:
        assert not Path(path).exists(), path


def test_deletes_and_overwrites_outside_the_temp_dir_fail(iso, open_dir):
    sentinel = open_dir / "sentinel.txt"
    root_owned = REPO / "setup.py"
    before = root_owned.read_bytes()
    source = ("import os, shutil\ndone = []\n"
              f"for action, path in [('remove', {str(sentinel)!r}), ('rename', {str(sentinel)!r}),"
              f" ('truncate', {str(sentinel)!r}), ('rmtree', {str(open_dir)!r}),"
              f" ('truncate', {str(root_owned)!r}), ('remove', {str(root_owned)!r})]:\n"
              "    try:\n"
              "        if action == 'remove':\n"
              "            os.remove(path)\n"
              "        elif action == 'rename':\n"
              "            os.rename(path, path + '.moved')\n"
              "        elif action == 'truncate':\n"
              "            open(path, 'w').close()\n"
              "        else:\n"
              "            shutil.rmtree(path)\n"
              "        done.append((action, path))\n"
              "    except OSError:\n"
              "        pass\n"
              "assert done, 'nothing deleted'\n")
    result = run(source)
    if not iso["namespaces"]:
        pytest.skip("world-writable directories cannot be protected without a mount namespace")
    assert_failed(result)
    assert sentinel.read_text() == "keep me"
    assert root_owned.read_bytes() == before


def test_read_only_fallback_for_old_kernels(iso, monkeypatch, open_dir):
    """Without mount_setattr (Linux < 5.12) every mount is remounted read-only one by one."""
    if not iso["namespaces"]:
        pytest.skip("no mount namespace on this machine")
    monkeypatch.setattr(launch, "FORCE_REMOUNT_LOOP", True)
    target = open_dir / "pwned"
    result = run("import os\n"
                 "with open('inside.txt', 'w') as f:\n    f.write('ok')\n"
                 f"open({str(target)!r}, 'w').write('pwned')\n")
    assert_failed(result)
    assert result.exc_type == "OSError" and "Read-only" in result.exc_message, result
    assert not target.exists()


def test_reading_the_parents_files_fails(iso, tmp_path):
    if iso["uid"] is None:
        pytest.skip("the harness is not root: the program runs as the harness's own user")
    secret = secrets.token_hex(16)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    open_file = Path("/tmp") / f"sandbox_secret_{secrets.token_hex(6)}"
    open_file.write_text(secret)
    open_file.chmod(0o600)
    try:
        source = ("import glob\nfound = []\n"
                  f"for path in [{str(secret_file)!r}, {str(open_file)!r}, '/etc/shadow',"
                  " '/root/.bash_history'] + glob.glob('/root/*'):\n"
                  "    try:\n"
                  "        with open(path) as f:\n"
                  "            found.append(f.read())\n"
                  "    except OSError:\n"
                  "        pass\n"
                  "print(found)\n"
                  "assert found, 'nothing read'\n")
        result = run(source)
        assert_failed(result)
        assert secret not in result.stdout + result.stderr
    finally:
        open_file.unlink()


def test_reading_the_parents_environment_fails(iso, monkeypatch):
    if iso["uid"] is None and not iso["namespaces"]:
        pytest.skip("non-root harness without namespaces: /proc/<pid>/environ is readable")
    name, secret = "CODEREASON_SANDBOX_SECRET", secrets.token_hex(16)
    monkeypatch.setenv(name, secret)
    source = ("import os\nseen = [repr(dict(os.environ))]\n"
              f"for pid in [os.getppid(), {os.getpid()}, {os.getppid()}, 1] + "
              "[int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
              "    try:\n"
              "        with open('/proc/%d/environ' % pid, 'rb') as f:\n"
              "            seen.append(f.read().decode(errors='replace'))\n"
              "    except OSError:\n"
              "        pass\n"
              "text = '\\n'.join(seen)\n"
              "print(text)\n"
              f"assert {name!r} in text, 'secret not found'\n")
    result = run(source)
    assert_failed(result)
    assert secret not in result.stdout + result.stderr and name not in result.stdout


# --------------------------------------------------------------------------- process attacks

def test_killing_the_parent_fails(iso):
    if iso["uid"] is None and not iso["namespaces"]:
        pytest.skip("non-root harness without namespaces: the program may signal the harness")
    bystander_user = {"user": iso["uid"], "group": iso["gid"]} if iso["uid"] is not None else {}
    bystander = subprocess.Popen(["sleep", "60"], **bystander_user)  # same uid as the program
    try:
        source = ("import os, signal\nkilled = []\n"
                  f"for pid in (os.getppid(), {os.getpid()}, {os.getppid()}, 1, {bystander.pid}):\n"
                  "    try:\n"
                  "        os.kill(pid, signal.SIGKILL)\n"
                  "        killed.append(pid)\n"
                  "    except OSError:\n"
                  "        pass\n"
                  f"for pgid in ({os.getpgrp()}, os.getpgid(os.getppid()) or 1):\n"
                  "    try:\n"
                  "        os.killpg(pgid, signal.SIGKILL)\n"
                  "        killed.append(-pgid)\n"
                  "    except OSError:\n"
                  "        pass\n"
                  "try:\n"
                  "    os.kill(-1, signal.SIGKILL)  # every process this user may signal\n"
                  "except OSError:\n"
                  "    pass\n"
                  "assert killed, 'nothing killed'\n")
        result = run(source)
        assert_failed(result)
        if iso["namespaces"]:
            assert bystander.poll() is None, "a process outside the sandbox was killed"
    finally:
        bystander.kill()
        bystander.wait()
    # This process (and its process group) survived: the next run still works.
    assert run("print('alive')").stdout == "alive\n"


DAEMONS = ("import os, subprocess, sys\n"
           "cmd = [sys.executable, '-c', 'import time; time.sleep(1000)', %r]\n"
           "subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,\n"
           "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
           "if os.fork() == 0:  # classic double-fork daemon that keeps stdout open\n"
           "    os.setsid()\n"
           "    if os.fork() == 0:\n"
           "        os.execv(sys.executable, cmd)\n"
           "    os._exit(0)\n"
           "print('spawned', flush=True)\n")


@pytest.mark.parametrize("namespaces", [True, False], ids=["isolated", "no-namespaces"])
@pytest.mark.parametrize("ending", ["exit", "timeout"])
def test_grandchildren_and_daemons_are_killed(iso, namespaces, ending):
    """Daemons that left the process group die: PID namespace, else the subreaper supervisor."""
    marker = f"daemon_marker_{secrets.token_hex(6)}"
    source = DAEMONS % marker + ("import time\ntime.sleep(1000)\n" if ending == "timeout" else "")
    config = sb.SandboxConfig(timeout_s=2.0, namespaces=namespaces)
    before = sandbox_processes(iso["uid"])
    start = time.monotonic()
    result = run(source, config)
    assert result.status == ("passed" if ending == "exit" else "timeout"), result
    assert result.stdout == "spawned\n"
    assert time.monotonic() - start < config.timeout_s + SLACK_S, "the harness waited for them"
    leftovers = [p for p in sandbox_processes(None) if marker in p[1]]
    for pid, _ in leftovers:  # never leave them behind, even when the test fails
        os.kill(pid, 9)
    assert leftovers == []
    assert wait_no_sandbox_processes(iso["uid"], before) == []


# -------------------------------------------------------------------------------- network

def test_sockets_cannot_reach_the_host(iso):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    port = server.getsockname()[1]
    unix_name = f"\0codereason_sandbox_test_{secrets.token_hex(6)}"
    unix_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_server.bind(unix_name)
    unix_server.listen(8)
    unix_server.settimeout(0.1)
    accepted: list = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            for srv in (server, unix_server):
                try:
                    conn, _ = srv.accept()
                except (socket.timeout, OSError):
                    continue
                accepted.append(conn.recv(100))
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        source = ("import socket\nreached = []\n"
                  f"for family, address in [(socket.AF_INET, ('127.0.0.1', {port})),"
                  f" (socket.AF_UNIX, {unix_name!r}), (socket.AF_INET, ('8.8.8.8', 53))]:\n"
                  "    try:\n"
                  "        s = socket.socket(family, socket.SOCK_STREAM)\n"
                  "        s.settimeout(1)\n"
                  "        s.connect(address)\n"
                  "        s.sendall(b'pwned')\n"
                  "        reached.append(address)\n"
                  "    except OSError:\n"
                  "        pass\n"
                  "assert reached, 'no connection'\n")
        result = run(source)
        assert_failed(result)
        time.sleep(0.3)
        assert accepted == []
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        unix_server.close()
    assert not thread.is_alive()


def test_degraded_mode_without_namespaces_warns_and_blocks_sockets(monkeypatch, caplog):
    monkeypatch.setattr(harness, "_plans", {})
    config = sb.SandboxConfig(timeout_s=2.0, namespaces=False)
    with caplog.at_level(logging.WARNING, logger=sb.__name__):
        report = sb.isolation_report(config)
    assert not report["namespaces"] and report["network"] == "block"
    assert any("namespaces disabled" in r.getMessage() for r in caplog.records)
    assert any("in-process block" in r.getMessage() for r in caplog.records)
    assert sb.run_program("print('ok')", config).status == "passed"
    result = sb.run_program("import socket\nsocket.create_connection(('127.0.0.1', 9), 1)\n",
                            config)
    assert_failed(result)
    assert result.exc_type == "PermissionError"
    with pytest.raises(sb.SandboxUnavailable):
        sb.isolation_report(sb.SandboxConfig(namespaces=False, require_isolation=True))
    with pytest.raises(sb.SandboxUnavailable):
        sb.isolation_report(sb.SandboxConfig(namespaces=False, network="namespace"))


# ----------------------------------------------------------------------------- check_many

def test_check_many_keeps_order_and_runs_in_parallel():
    programs = ["while True: pass\n"] + ["import time\ntime.sleep(0.5)\n"] * 6 + ["assert 0\n"]
    start = time.monotonic()
    results = sb.check_many(programs, sb.SandboxConfig(timeout_s=1.5, workers=2))
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == ["timeout"] + ["passed"] * 6 + ["failed"]
    serial = 1.5 + 6 * 0.5  # lower bound of a one-at-a-time run; two workers need about half
    assert elapsed < serial, elapsed
    assert sb.check_many([], CFG) == []


def test_setup_failure_is_an_error_not_a_pass_or_fail(iso, monkeypatch):
    if not iso["namespaces"]:
        pytest.skip("needs the namespace set-up path")
    plan = harness._plan_for(CFG)
    broken = dataclasses.replace(plan, expose=("/nonexistent_sandbox_dir",))
    monkeypatch.setattr(harness, "_plan_for", lambda config: broken)
    result = sb.run_program("print('never runs')", CFG)
    assert result.status == "error" and "sandbox setup failed" in result.detail, result
    assert result.stdout == ""


# ----------------------------------------------------------------------------------- MBPP

def test_mbpp_program_passes_and_fails():
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    assert run(sb.mbpp_program("def add(a, b):\r\n    return a + b\r\n", tests)).passed
    result = run(sb.mbpp_program("def add(a, b):\n    return a * b\n", tests))
    assert_failed(result)
    assert result.exc_type == "AssertionError" and "test 0 failed" in result.exc_message
    setup = "box = Box(3)"
    program = sb.mbpp_program("import math\nclass Box:\n    def __init__(self, n):\n"
                              "        self.n = n\n", ["assert box.n == 3", "assert math.pi > 3"],
                              setup_code=setup, test_imports=["import math"])
    assert run(program).passed
    with pytest.raises(ValueError):
        sb.mbpp_program("def f(): pass", [])


@pytest.mark.parametrize("completion", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "def add(a, b):\n    return 0\nx = '''\n",  # an open string would swallow inline tests
    "def add(a, b):\n    return 0\nif False:\n",  # and so would an open block
    "def add(a, b):\n    return 0\nimport builtins\nbuiltins.exec = lambda *a, **k: None\n"
    "builtins.compile = lambda *a, **k: None\n",
    "def add(a, b):\n    return 0\nraise SystemExit\n",
])
def test_mbpp_completion_cannot_skip_the_tests(completion):
    result = run(sb.mbpp_program(completion, ["assert add(1, 2) == 3"]))
    assert_failed(result)


def _load_mbpp() -> tuple[list[dict], list[dict]]:
    if not MBPP_DIR.is_dir():
        pytest.skip(f"{MBPP_DIR} is absent")
    sanitized = json.loads((MBPP_DIR / "sanitized-mbpp.json").read_text())
    with open(MBPP_DIR / "mbpp.jsonl") as f:
        full = [json.loads(line) for line in f if line.strip()]
    return sanitized, full


def _mbpp_programs(rows: list[dict]) -> list[str]:
    return [sb.mbpp_program(r["code"], r["test_list"], r.get("test_setup_code", ""),
                            r.get("test_imports", ())) for r in rows]


def _check_references(rows: list[dict]) -> None:
    results = sb.check_many(_mbpp_programs(rows), sb.SandboxConfig())
    failures = {r["task_id"]: (x.status, x.detail[:200]) for r, x in zip(rows, results)
                if not x.passed}
    assert failures == {}


def _sample(rows: list[dict], n: int) -> list[dict]:
    rows = sorted(rows, key=lambda r: r["task_id"])
    step = max(1, len(rows) // n)
    return rows[::step][:n]


def test_mbpp_reference_solutions_sample():
    sanitized, full = _load_mbpp()
    assert (len(sanitized), len(full)) == (427, 974)
    _check_references(_sample(sanitized, 40) + _sample(full, 40))


@pytest.mark.slow
def test_mbpp_reference_solutions_all():
    sanitized, full = _load_mbpp()
    start = time.monotonic()
    _check_references(sanitized + full)
    print(f"{len(sanitized) + len(full)} programs in {time.monotonic() - start:.1f} s")


# ------------------------------------------------------------------- forging an MBPP verdict
# Each wrong solution (add returns 0, or the wrong sum) tries to turn its failure into a pass.

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(2, 5) == 7", "assert add(-1, 1) == 0"]

WALK_THE_STACK = """
import gc, sys

def _clear_tests():
    frame = sys._getframe()
    while frame is not None:  # every caller's locals and globals
        for scope in (frame.f_locals, frame.f_globals):
            for value in list(scope.values()):
                if isinstance(value, dict) and isinstance(value.get("tests"), list):
                    value["tests"][:] = []
                elif isinstance(value, list) and any(
                        isinstance(v, str) and "assert" in v for v in value):
                    value[:] = []
        frame = frame.f_back
    for obj in gc.get_objects():  # and everything else on the heap
        if isinstance(obj, dict) and isinstance(obj.get("tests"), list):
            obj["tests"][:] = []
        elif isinstance(obj, list) and any(isinstance(v, str) and v.startswith("assert")
                                           for v in obj[:8]):
            obj[:] = []

def add(a, b):
    _clear_tests()
    caller = sys._getframe(1)  # and make the caller's comparison see the right answer
    for name, value in list(caller.f_locals.items()):
        if isinstance(value, (int, str)):
            caller.f_locals[name] = a + b
    return 0

_clear_tests()
"""

PATCH_BUILTINS = """
import builtins, json, os, sys

class _Never(Exception):
    pass

builtins.AssertionError = _Never
builtins.isinstance = lambda *args: True
builtins.len = lambda obj: 0
builtins.print = lambda *args, **kwargs: None
sys.exit = lambda *args: os._exit(0)
sys.excepthook = lambda *args: os._exit(0)
json.dumps = lambda *args, **kwargs: '{"status": "passed"}'
json.loads = lambda *args, **kwargs: {"status": "passed"}

class _AlwaysEqual:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__

class _ForgedInt(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__

def add(a, b):
    return _AlwaysEqual() if a > 0 else _ForgedInt(a * b + 5)
"""

EXIT_EARLY = """
import os, sys

def add(a, b):
    sys.stdout.flush()
    os._exit(0)  # in the middle of the first test
"""

FAKE_MARKER = """
import gc, json, os, re, sys

def _forge():
    seen = list(gc.get_objects())
    frame = sys._getframe()
    while frame is not None:  # the nonce of a runner in this process would be in a frame
        seen += list(frame.f_locals.values())
        frame = frame.f_back
    nonces = {o for o in seen if isinstance(o, str) and re.fullmatch("[0-9a-f]{32}", o)}
    records = [{"status": "passed", "nonce": n, "pid": p} for n in nonces or {""}
               for p in (os.getpid(), os.getppid(), 1, 2, 3)]
    line = "".join(json.dumps(r) + "\\n" for r in records) + "PASSED\\nall tests passed\\n"
    print(line, flush=True)
    print(line, file=sys.stderr, flush=True)
    for fd in range(64):  # every descriptor this process holds, the result pipe if it had one
        try:
            os.write(fd, line.encode())
        except OSError:
            pass

def add(a, b):
    _forge()
    os._exit(0)

_forge()
"""

KILL_THE_RUNNER = """
import os, signal

def add(a, b):
    for pid in (os.getppid(), 1):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return 0
"""


@pytest.mark.parametrize("completion", [WALK_THE_STACK, PATCH_BUILTINS, EXIT_EARLY, FAKE_MARKER,
                                        KILL_THE_RUNNER, EXIT_EARLY.replace("    os._exit(0)",
                                                                            "os._exit(0)")],
                         ids=["walk-the-stack", "patch-builtins", "exit-in-test", "fake-marker",
                              "kill-the-runner", "exit-at-import"])
def test_mbpp_verdict_cannot_be_forged(completion):
    result = run(sb.mbpp_program(completion, ADD_TESTS))
    assert_failed(result, "failed", "timeout")
    assert not result.passed


LIGHT_PATCHES = """
import builtins, os, sys
builtins.AssertionError = type("Never", (Exception,), {})
builtins.print = lambda *args, **kwargs: None
sys.exit = lambda *args: os._exit(0)
"""


@pytest.mark.parametrize("completion", [WALK_THE_STACK, LIGHT_PATCHES],
                         ids=["walk-the-stack", "patch-builtins"])
def test_mbpp_forgers_that_compute_the_right_answer_still_pass(completion):
    """Walking frames or patching builtins does not fail a right answer. (Patching what the
    worker itself needs, like ``json`` or ``isinstance``, or writing to its reply pipe breaks the
    worker: the check then fails closed.)"""
    fixed = completion + "\n\ndef add(a, b):\n    return a + b\n"
    result = run(sb.mbpp_program(fixed, ADD_TESTS))
    assert result.status == "passed", result


def test_mbpp_correct_solutions_of_many_shapes_pass():
    cases = [
        ("def evens(xs):\n    return (x for x in xs if x % 2 == 0)\n",
         ["assert list(evens([1, 2, 4])) == [2, 4]",
          "assert sorted(evens(range(5))) == [0, 2, 4]"]),
        ("from collections import Counter\ndef freq(xs):\n    return Counter(xs)\n",
         ["assert freq('aab') == {'a': 2, 'b': 1}", "assert freq([]) == Counter()"]),
        ("import math\ndef area(r):\n    return math.pi * r * r\n",
         ["assert math.isclose(area(1), 3.14159, rel_tol=1e-3)", "assert area(0) == 0"]),
        ("def drop(xs, kind):\n    return [x for x in xs if not isinstance(x, kind)]\n",
         ["assert drop((1, 'a', 2.5), int) == ['a', 2.5]", "assert drop((), str) == []"]),
        ("class Stack:\n    def __init__(self):\n        self.items = []\n"
         "    def push(self, x):\n        self.items.append(x)\n        return self\n"
         "    def __len__(self):\n        return len(self.items)\n"
         "def size(s):\n    return len(s)\n",
         ["assert size(stack) == 2", "assert len(stack.push(3)) == 3", "assert stack.items[0] == 1",
          "assert str(stack.items) == '[1, 2, 3]'"]),
        ("def pair(a, b):\n    return {(a, b): b'x', 'c': 1j, 'f': frozenset({a})}\n",
         ["assert pair(1, 2) == {(1, 2): b'x', 'c': 1j, 'f': frozenset({1})}",
          "assert pair(1, 2)[(1, 2)] is not None"]),
    ]
    setup = "stack = Stack()\nstack.push(1)\nstack.push(2)"
    programs = [sb.mbpp_program(code, tests, setup_code=setup if "Stack" in code else "")
                for code, tests in cases]
    results = sb.check_many(programs, CFG)
    assert [r.status for r in results] == ["passed"] * len(cases), results


def test_mbpp_errors_keep_their_type():
    result = run(sb.mbpp_program("def other():\n    pass\n", ["assert add(1, 2) == 3"]))
    assert_failed(result)
    assert result.exc_type == "NameError", result
    result = run(sb.mbpp_program("def add(a, b):\n    return a / 0\n", ["assert add(1, 2) == 3"]))
    assert result.exc_type == "ZeroDivisionError", result
    result = run(sb.mbpp_program("def add(a, b):\n    return a +\n", ["assert add(1, 2) == 3"]))
    assert result.exc_type == "SyntaxError", result


def test_mbpp_check_hides_the_tests_and_the_result_pipe_from_the_solution():
    completion = ("import os\n"
                  "print(sorted(os.listdir('.')))\n"
                  "try:\n    os.fstat(3)\n    print('fd 3 open')\n"
                  "except OSError:\n    print('fd 3 closed')\n"
                  "def add(a, b):\n    return a + b\n")
    result = run(sb.mbpp_program(completion, ["assert add(20, 22) == 42"]))
    assert result.status == "passed", result
    assert result.stdout == "[]\nfd 3 closed\n"


# ------------------------------------------------------------------- the runner's wire format

def test_wire_round_trip_builds_genuine_values():
    class Forged(tuple):
        def __eq__(self, other):
            return True

        __hash__ = tuple.__hash__

    values = [None, True, 3, -2.5, float("inf"), "s", b"\x00b", 1 + 2j, (1, [2, {3: "x"}]),
              {1, 2}, frozenset({"a"}), range(1, 9, 2), int, str]
    for value in values:
        assert wire.decode(json.loads(wire.dumps({"v": wire.encode(value)}))["v"]) == value
    decoded = wire.decode(wire.encode(Forged((1, 2))))
    assert type(decoded) is tuple and decoded != (3, 4)
    assert list(wire.decode(wire.encode(iter([1, 2])))) == [1, 2]
    with pytest.raises(TypeError):
        wire.encode(lambda: 0)
    for bad in (["e", "exec"], ["T", "type"], ["h", 1], ["s", [["l", []]]], [1, 2], {"a": 1}):
        with pytest.raises(wire.WireError):
            wire.decode(bad)


def test_runner_sees_which_names_the_solution_binds():
    bound, imports = runner.solution_bindings(
        "import math\nimport os.path as osp\nfrom re import sub\nX = 1\nfor i in []:\n    pass\n"
        "def f():\n    global G\n    local = 2\nclass C:\n    attr = 3\n")
    assert bound == {"X", "i", "f", "G", "C"}
    assert imports == {"math": ("math", None), "osp": ("os.path", None), "sub": ("re", "sub")}
    trusted, remote = runner.trusted_globals({
        "test_imports": "import math", "setup_code": "obj = f()",
        "completion": "import re as rx\nfrom collections import Counter\ndef f():\n    pass\n"
                      "sorted = 1\n",
        "tests": ["assert f(math.pi, rx, Counter, obj, sorted, len, ghost)"]})
    assert remote == {"f", "obj", "sorted", "ghost"}  # asked of the worker; the rest is genuine
    assert trusted["math"] is math and trusted["rx"] is re and trusted["Counter"] is Counter


def test_mbpp_solution_cannot_reach_the_runner_process():
    """The runner is non-dumpable: its fds, memory and environment are closed to the worker."""
    completion = ("import os\nreached = []\nrunner = os.getppid()\n"
                  "for path, flags in [('/proc/%d/fd/3' % runner, os.O_WRONLY),"
                  " ('/proc/%d/mem' % runner, os.O_RDONLY),"
                  " ('/proc/%d/environ' % runner, os.O_RDONLY)]:\n"
                  "    try:\n        os.close(os.open(path, flags))\n        reached.append(path)\n"
                  "    except OSError:\n        pass\n"
                  "try:\n    os.pidfd_getfd(os.pidfd_open(runner), 3)\n"
                  "    reached.append('getfd')\n"
                  "except (OSError, AttributeError):\n    pass\n"
                  "print(reached)\n"
                  "def add(a, b):\n    return a + b\n")
    result = run(sb.mbpp_program(completion, ["assert add(1, 2) == 3"]))
    assert result.status == "passed", result
    assert result.stdout == "[]\n"


def test_mbpp_time_limits_are_timeouts():
    """A solution that loops in the worker times out (wall clock or its own RLIMIT_CPU)."""
    loop = sb.mbpp_program("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS)
    result = run(loop)
    assert result.status == "timeout" and "wall clock" in result.detail, result
    config = sb.SandboxConfig(timeout_s=10.0, cpu_seconds=1)
    result = run(loop, config)
    assert result.status == "timeout" and "CPU" in result.detail, result
    assert result.duration_s < config.timeout_s
