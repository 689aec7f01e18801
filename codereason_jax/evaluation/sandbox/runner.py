"""The runner: the sandbox's main program, which reports the outcome to the harness on fd 3.

Run as ``python -S -B runner.py PROGRAM [--block-network]`` (process C of the package docs);
standard library only, Python >= 3.8. It reads the per-run nonce from stdin, then:

* a plain program (:func:`run_plain`) is compiled and ``exec``\\ uted here, as ``__main__``; the
  record says whether it ran to completion. Such a program is the whole check, so it is trusted
  to report on itself.
* a check (a program made by ``mbpp_program``, starting with ``wire.CHECK_MARKER``;
  :func:`run_check`) never runs solution code in this process. The solution runs in a worker
  process (``worker.py``) that is started fresh (no copy of this process's memory), gets neither
  fd 3 nor the tests, and cannot inspect this process (which is made non-dumpable). Each test runs
  here, with genuine builtins, over plain values the worker sends (:class:`Remote` stands for the
  solution's functions and objects), so walking frames, patching builtins or ``AssertionError``,
  exiting early or printing cannot change a verdict: only returning the right values can.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import os
import signal
import subprocess
import sys

try:
    from . import wire
    from .worker import block_network, flush_output
except ImportError:  # run as a script in the sandbox, next to wire.py and worker.py
    import wire
    from worker import block_network, flush_output

_HERE = os.path.dirname(os.path.abspath(__file__))
_WRITE, _GETPID, _EXIT = os.write, os.getpid, os._exit  # bound before a plain program runs


class RemoteError(Exception):
    """The solution raised `type_name` in the worker (the name is just what the worker said)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


class WorkerExited(Exception):
    """The worker stopped answering (the solution exited, crashed or closed its pipe)."""


