"""The worker: hosts a check's solution in its own interpreter and answers the runner.

Everything in this process is within the solution's reach (frames, ``gc``, builtins, its file
descriptors), so nothing here is trusted and nothing here decides a verdict. The worker never
sees the tests: it runs the solution's parts, then answers the runner's questions (the value of
a name, a call, an attribute) with plain data (``wire``); the runner compares. Run as
``python -S -B worker.py REQUEST_FD REPLY_FD [--block-network]``; standard library only, Python
>= 3.8.
"""

from __future__ import annotations

import builtins
import os
import sys
import traceback

try:
    from . import wire
except ImportError:  # run as a script in the sandbox, next to wire.py
    import wire


def block_network() -> None:
    """The in-process socket block of the degraded mode (no network namespace)."""
    import _socket
    import socket

    def denied(*args, **kwargs):
        raise PermissionError(1, "network access is disabled in the sandbox")

    for mod in (socket, _socket):
        for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd",
                     "getaddrinfo", "gethostbyname"):
            if hasattr(mod, name):
                setattr(mod, name, denied)


class Host:
    """The solution's namespace and the objects the runner holds handles to."""

    def __init__(self) -> None:
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.objects: dict = {}

    def handle(self, obj) -> int:
        number = len(self.objects) + 1
        self.objects[number] = obj
        return number

    def value(self, data):
        return wire.decode(data, self.objects.__getitem__)

    def answer(self, request: dict):
        """The result of one request (an exception becomes an error reply)."""
        op = request.get("op")
        if op == "run":
            for name, source in request["parts"]:
                code = compile(source, "<%s>" % name, "exec", dont_inherit=True)
                exec(code, self.namespace)
            return None
        if op == "get":
            name = request["name"]
            if name not in self.namespace:
                raise NameError("name %r is not defined" % name)
            return self.namespace[name]
        target = self.objects[request["h"]]
        if op == "call":
            args = [self.value(a) for a in request["args"]]
            kwargs = {k: self.value(v) for k, v in request["kwargs"].items()}
            return target(*args, **kwargs)
        if op == "getattr":
            return getattr(target, request["name"])
        if op == "getitem":
            return target[self.value(request["key"])]
        if op == "contains":
            return self.value(request["item"]) in target
        if op == "iter":
            return list(target)
        unary = {"len": len, "str": str, "repr": repr, "bool": bool}
        if op in unary:
            return unary[op](target)
        raise ValueError("unknown request %r" % (op,))

    def serve(self, requests, replies) -> None:
        """Answer until the runner closes the request pipe."""
        for line in requests:
            try:
                reply = {"ok": wire.encode(self.answer(wire.loads(line)), self.handle)}
            except BaseException as exc:  # the solution's SystemExit too: it ends nothing here
                try:
                    tb = exc.__traceback__
                    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                        tb = tb.tb_next  # the solution's frames only
                    traceback.print_exception(type(exc), exc, tb)
                    message = str(exc)
                except BaseException:
                    message = "<unprintable>"
                reply = {"error": [type(exc).__name__, message[:1000]]}
            flush_output()
            replies.write(wire.dumps(reply))
            replies.flush()


def flush_output() -> None:
    """Flush stdout and stderr, whatever state the solution left them in."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass


def main(argv: list) -> None:
    """Serve the runner over the two pipes named on the command line."""
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # the solution imports the standard library, not our files
    import site  # under -S importing site only defines functions: add exit() and quit()
    site.setquit()
    requests = os.fdopen(int(argv[1]), "rb")
    replies = os.fdopen(int(argv[2]), "wb")
    if "--block-network" in argv[3:]:
        block_network()
    sys.argv = ["program.py"]
    Host().serve(requests, replies)
    flush_output()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
