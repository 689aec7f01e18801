"""The sandbox's configuration and result types, shared by the harness modules."""

from __future__ import annotations

import dataclasses
import math

from codereason_jax.cli import UserError

STATUSES = ("passed", "failed", "timeout", "error")
SETUP_FAILED = 125  # exit code of the bootstrap when the sandbox could not be set up
MAX_MESSAGE = 1000  # characters kept of an exception message / error detail
DEFAULT_ENV_PATH = "/usr/local/bin:/usr/bin:/bin"
# Set to exactly "1" to run untrusted code although the sandbox cannot isolate it (the opt-out
# of SandboxConfig.unsafe_allow_unisolated for command lines); every use is warned on stderr.
UNSAFE_ENV = "CODEREASON_SANDBOX_UNSAFE_ALLOW_UNISOLATED"


class SandboxUnavailable(UserError, RuntimeError):
    """The sandbox cannot run programs with the isolation they need (or the configuration asks
    for). A :class:`~codereason_jax.cli.UserError`: a command line prints one ``error:`` line
    naming what is missing and exits 2."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation of one program run.

    ``network``: ``"auto"`` (network namespace, else an in-process socket block with a warning),
    ``"namespace"`` (namespace or :class:`SandboxUnavailable`), ``"block"`` (in-process block
    only) or ``"none"`` (no restriction, warned). ``namespaces=False`` skips all namespaces (for
    debugging, and to test the degraded mode; refused without the opt-out below). ``user`` is
    the account the program runs as when the harness is root (name or uid). ``python`` is the
    interpreter for the program; by default the harness's own base interpreter (made reachable
    for ``user`` if needed), else ``python3`` on the standard path.

    Fail closed: where the isolation report has warnings (no namespaces, no read-only root, no
    fresh ``/proc``, ``namespaces=False``, ...) the sandbox refuses to run programs
    (:class:`SandboxUnavailable`) unless ``unsafe_allow_unisolated`` is True or the environment
    sets ``CODEREASON_SANDBOX_UNSAFE_ALLOW_UNISOLATED=1``; every run under that opt-out prints a
    warning to stderr. ``require_isolation`` refuses even then (and makes
    :func:`isolation_report` raise).
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
    # UNSAFE: run untrusted code even where the sandbox cannot isolate it (see above).
    unsafe_allow_unisolated: bool = False

    def __post_init__(self) -> None:
        if self.network not in ("auto", "namespace", "block", "none"):
            raise ValueError(f"network must be auto, namespace, block or none: {self.network!r}")
        if self.timeout_s <= 0 or self.workers < 1:
            raise ValueError("timeout_s must be positive and workers at least 1")

    @property
    def cpu_limit(self) -> int:
        """RLIMIT_CPU in seconds: `cpu_seconds`, else a second more than the wall clock."""
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
class Plan:
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

