"""The harness: probe what isolation this machine allows, then run programs in the sandbox.

The public entry points (:func:`run_program`, :func:`check_many`, :func:`isolation_report`,
:func:`check_isolation`) are re-exported by the package. A probe program (our own, trusted) is
run once per configuration to pick the interpreter and find which isolation works. Degraded
modes are logged, and untrusted programs are refused on them unless the caller opts out
(``SandboxConfig.unsafe_allow_unisolated`` or ``CODEREASON_SANDBOX_UNSAFE_ALLOW_UNISOLATED=1``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import pwd
import shutil
import sys
from typing import Sequence

from . import launch
from .config import DEFAULT_ENV_PATH, MAX_MESSAGE, UNSAFE_ENV, ExecutionResult, Plan, \
    SandboxConfig, SandboxUnavailable

logger = logging.getLogger(__name__)

_plans: dict[tuple, Plan] = {}

_PROBE_PROGRAM = (
    "import collections, heapq, itertools, json, math, os, re, sys\n"
    "print(json.dumps({'uid': os.getuid(), 'python': sys.version.split()[0]}))\n")


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
    system = shutil.which("python3", path=DEFAULT_ENV_PATH)
    if system and os.path.realpath(system) != base:
        found.append((os.path.realpath(system), ()))
    return found


def _probe(config: SandboxConfig) -> Plan:
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
        trial = Plan(python=python, expose=expose, uid=uid, gid=gid, namespaces=namespaces,
                      user_namespace=False, block_network=False, proc_mounted=False,
                      read_only_root="", warnings=())
        probe_config = dataclasses.replace(config, timeout_s=max(config.timeout_s, 30.0))
        result, setup = launch.run_once(_PROBE_PROGRAM, probe_config, trial, required=False)
        if result.status != "passed":
            failures.append(f"{python} (namespaces={namespaces}): {result.status}: "
                            f"{result.detail} {result.stderr[-300:]}".strip())
            continue
        return _finish_plan(config, trial, setup, failures)
    raise SandboxUnavailable("no interpreter could run a program in the sandbox: "
                             + " | ".join(failures))


def _finish_plan(config: SandboxConfig, trial: Plan, setup: dict, failures: list[str]) -> Plan:
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
    for warning in warnings:  # the refusal (or the opt-out's warning) says it on every use
        logger.info("sandbox isolation degraded: %s", warning)
    logger.info("sandbox: interpreter %s, uid %s, namespaces %s", trial.python, trial.uid,
                namespaces)
    return dataclasses.replace(trial, namespaces=namespaces,
                               user_namespace=bool(setup.get("user_namespace")),
                               block_network=block, proc_mounted=bool(setup.get("proc_mounted")),
                               read_only_root=str(setup.get("read_only_root", "")),
                               warnings=tuple(warnings))


def _plan_for(config: SandboxConfig) -> Plan:
    key = (config.python, config.namespaces, config.network, config.user, config.tmp_root,
           os.geteuid(), launch.SIMULATE_FAILURES)
    with launch.lock:
        plan = _plans.get(key)
    if plan is None:
        plan = _probe(config)
        with launch.lock:
            plan = _plans.setdefault(key, plan)
    return plan


def unisolated_allowed(config: SandboxConfig) -> bool:
    """Whether the caller opted out of the refusal to run untrusted code unisolated.

    Only ``SandboxConfig(unsafe_allow_unisolated=True)`` or the environment variable set to
    exactly ``1`` count (``true``, ``yes`` and the like do not: it must not happen by accident);
    ``require_isolation`` overrides both.
    """
    if config.require_isolation:
        return False
    return config.unsafe_allow_unisolated or os.environ.get(UNSAFE_ENV, "") == "1"


def _admit(config: SandboxConfig, plan: Plan) -> None:
    """Fail closed: refuse untrusted code when the plan has warnings, unless opted out (then
    warn on stderr, every time, where no logging configuration can hide it)."""
    if not plan.warnings:
        return
    missing = "; ".join(plan.warnings)
    if not unisolated_allowed(config):
        fix = ("drop SandboxConfig(namespaces=False)" if not config.namespaces else
               "fix the machine (run the harness as root, or allow user and mount namespaces: "
               "a container without a seccomp profile that blocks unshare, "
               "kernel.unprivileged_userns_clone=1)")
        how = ("require_isolation=True ignores the opt-out" if config.require_isolation else
               f"{fix}, or, only on a machine you can afford to lose, set {UNSAFE_ENV}=1 "
               "(SandboxConfig(unsafe_allow_unisolated=True))")
        raise SandboxUnavailable(
            f"refusing to run untrusted code: the sandbox cannot isolate it on this machine: "
            f"{missing}. To run it anyway, {how}.")
    print(f"WARNING: UNSAFE: running untrusted code WITHOUT full sandbox isolation "
          f"({UNSAFE_ENV} / unsafe_allow_unisolated): {missing}", file=sys.stderr, flush=True)


def isolation_report(config: SandboxConfig | None = None) -> dict:
    """What the sandbox does on this machine for `config` (probes once, then cached).

    Reports, never refuses (``warnings`` says what is missing; a non-empty list means programs
    are refused without the opt-out), except with ``require_isolation``, which raises.
    """
    config = config or SandboxConfig()
    plan = _plan_for(config)
    if config.require_isolation and plan.warnings:
        raise SandboxUnavailable("sandbox isolation incomplete: " + "; ".join(plan.warnings))
    return {"python": plan.python, "exposed": list(plan.expose), "uid": plan.uid,
            "gid": plan.gid, "namespaces": plan.namespaces,
            "user_namespace": plan.user_namespace, "proc_mounted": plan.proc_mounted,
            "read_only_root": plan.read_only_root,
            "network": ("namespace" if plan.namespaces else "") + (
                "+block" if plan.block_network and plan.namespaces else
                "block" if plan.block_network else ""),
            "warnings": list(plan.warnings)}


def check_isolation(config: SandboxConfig | None = None) -> dict:
    """The isolation report, or :class:`SandboxUnavailable` where programs would be refused.

    For command lines that will run generated code: fail before expensive work (loading a
    model), with the same message :func:`check_many` would give.
    """
    config = config or SandboxConfig()
    _admit(config, _plan_for(config))
    return isolation_report(config)


def run_program(source: str, config: SandboxConfig | None = None) -> ExecutionResult:
    """Run `source` as ``__main__`` of a fresh interpreter in the sandbox (see module docs).

    Raises :class:`SandboxUnavailable` when the sandbox cannot run at all, or cannot isolate
    the program and the caller did not opt out; per-run setup problems give status ``error``.
    """
    config = config or SandboxConfig()
    plan = _plan_for(config)
    _admit(config, plan)
    return _run(source, config, plan)


def _run(source: str, config: SandboxConfig, plan: Plan) -> ExecutionResult:
    try:
        return launch.run_once(source, config, plan, required=True)[0]
    except OSError as err:  # e.g. no fds or processes left in the harness itself
        return ExecutionResult(status="error", detail=f"harness: {err!r}"[:MAX_MESSAGE])


def check_many(programs: Sequence[str], config: SandboxConfig | None = None) -> list[
        ExecutionResult]:
    """Run every program, ``config.workers`` at a time; results in input order.

    ``error`` results (a sandbox that failed to start, e.g. the sandbox uid briefly at its
    process limit because of a concurrent fork bomb) are retried once, one at a time.
    """
    config = config or SandboxConfig()
    plan = _plan_for(config)  # probe once, before the threads start
    if not programs:
        return []
    _admit(config, plan)  # refused (or warned about) once for the whole batch
    with concurrent.futures.ThreadPoolExecutor(max_workers=config.workers,
                                               thread_name_prefix="sandbox") as pool:
        results = list(pool.map(lambda p: _run(p, config, plan), programs))
    for i, result in enumerate(results):
        if result.status == "error":
            results[i] = _run(programs[i], config, plan)
    return results