class Worker:
    """The process that hosts the solution, and the pipes to it."""

    def __init__(self, block_network: bool) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        argv = [sys.executable, "-S", "-B", os.path.join(_HERE, "worker.py"), str(req_r),
                str(rep_w)] + (["--block-network"] if block_network else [])
        try:  # close_fds: the worker gets neither fd 3 (the record) nor our pipe ends
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         pass_fds=(req_r, rep_w), close_fds=True)
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.requests = os.fdopen(req_w, "wb")
        self.replies = os.fdopen(rep_r, "rb")

    def ask(self, op: str, **fields):
        """Send one request; the worker's answer as built-in values and :class:`Remote`\\ s."""
        fields["op"] = op
        try:
            self.requests.write(wire.dumps(fields))
            self.requests.flush()
        except OSError:
            raise self.exited() from None
        line = self.replies.readline(wire.MAX_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > wire.MAX_LINE:
                raise wire.WireError("reply longer than %d bytes" % wire.MAX_LINE)
            raise self.exited()
        reply = wire.loads(line)
        if "error" in reply:
            err = reply["error"]
            if type(err) is not list or len(err) != 2:
                raise wire.WireError("malformed error reply")
            raise RemoteError(str(err[0])[:100], str(err[1])[:1000])
        return wire.decode(reply.get("ok"), lambda number: Remote(self, number))

    def exited(self) -> WorkerExited:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return WorkerExited("the solution's process closed its pipe")
        if code == -signal.SIGXCPU:  # the CPU limit: a timeout, as for a plain program
            signal.signal(signal.SIGXCPU, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGXCPU)
        if code < 0:
            return WorkerExited("the solution's process was killed by signal %d" % -code)
        return WorkerExited("the solution's process exited with code %d" % code)

    def close(self) -> None:
        """Let the worker flush its output and exit; kill it if it does not."""
        try:
            self.requests.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.replies.close()


class Remote:
    """A function or object of the solution, which lives in the worker.

    Calls, attributes, items, iteration, ``len``, ``str`` and truth are asked of the worker;
    equality and ordering are not (identity only), so a verdict never rests on the solution's
    ``__eq__``: a value compared by a test must come back as plain data.
    """

    __slots__ = ("_worker", "_number")

    def __init__(self, worker: Worker, number: int) -> None:
        self._worker = worker
        self._number = number

    def _ask(self, op: str, **fields):
        return self._worker.ask(op, h=self._number, **fields)

    def __call__(self, *args, **kwargs):
        return self._ask("call", args=[_send(a) for a in args],
                         kwargs={k: _send(v) for k, v in kwargs.items()})

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __getitem__(self, key):
        return self._ask("getitem", key=_send(key))

    def __contains__(self, item) -> bool:
        return self._ask("contains", item=_send(item)) is True

    def __iter__(self):
        return iter(self._ask("iter"))

    def __len__(self) -> int:
        return self._ask("len")

    def __str__(self) -> str:
        return self._ask("str")

    def __repr__(self) -> str:
        return self._ask("repr")

    def __bool__(self) -> bool:
        return self._ask("bool")


def _send(value):
    def handle(obj):
        if isinstance(obj, Remote):
            return obj._number
        raise TypeError("cannot pass a %s to the solution" % type(obj).__name__)

    return wire.encode(value, handle)


def solution_bindings(source: str) -> tuple[set, dict]:
    """Names the solution's top level binds (or declares ``global``), and those it imports."""
    bound: set = set()
    imports: dict = {}
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return bound, imports  # the worker reports the error

    def visit(node, top: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda):
                bound.add(node.name)
            bound.update(n for sub in ast.walk(node) if isinstance(sub, ast.Global)
                         for n in sub.names)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                imports[name] = (alias.name if alias.asname else name, None)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if node.level or alias.name == "*":
                    continue
                imports[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child, top)

    visit(tree, True)
    return bound, imports


def _genuine(module: str, attr: str | None):
    """A module (or one of its attributes) the solution imports, imported here for real."""
    found = importlib.import_module(module)
    if attr is None:
        return found
    try:
        return getattr(found, attr)
    except AttributeError:
        return importlib.import_module(module + "." + attr)


def _names(test: str) -> set:
    return {n.id for n in ast.walk(ast.parse(test))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def trusted_globals(parts: dict) -> tuple[dict, set]:
    """The runner's globals for the tests, and the names that must come from the worker.

    Builtins, ``test_imports`` and the modules the solution imports (by the names the tests use)
    are the runner's own, imported before the worker starts; what the solution defines is not.
    """
    trusted = {"__name__": "__check__", "__builtins__": builtins}
    exec(compile(parts["test_imports"], "<test_imports>", "exec", dont_inherit=True), trusted)
    bound, imports = solution_bindings(parts["completion"])
    more, more_imports = solution_bindings(parts["setup_code"])
    bound |= more
    imports.update(more_imports)
    remote = set()
    for name in set().union(*[_names(test) for test in parts["tests"]]):
        if name in bound:
            remote.add(name)
        elif name in imports and name not in trusted:
            try:
                trusted[name] = _genuine(*imports[name])
            except Exception:
                remote.add(name)
        elif name not in trusted and not hasattr(builtins, name):
            remote.add(name)
    return trusted, remote


def _test_namespace(test: str, trusted: dict, remote: set, worker: Worker) -> dict:
    """Globals for one test: the runner's own, and the solution's names from the worker."""
    namespace = dict(trusted)
    for name in sorted(_names(test) & remote):
        try:
            namespace[name] = worker.ask("get", name=name)
        except RemoteError as err:
            if err.type_name != "NameError":
                raise
            namespace.pop(name, None)  # undefined: the test raises NameError
    return namespace


def run_check(parts: dict, block_network: bool) -> dict:
    """Run a check; the record for the harness (``status`` and, on failure, the exception)."""
    worker = None
    try:
        _not_dumpable()
        codes = [compile(test, "<test %d>" % i, "exec", dont_inherit=True)
                 for i, test in enumerate(parts["tests"])]
        trusted, remote = trusted_globals(parts)
        worker = Worker(block_network)
        worker.ask("run", parts=[[name, parts[name]] for name in
                                 ("test_imports", "completion", "setup_code")
                                 if parts[name].strip()])
        for i, (test, code) in enumerate(zip(parts["tests"], codes)):
            namespace = _test_namespace(test, trusted, remote, worker)
            try:
                exec(code, namespace)
            except AssertionError as exc:
                detail = (" (%s)" % exc) if str(exc) else ""
                return _failed("AssertionError", "test %d failed: %s%s" % (i, test, detail))
    except RemoteError as err:
        return _failed(err.type_name, str(err))
    except Exception as err:
        return _failed(type(err).__name__, str(err))
    finally:
        if worker is not None:
            worker.close()
    return {"status": "passed"}


def _failed(exc_type: str, message: str) -> dict:
    print("%s: %s" % (exc_type, message[:1000]), file=sys.stderr, flush=True)
    return {"status": "failed", "exc_type": exc_type, "exc_message": message[:1000]}


def _not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: a process of the same user cannot ptrace this one, read its memory or
    open its file descriptors through /proc."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(ctypes.c_int(4), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def run_plain(path: str, report) -> None:
    """Run the program at `path` here as ``__main__``; `report` its outcome. Never returns."""
    import site  # under -S importing site only defines functions: add exit() and quit()
    site.setquit()
    me = _GETPID()
    try:
        with open(path, "rb") as f:
            source = f.read()
        code = compile(source, path, "exec", dont_inherit=True)
        namespace = {"__name__": "__main__", "__file__": path, "__doc__": None,
                     "__builtins__": builtins}
        exec(code, namespace)
    except BaseException as exc:
        if _GETPID() != me:  # a forked child finished: only the main process reports
            _EXIT(1)
        try:
            message = str(exc)
        except BaseException:
            message = "<unprintable>"
        try:
            import traceback
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        except BaseException:
            pass
        flush_output()
        report({"status": "failed", "exc_type": type(exc).__name__, "exc_message": message[:1000]})
        _EXIT(1)
    if _GETPID() != me:
        _EXIT(0)
    flush_output()
    report({"status": "passed"})
    _EXIT(0)


def read_check(source: str) -> dict | None:
    """The parts of a check program, or None for a plain program."""
    if not source.startswith(wire.CHECK_MARKER + "\n"):
        return None
    parts = wire.loads(source.splitlines()[-1].encode())
    for key in ("test_imports", "completion", "setup_code"):
        if type(parts.get(key)) is not str:
            raise wire.WireError("check without %s" % key)
    if type(parts.get("tests")) is not list or not all(type(t) is str for t in parts["tests"]):
        raise wire.WireError("check without tests")
    return parts


def main(argv: list) -> None:
    """Read the nonce, then run the program named on the command line and report on fd 3."""
    dumps = wire.dumps
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
    if sys.path and os.path.abspath(sys.path[0]) == _HERE:
        del sys.path[0]  # a plain program imports the standard library, not our files
    path, block = argv[1], "--block-network" in argv[2:]
    me = _GETPID()

    def report(record: dict) -> None:
        record.update(nonce=nonce, pid=me)
        try:
            _WRITE(3, dumps(record))
        except BaseException:
            pass

    with open(path, "rb") as f:
        source = f.read().decode("utf-8", errors="replace")
    try:
        parts = read_check(source)
    except wire.WireError as err:
        report({"status": "failed", "exc_type": "WireError", "exc_message": str(err)[:1000]})
        _EXIT(1)
    if parts is None:
        sys.argv = [path]
        if block:
            block_network()
        run_plain(path, report)
    os.unlink(path)  # the tests are in it: the worker must not read them
    record = run_check(parts, block)
    report(record)
    _EXIT(0 if record["status"] == "passed" else 1)


if __name__ == "__main__":
    main(sys.argv)
