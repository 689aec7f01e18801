"""Create, set up, run, resume and delete a Cloud TPU training job.

    python -m launch.tpu create --name=cr-2b6 --zone=us-central2-b --accelerator_type=v4-32
    python -m launch.tpu setup  --name=cr-2b6 --zone=us-central2-b
    python -m launch.tpu run    --name=cr-2b6 --zone=us-central2-b --accelerator_type=v4-32 \\
        --gin_file=gin/models/pangu_2_6b.gin --gin_file=gin/partitioning/v4_32.gin \\
        --run_dir=gs://BUCKET/runs/pretrain_2_6b [--gin.TrainConfig.num_steps=1000]
    python -m launch.tpu resume ... (the create + run flags)   # after a preemption
    python -m launch.tpu logs|status|stop|delete --name=cr-2b6 --zone=us-central2-b
    python -m launch.tpu create --unattended ... (the create + run flags)  # restarts itself
    python -m launch.tpu logs --run_dir=gs://BUCKET/runs/pretrain_2_6b --worker=0

Every subcommand takes ``--dry_run``: it prints each command it would run, one per line,
shell-quoted, and runs nothing. ``--queued`` manages the TPU through a queued resource of the
same name (``--spot``, ``--best_effort``, ``--reserved``). Run it from the repository root;
see launch/README.md for the whole flow.

This module is the command line; the gcloud commands and the resume logic are in
``launch.launcher``, the command runner in ``launch.runner``, the workers' layout in
``launch.worker_layout``, the slice table and mesh check in ``launch.topology``, and the
unattended VMs' startup script and its relaunch rule in ``launch.startup``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Callable, Sequence

from launch.launcher import ROOT as ROOT
from launch.launcher import Launcher
from launch.runner import Result as Result
from launch.runner import Runner
from launch.topology import LaunchError
from launch.worker_layout import STATE_MARK as STATE_MARK


# ---------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="TPU node name (and queued-resource id)")
    common.add_argument("--zone", help="e.g. us-central2-b (v4)")
    common.add_argument("--project", help="GCP project (default: gcloud's configured one)")
    common.add_argument("--queued", action="store_true",
                        help="the TPU is (to be) managed by a queued resource of the same name")
    common.add_argument("--dry_run", action="store_true",
                        help="print every command, one per line, and run nothing")
    common.add_argument("--api_retries", type=int, default=5,
                        help="retries of a gcloud query that failed transiently (backoff "
                        "10 s, 20 s, ... up to 5 min); NOT_FOUND and auth errors are final")

    machine = argparse.ArgumentParser(add_help=False)
    machine.add_argument("--accelerator_type", help="e.g. v4-32, v5litepod-16, v5p-64, v6e-16")
    machine.add_argument("--version", help="TPU runtime (default per generation, e.g. "
                         "tpu-ubuntu2204-base for v4)")
    machine.add_argument("--spot", action="store_true", help="Spot capacity (preemptible)")
    machine.add_argument("--best_effort", action="store_true",
                         help="best-effort queued resource (gcloud alpha; needs --queued)")
    machine.add_argument("--reserved", action="store_true", help="use reserved capacity")
    machine.add_argument("--wait_timeout_s", type=float, default=24 * 3600,
                         help="how long to wait for a queued resource to become ACTIVE")
    machine.add_argument("--poll_s", type=float, default=60.0)

    ship = argparse.ArgumentParser(add_help=False)
    ship.add_argument("--ref", default="HEAD",
                      help="without --run_dir: git revision shipped to the workers")
    ship.add_argument("--stage", help="without --run_dir: gs:// folder to stage the source "
                      "tarball through (default: scp to every worker)")
    install = argparse.ArgumentParser(add_help=False)
    install.add_argument("--data_from", help="gs:// folder copied to every worker's data dir")
    install.add_argument("--python", default="python3.11", help="interpreter for the venv")

    code = argparse.ArgumentParser(add_help=False)
    code.add_argument("--allow_dirty", action="store_true",
                      help="first launch: store HEAD although the tree has uncommitted changes "
                      "(they are not shipped)")
    code.add_argument("--allow_code_change", action="store_true",
                      help="store HEAD as the run's code although the run was started from "
                      "another commit")

    unattended = argparse.ArgumentParser(add_help=False)
    unattended.add_argument("--unattended", action="store_true",
                            help="the VMs run the job from a startup script at every boot "
                            "(code and wheels stored with the run; no laptop needed)")
    unattended.add_argument("--max_attempts", type=int, default=20,
                            help="unattended: attempts per worker over the whole run")
    unattended.add_argument("--service_account",
                            help="unattended: the VMs' service account (needs storage access "
                            "to the bucket); default: the project's Compute Engine account")
    unattended.add_argument("--no_autocheckpoint", action="store_true",
                            help="unattended: do not request Cloud TPU Autocheckpoint")

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data_dir", help="CODEREASON_DATA_DIR on the workers "
                      "(default $HOME/codereason_data)")

    train = argparse.ArgumentParser(add_help=False)
    train.add_argument("--gin_file", action="append", default=[],
                       help="gin file under the repository (repeatable, in order)")
    train.add_argument("--run_dir", help="gs://BUCKET/... shared by all hosts")
    train.add_argument("--tfds_dir", help="CODEREASON_TFDS_DIR on the workers: where the "
                       "prepared *_tfds corpora are (gs://BUCKET/tfds)")
    train.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                       help="extra environment for the trainer (repeatable)")
    train.add_argument("--no_follow", action="store_true",
                       help="do not stream worker 0's log after starting")

    grace = argparse.ArgumentParser(add_help=False)
    grace.add_argument("--grace_s", type=int, default=120,
                       help="seconds between SIGTERM (checkpoint and exit) and SIGKILL")

    parser = argparse.ArgumentParser(prog="python -m launch.tpu",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="Gin bindings --gin.NAME=VALUE after `run`/`resume` "
                                     "are passed to the trainer.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create", parents=[common, machine, install, train, data, code, unattended],
                   help="create the TPU VM(s); with --unattended and the run flags they "
                   "start the run themselves")
    sub.add_parser("setup", parents=[common, ship, install, data, code],
                   help="install the run's stored code (--run_dir) or a commit on every "
                   "worker").add_argument("--run_dir", help="gs://BUCKET/... of the run")
    sub.add_parser("run", parents=[common, machine, train, data, code],
                   help="start training on every worker (nohup), follow worker 0")
    sub.add_parser("resume", parents=[common, machine, ship, install, train, data, grace, code,
                                      unattended],
                   help="after a preemption: recreate if needed, set up, relaunch").add_argument(
        "--assume_state", default="PREEMPTED",
        help="with --dry_run: the state to pretend the TPU is in (READY, PREEMPTED, NOT_FOUND)")
    resume = sub.choices["resume"]
    resume.add_argument("--force_setup", action="store_true",
                        help="set up again even if the TPU survived")
    logs = sub.add_parser("logs", parents=[common], help="show a worker's training log")
    logs.add_argument("--worker", default="0", help="worker index or 'all'")
    logs.add_argument("--lines", type=int, default=100)
    logs.add_argument("--follow", action="store_true", help="keep streaming (tail -F)")
    logs.add_argument("--run_dir", help="read the logs kept in the run's bucket folder (also "
                      "of VMs that no longer exist) instead of the workers'")
    logs.add_argument("--attempt", type=int, help="with --run_dir: that attempt's logs")
    status = sub.add_parser("status", parents=[common],
                            help="TPU state and each worker's trainer")
    status.add_argument("--run_dir", help="also the run's attempts log and whether it is over "
                        "(unattended runs)")
    status.add_argument("--lines", type=int, default=10, help="attempt lines shown")
    sub.add_parser("stop", parents=[common, grace],
                   help="SIGTERM the trainer on every worker (it checkpoints), then SIGKILL")
    sub.add_parser("delete", parents=[common], help="delete the TPU (or queued resource)")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    gin_args = [a for a in argv if a.startswith("--gin.")]
    rest = [a for a in argv if not a.startswith("--gin.")]
    args = build_parser().parse_args(rest)
    args.gin_bindings = gin_args
    for arg in gin_args:
        if "=" not in arg or len(arg.split("=", 1)[0]) <= len("--gin."):
            raise LaunchError(f"Malformed gin flag {arg!r}; write --gin.NAME=VALUE.")
    if gin_args and args.command not in ("run", "resume") and not (
            args.command == "create" and getattr(args, "unattended", False)):
        raise LaunchError(f"--gin.* bindings only apply to run, resume and create "
                          f"--unattended, not {args.command}.")
    if not args.zone:
        raise LaunchError("--zone is required (e.g. --zone=us-central2-b for v4).")
    for name in ("accelerator_type",):
        if args.command in ("create", "run", "resume") and not getattr(args, name):
            raise LaunchError(f"--{name} is required for {args.command} (e.g. v4-32).")
    for item in args.env if hasattr(args, "env") else ():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", item):
            raise LaunchError(f"--env={item} must be KEY=VALUE.")
    if getattr(args, "best_effort", False) and not args.queued:
        raise LaunchError("--best_effort needs --queued (a queued-resource request).")
    if getattr(args, "spot", False) and getattr(args, "best_effort", False):
        raise LaunchError("--spot and --best_effort exclude each other.")
    for attr, default in (("gin_file", []), ("env", []), ("run_dir", None), ("no_follow", False),
                          ("data_dir", None), ("tfds_dir", None), ("unattended", False),
                          ("allow_dirty", False), ("allow_code_change", False)):
        if not hasattr(args, attr):
            setattr(args, attr, default)
    if args.command == "create" and not args.unattended and (args.run_dir or args.gin_file):
        raise LaunchError("create takes --run_dir/--gin_file only with --unattended (the VMs "
                          "then start the run themselves); otherwise pass them to `run`.")
    if args.run_dir and (getattr(args, "ref", "HEAD") != "HEAD" or getattr(args, "stage", None)):
        raise LaunchError("--ref and --stage do not apply with --run_dir: a run's code is the "
                          "commit stored with it at its first launch.")
    if args.unattended and args.max_attempts < 1:
        raise LaunchError(f"--max_attempts={args.max_attempts} must be at least 1.")
    return args


def main(argv: Sequence[str] | None = None, runner: Runner | None = None,
         sleep: Callable[[float], None] = time.sleep) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        launcher = Launcher(args, runner or Runner(dry_run=args.dry_run), sleep=sleep)
        if args.command in ("create", "run", "resume"):
            launcher.tpu()  # an unknown accelerator type stops here
        getattr(launcher, args.command)()
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
