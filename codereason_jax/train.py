"""Train (or resume) a PanGu-α model on a SeqIO mixture or schedule.

    python -m codereason_jax.train --gin_file=gin/runs/demo_cpu.gin --run_dir=runs/demo \\
        [--gin_file=...] [--gin.TrainConfig.num_steps=500]

Gin files compose T5X-style (model, data, schedule, run). Unknown or misspelt bindings and
missing required values stop before any work. The operative configuration is written to
RUN_DIR/config.gin. Running the same command again resumes from the newest complete checkpoint.
RUN_DIR may be a local path or a URL such as gs://BUCKET/runs/NAME (every host of a TPU slice
shares it; process 0 writes its files).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (under SeqIO) is only the reader

import argparse
import dataclasses
import sys
from typing import Sequence

import gin
from codereason_jax import (
    cli,
    evaluate,  # noqa: F401 (gin: EvalConfig registered before the parse)
    gin_utils,
    paths,
)
from codereason_jax.checkpoints import CheckpointConfig
from codereason_jax.optim import OptimizerConfig
from codereason_jax.dropped_rows import describe_dropped
from codereason_jax.trainer import TrainConfig, train

gin_utils.register(TrainConfig)


def _initialize_distributed(args: argparse.Namespace) -> None:
    """One process per host: jax.distributed before any other JAX call."""
    import jax

    if args.multihost == "auto":
        jax.distributed.initialize()
        return
    # Cross-process collectives for CPU devices (ignored by accelerators).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.train",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True,
                        help="where checkpoints, metrics, TensorBoard logs and config.gin go "
                        "(a local path or a URL such as gs://BUCKET/runs/NAME)")
    parser.add_argument("--init_from", metavar="RUN_DIR",
                        help="start a new run from the weights of another run's newest "
                        "checkpoint (sets TrainConfig.init_from; fresh optimizer, step 0)")
    parser.add_argument("--multihost", choices=("off", "auto", "explicit"), default="off",
                        help="auto: jax.distributed from the environment (Cloud TPU); "
                        "explicit: from --coordinator_address/--num_processes/--process_id")
    parser.add_argument("--coordinator_address", help="HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    cli.add_debug_flag(parser)
    args = gin_utils.parse_command_line(parser, argv)
    train_config = gin_utils.build(TrainConfig)
    if args.init_from:
        train_config = dataclasses.replace(train_config, init_from=args.init_from)
    model_config = gin_utils.model_config()
    optimizer_config = gin_utils.build(OptimizerConfig)
    checkpoint_config = gin_utils.build(CheckpointConfig)

    if args.multihost != "off":
        _initialize_distributed(args)

    def write_operative_config():
        import jax

        if jax.process_index() == 0:  # one copy, also in a run directory the hosts share
            paths.write_text(paths.join(args.run_dir, "config.gin"), gin.operative_config_str())

    try:
        summary = train(model_config, train_config, optimizer_config, checkpoint_config,
                        args.run_dir, on_start=write_operative_config)
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return cli.DIVERGED
    print(f"done: step {summary['step']}, last finite loss {summary['loss']:.4f}"
          + (" (preempted; rerun to resume)" if summary["preempted"] else ""))
    for line in describe_dropped(summary):
        print(f"  dropped by a rule: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
