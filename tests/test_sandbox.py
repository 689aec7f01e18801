"""The execution sandbox: each attack must end as a failed (or timed-out) run, harness unharmed.

The attack programs try everything they can and finish with ``assert <attack worked>``, so a
``failed``/``timeout`` status means every attempt failed inside the sandbox; the tests then check
the side effects from outside (files, processes, the server socket, the captured output).

The sandbox fails closed, so these tests need a machine with its isolation (root, or user and
mount namespaces; CI is such a machine): there a degraded sandbox is a failure, never a skip.
Machines without it are simulated by a test hook in the bootstrap (``launch.SIMULATE_FAILURES``:
an isolation step fails as the kernel would refuse it), to test the refusal and its opt-out.
No assertion measures time: a limit is checked by its verdict, parallelism by programs that can
only finish together, and waits for an event have a generous bound (``BOUND_S``) that only a
missing event reaches.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from codereason_jax import cli
from codereason_jax.evaluation import sandbox as sb
from codereason_jax.evaluation.sandbox import harness, launch, runner, wire

REPO = Path(__file__).resolve().parents[1]
MBPP_DIR = REPO.parent / "shared" / "data" / "mbpp"
CFG = sb.SandboxConfig(timeout_s=2.0)
BOUND_S = 60.0  # only reached when an awaited event never happens (a hang, a leaked process)
UNSAFE = "WARNING: UNSAFE"


@pytest.fixture(autouse=True)
def _no_opt_out(monkeypatch):
    """Whatever the developer's shell exports, the tests start without the opt-out."""
    monkeypatch.delenv(sb.UNSAFE_ENV, raising=False)


@pytest.fixture(scope="module")
def iso() -> dict:
    """This machine's isolation, which must be complete: a degraded sandbox refuses to run
    untrusted code, so the containment tests below fail rather than skip on such a machine."""
    report = sb.isolation_report(CFG)
    assert report["warnings"] == [], (
        "the sandbox cannot isolate programs on this machine (run the tests as root or with "
        "user and mount namespaces): " + "; ".join(report["warnings"]))
    return report


def bounded(fn, *args):
    """``fn(*args)``, failing only if it never returns (within ``BOUND_S``): the harness must
    not hang, but how long it takes on a loaded machine is not asserted."""
    box: dict = {}

    def call():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # re-raised in the test's thread
            box["error"] = err

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"{fn.__name__} did not return within {BOUND_S} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def run(source: str, config: sb.SandboxConfig = CFG) -> sb.ExecutionResult:
    return bounded(sb.run_program, source, config)


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


def processes_with(text: str) -> list[tuple[int, str]]:
    """Processes (other than this one) whose command line contains `text`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append((int(name), cmdline[:200]))
    return found


def wait_gone(find) -> list:
    """What ``find()`` still lists after ``BOUND_S``; returns as soon as it lists nothing."""
    deadline = time.monotonic() + BOUND_S
    while True:
        left = find()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def wait_no_sandbox_processes(uid: int | None, before: list) -> list:
    """New sandbox processes (not in `before`) still alive after ``BOUND_S``."""
    known = {pid for pid, _ in before}
    return wait_gone(lambda: [p for p in sandbox_processes(uid) if p[0] not in known])


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
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def checkout():
    """A stand-in for the repository checkout (the real one is never a target): a directory in
    the parent's tmp, owned by the harness's user and traversable by all, holding a copy of
    setup.py (0644); the sandbox can name it but must not change it."""
    path = Path(tempfile.mkdtemp(prefix="sandbox_checkout_", dir="/tmp"))
    path.chmod(0o755)
    shutil.copyfile(REPO / "setup.py", path / "setup.py")
    (path / "setup.py").chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------ fail closed
# A machine without the isolation is simulated: the bootstrap's own set-up step fails (as a
# kernel or container without it would refuse it); the probe, the plan and the refusal are real.

MISSING = {"unshare": "no namespaces", "read_only": "could not make / read-only",
           "proc": "could not mount a fresh /proc"}


@pytest.fixture
def simulate(monkeypatch):
    def apply(*steps: str) -> None:
        monkeypatch.setattr(launch, "SIMULATE_FAILURES", tuple(steps))

    return apply


def test_isolation_on_this_machine(iso):
    assert Path(iso["python"]).is_file()
    if os.geteuid() == 0:
        assert iso["uid"] not in (None, 0)
    assert iso["warnings"] == []
    assert iso["namespaces"] and iso["read_only_root"] and iso["proc_mounted"]
    assert iso["network"] == "namespace"
    assert sb.check_isolation(CFG) == iso


@pytest.mark.parametrize("step", sorted(MISSING))
def test_untrusted_code_is_refused_without_isolation(step, simulate, open_dir, capsys):
    simulate(step)
    report = sb.isolation_report(CFG)  # reports what is missing, without refusing
    assert any(MISSING[step] in warning for warning in report["warnings"]), report
    marker = open_dir / "ran"  # world-writable: an unisolated program could create it
    program = f"open({str(marker)!r}, 'w').write('ran')\n"
    check = sb.mbpp_program(f"open({str(marker)!r}, 'w').write('ran')\ndef f():\n    return 1\n",
                            ["assert f() == 1"])
    for call in (lambda: sb.run_program(program, CFG), lambda: sb.check_many([check], CFG),
                 lambda: sb.check_isolation(CFG)):
        with pytest.raises(sb.SandboxUnavailable) as refused:
            call()
        message = str(refused.value)
        assert message.startswith("refusing to run untrusted code"), message
        assert MISSING[step] in message and f"{sb.UNSAFE_ENV}=1" in message
    assert not marker.exists()
    assert UNSAFE not in capsys.readouterr().err


def test_a_refusal_is_one_error_line_and_exit_2(simulate, capsys):
    """What a command line (evaluate's MBPP pass@k) shows: the cli error surface."""
    simulate("unshare")

    def main(argv: list[str]) -> int:
        sb.check_many([sb.mbpp_program("def f():\n    return 1\n", ["assert f() == 1"])], CFG)
        return 0

    assert cli.run(main, []) == cli.USAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to run untrusted code: ")
    assert "no namespaces" in lines[0] and sb.UNSAFE_ENV in lines[0]


def test_evaluate_refuses_mbpp_execution_before_loading_the_model(simulate, capsys, tmp_path,
                                                                  monkeypatch):
    from codereason_jax import evaluate

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("CODEREASON_DATA_DIR", raising=False)
    simulate("unshare")
    output = tmp_path / "results.json"
    code = evaluate.main(["--gin_file=gin/models/pangu_tiny.gin",
                          "--gin_file=gin/eval/tables_2_3_6.gin", "--tasks=eval_mbpp",
                          f"--data_dir={REPO / 'tests' / 'fixtures' / 'benchmarks_messy'}",
                          f"--output={output}"])
    captured = capsys.readouterr()
    assert code == cli.USAGE, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "refusing to run untrusted code" in errors[0], captured.err
    assert "no namespaces" in errors[0] and not output.exists()


@pytest.mark.parametrize("how", ["config", "environment"])
def test_the_opt_out_runs_unisolated_and_warns_every_time(how, simulate, open_dir, monkeypatch,
                                                          capsys):
    simulate("unshare")
    config = CFG
    if how == "config":
        config = dataclasses.replace(CFG, unsafe_allow_unisolated=True)
    else:
        monkeypatch.setenv(sb.UNSAFE_ENV, "1")
    marker = open_dir / "ran"
    result = run(f"open({str(marker)!r}, 'w').write('ran')\n", config)
    assert result.status == "passed", result
    assert marker.read_text() == "ran"  # it really ran without the read-only file system
    results = bounded(sb.check_many, ["print('one')\n", "print('two')\n"], config)
    assert [r.stdout for r in results] == ["one\n", "two\n"]
    err = capsys.readouterr().err
    assert err.count(UNSAFE) == 2, err  # once per run_program, once per check_many batch
    assert "no namespaces" in err


@pytest.mark.parametrize("value", ["", "0", "true", "yes", " 1"])
def test_only_the_exact_opt_out_counts(value, simulate, monkeypatch):
    simulate("unshare")
    monkeypatch.setenv(sb.UNSAFE_ENV, value)
    with pytest.raises(sb.SandboxUnavailable, match="refusing to run untrusted code"):
        sb.run_program("print('ran')\n", CFG)


def test_require_isolation_overrides_the_opt_out(simulate, monkeypatch):
    simulate("proc")
    monkeypatch.setenv(sb.UNSAFE_ENV, "1")
    config = dataclasses.replace(CFG, require_isolation=True, unsafe_allow_unisolated=True)
    with pytest.raises(sb.SandboxUnavailable, match="require_isolation"):
        sb.run_program("print('ran')\n", config)
    with pytest.raises(sb.SandboxUnavailable, match="could not mount a fresh /proc"):
        sb.isolation_report(config)


def test_degraded_mode_is_refused_unless_opted_out_and_then_blocks_sockets(capsys):
    config = sb.SandboxConfig(timeout_s=2.0, namespaces=False)
    report = sb.isolation_report(config)
    assert not report["namespaces"] and report["network"] == "block"
    assert any("namespaces disabled" in warning for warning in report["warnings"])
    assert any("in-process block" in warning for warning in report["warnings"])
    with pytest.raises(sb.SandboxUnavailable, match="namespaces disabled"):
        sb.run_program("print('ok')", config)
    unsafe = dataclasses.replace(config, unsafe_allow_unisolated=True)
    assert run("print('ok')", unsafe).status == "passed"
    result = run("import socket\nsocket.create_connection(('127.0.0.1', 9), 1)\n", unsafe)
    assert_failed(result)
    assert result.exc_type == "PermissionError"
    assert capsys.readouterr().err.count(UNSAFE) == 2
    with pytest.raises(sb.SandboxUnavailable):
        sb.isolation_report(sb.SandboxConfig(namespaces=False, require_isolation=True))
    with pytest.raises(sb.SandboxUnavailable):
        sb.isolation_report(sb.SandboxConfig(namespaces=False, network="namespace"))


# ------------------------------------------------------------------------------------ basics

def test_passing_program_and_output():
    result = run("import sys\nprint('hello')\nprint('err', file=sys.stderr)\nassert 1 + 1 == 2\n")
    assert result.status == "passed", result
    assert result.passed and result.exit_code == 0
    assert result.stdout == "hello\n" and result.stderr == "err\n"
    assert result.duration_s > 0


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
    # The child of a fork returns from the program too (first: the parent waits for it); only
    # the main process may report.
    result = run("import os\npid = os.fork()\nif pid:\n    os.waitpid(pid, 0)\n"
                 "    raise ValueError('parent fails')\n")
    assert_failed(result)
    assert result.exc_type == "ValueError"


def test_output_is_capped_and_the_pipe_is_drained():
    config = sb.SandboxConfig(timeout_s=1.5, max_output_bytes=4096)
    result = run("while True:\n    print('x' * 10000)\n", config)
    assert result.status == "timeout" and "wall clock" in result.detail, result
    assert len(result.stdout.encode()) <= 4096 and result.output_truncated


# ------------------------------------------------------------------------------ time limits

def test_infinite_loop_times_out():
    result = run("while True:\n    pass\n")
    assert result.status == "timeout", result
    assert result.detail == f"wall clock limit of {CFG.timeout_s:g} s"


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
    result = run(source)
    assert result.status == "timeout", result


def test_sleep_is_bounded_by_the_wall_clock():
    result = run("import time\ntime.sleep(1000)\n")
    assert result.status == "timeout" and "wall clock" in result.detail, result


def test_cpu_time_limit():
    config = sb.SandboxConfig(timeout_s=30.0, cpu_seconds=1)
    result = run("while True:\n    pass\n", config)
    assert result.status == "timeout", result
    assert result.detail == "CPU time limit of 1 s"  # RLIMIT_CPU, not the wall clock


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
    result = run(source, config)
    assert_failed(result, "failed", "timeout")
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
    result = run("for i in range(100):\n"
                 "    with open('f%d' % i, 'wb') as f:\n"
                 "        f.write(b'x' * (8 << 20))\n")
    assert_failed(result)
    assert result.exc_type == "OSError" and "space" in result.exc_message, result


# ------------------------------------------------------------------------ file system attacks

def test_writes_outside_the_temp_dir_fail(iso, open_dir, checkout):
    tag = secrets.token_hex(6)
    targets = [f"/tmp/pwned_{tag}", str(checkout / f"pwned_{tag}"), str(open_dir / f"pwned_{tag}"),
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
    try:
        result = run(source)
        assert_failed(result)
        assert result.stdout.strip() == "[]"
        for path in targets:
            assert not Path(path).exists(), path
    finally:  # a breach leaves nothing behind
        for path in targets:
            Path(path).unlink(missing_ok=True)


def test_deletes_and_overwrites_outside_the_temp_dir_fail(iso, open_dir, checkout, monkeypatch):
    sentinel = open_dir / "sentinel.txt"
    setup_copy = checkout / "setup.py"
    before = setup_copy.read_bytes()
    monkeypatch.chdir(checkout)  # the harness's working directory, as in a real run
    source = ("import os, shutil\ndone = []\n"
              f"for action, path in [('remove', {str(sentinel)!r}), ('rename', {str(sentinel)!r}),"
              f" ('truncate', {str(sentinel)!r}), ('rmtree', {str(open_dir)!r}),"
              f" ('truncate', {str(setup_copy)!r}), ('remove', {str(setup_copy)!r}),"
              f" ('truncate', '/proc/{os.getpid()}/cwd/setup.py'),"
              f" ('rmtree', {str(checkout)!r})]:\n"
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
    assert_failed(result)
    assert sentinel.read_text() == "keep me"
    assert setup_copy.read_bytes() == before
    assert sorted(p.name for p in checkout.iterdir()) == ["setup.py"]


def test_read_only_fallback_for_old_kernels(iso, monkeypatch, open_dir):
    """Without mount_setattr (Linux < 5.12) every mount is remounted read-only one by one."""
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
        # About the machine, not our code: a non-root harness has no other uid to run the
        # program as, so in its user namespace the program is the file's owner (CI runs as root).
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
    bystander_user = {"user": iso["uid"], "group": iso["gid"]} if iso["uid"] is not None else {}
    bystander = subprocess.Popen(["sleep", "600"], **bystander_user)  # same uid as the program
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
    """Daemons that left the process group die: PID namespace, else the subreaper supervisor
    (the degraded mode, run through the opt-out)."""
    marker = f"daemon_marker_{secrets.token_hex(6)}"
    source = DAEMONS % marker + ("import time\ntime.sleep(1000)\n" if ending == "timeout" else "")
    config = sb.SandboxConfig(timeout_s=2.0, namespaces=namespaces,
                              unsafe_allow_unisolated=not namespaces)
    before = sandbox_processes(iso["uid"])
    result = run(source, config)
    # "passed" also says the harness did not wait for the daemons (that would be a timeout).
    assert result.status == ("passed" if ending == "exit" else "timeout"), result
    assert result.stdout == "spawned\n"
    leftovers = wait_gone(lambda: processes_with(marker))
    for pid, _ in leftovers:  # never leave them behind, even when the test fails
        os.kill(pid, 9)
    assert leftovers == []
    assert wait_no_sandbox_processes(iso["uid"], before) == []


# -------------------------------------------------------------------------------- network

def test_sockets_cannot_reach_the_host(iso):
    """A connection that succeeded would sit in a listening socket's backlog once the program
    has ended, so the backlogs are read afterwards: nothing to wait for."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    unix_name = f"\0codereason_sandbox_test_{secrets.token_hex(6)}"
    unix_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_server.bind(unix_name)
    unix_server.listen(8)
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
        accepted = []
        for srv in (server, unix_server):
            srv.setblocking(False)
            try:
                conn, _ = srv.accept()
            except BlockingIOError:
                continue
            accepted.append(srv.getsockname())
            conn.close()
        assert accepted == []
    finally:
        server.close()
        unix_server.close()


# ----------------------------------------------------------------------------- check_many

def test_check_many_keeps_order():
    programs = ["while True: pass\n", "print('one')\n", "assert 0\n", "print('three')\n"]
    results = bounded(sb.check_many, programs, sb.SandboxConfig(timeout_s=1.5, workers=2))
    assert [r.status for r in results] == ["timeout", "passed", "failed", "passed"]
    assert [r.stdout for r in results] == ["", "one\n", "", "three\n"]
    assert sb.check_many([], CFG) == []


def _markers(token: str) -> set[str]:
    """Marker files in the private working directories of running sandboxed programs (the host
    sees them through /proc/<pid>/cwd)."""
    found = set()
    for pid, cmdline in sandbox_processes(None):
        if "runner.py" in cmdline:
            try:
                found.update(n for n in os.listdir(f"/proc/{pid}/cwd") if n.startswith(token))
            except OSError:  # ended meanwhile
                pass
    return found


def test_check_many_runs_programs_in_parallel():
    """Each program leaves a marker and waits for a go file, which the test creates only when
    it has seen `workers` markers at once: a serial check_many never gets it (and then fails
    here after BOUND_S)."""
    workers, token = 2, f"marker_{secrets.token_hex(6)}"
    go_dir = Path(tempfile.mkdtemp(prefix="sandbox_go_", dir="/tmp"))
    go_dir.chmod(0o755)
    go = go_dir / "go"
    programs = [f"import os, time\nopen('{token}_{i}', 'w').close()\n"
                f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.01)\nprint({i})\n"
                for i in range(2 * workers)]
    config = sb.SandboxConfig(timeout_s=BOUND_S + 30, workers=workers)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(results=sb.check_many(programs, config)),
                              daemon=True)
    most = 0
    thread.start()
    try:
        deadline = time.monotonic() + BOUND_S
        while thread.is_alive() and time.monotonic() < deadline:
            most = max(most, len(_markers(token)))
            if most >= workers:
                go.touch()
            time.sleep(0.01)
    finally:
        go.touch()  # never leave the programs waiting
        thread.join(BOUND_S)
        shutil.rmtree(go_dir)
    assert not thread.is_alive()
    assert most == workers  # all workers' programs ran at once, and never more
    assert [r.stdout for r in box["results"]] == [f"{i}\n" for i in range(2 * workers)]


@pytest.mark.parametrize("failure,detail", [("expose", "FileNotFoundError"),
                                            ("unshare", "unshare: Operation not permitted")])
def test_setup_failure_is_an_error_not_a_pass_or_fail(iso, monkeypatch, failure, detail):
    """A set-up step that fails after a good probe (a broken plan, namespaces refused from now
    on) is an error, never a silent downgrade to an unisolated run."""
    plan = harness._plan_for(CFG)
    if failure == "expose":
        plan = dataclasses.replace(plan, expose=("/nonexistent_sandbox_dir",))
    else:
        monkeypatch.setattr(launch, "SIMULATE_FAILURES", ("unshare",))
    monkeypatch.setattr(harness, "_plan_for", lambda config: plan)
    result = sb.run_program("print('never runs')", CFG)
    assert result.status == "error" and "sandbox setup failed" in result.detail, result
    assert detail in result.detail and result.stdout == ""


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
    if not MBPP_DIR.is_dir():  # the data set is not part of the checkout (a machine condition)
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
    config = sb.SandboxConfig(timeout_s=30.0, cpu_seconds=1)
    result = run(loop, config)
    assert result.status == "timeout" and "CPU" in result.detail, result  # not the wall clock
