"""Prepare a run's packed rows once, for the row-store input pipeline.

    python -m codereason_jax.prepare_rows --gin_file=gin/cells/pretrain_code.gin \\
        [--gin_file=...] --store_dir=/mnt/gcs/rows/pretrain_1024 \\
        [--num_shards=64] [--beam_runner=DataflowRunner --beam_options=KEY=VALUE,...]

Takes the same gin files as ``train`` and packs every source of ``TrainConfig.mixture`` (plus any
``--mixture``) with the run's sequence length, packing, overlong policy and vocabulary into
ArrayRecord shards under --store_dir (default: ``TrainConfig.row_store_dir``). Rerunning
completes an interrupted preparation, adds sources a store lacks, or reuses a finished store.
Then train with ``--gin.TrainConfig.data_pipeline="'store'"`` and
``--gin.TrainConfig.row_store_dir="'DIR'"``. Without a Beam flag the shards are written in this
process; with one, by an Apache Beam pipeline (pip install -e '.[beam]').
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (under SeqIO) is only the reader

import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from codereason_jax import cli, gin_utils  # noqa: E402
from codereason_jax.trainer import TrainConfig  # noqa: E402

gin_utils.register(TrainConfig)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.prepare_rows",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--store_dir", help="where the store goes (default: "
                        "TrainConfig.row_store_dir)")
    parser.add_argument("--mixture", action="append", default=[],
                        help="another schedule, mixture or task whose sources to add "
                        "(repeatable)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="files per source (default 4 in process; on Beam, one work item "
                        "each: choose at least the number of workers)")
    parser.add_argument("--beam_runner", help="prepare with Apache Beam on this runner")
    parser.add_argument("--beam_options", action="append", default=[],
                        help="Beam pipeline flags KEY=VALUE[,KEY=VALUE...] (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a store prepared with other settings")
    cli.add_debug_flag(parser)
    args = gin_utils.parse_command_line(parser, argv)
    config = gin_utils.build(TrainConfig)
    store_dir = args.store_dir or config.row_store_dir
    if not store_dir:
        raise cli.UserError("no store directory: pass --store_dir or bind "
                            "TrainConfig.row_store_dir.")
    if args.num_shards is not None and args.num_shards < 1:
        raise cli.UserError(f"--num_shards={args.num_shards} must be positive.")
    if config.data_dir:
        os.environ["CODEREASON_DATA_DIR"] = config.data_dir
    from seqio_tasks.default_vocabulary import use_vocabulary

    use_vocabulary(config.vocabulary)
    from seqio_tasks.row_store import prepare
    from seqio_tasks.tfds_builders.prepare import parse_beam_options

    use_beam = bool(args.beam_runner or args.beam_options)
    if use_beam:
        from seqio_tasks.tfds_builders.builders import BEAM_MISSING, beam_is_available

        if not beam_is_available():
            raise cli.UserError(BEAM_MISSING)
    settings = prepare.settings_for(config.sequence_length, args.split,
                                    config.pack_instructions, config.overlong)
    names = [config.mixture, *args.mixture]
    print(f"preparing the rows of {', '.join(names)} (sequence length "
          f"{config.sequence_length}, {settings.vocabulary['spec']} vocabulary of "
          f"{settings.vocabulary['size']} ids) in {store_dir}"
          + (" with Beam" if use_beam else ""), flush=True)
    start = time.perf_counter()
    manifest = prepare.prepare_store(
        names, store_dir, settings, num_shards=args.num_shards or prepare.DEFAULT_NUM_SHARDS,
        beam_runner=args.beam_runner, beam_flags=parse_beam_options(args.beam_options),
        overwrite=args.overwrite)
    for line in describe(manifest, prepare.source_tasks(names)):
        print(line)
    print(f"done in {time.perf_counter() - start:.1f} s. Train from it with "
          f"--gin.TrainConfig.data_pipeline=\"'store'\" "
          f"--gin.TrainConfig.row_store_dir=\"'{store_dir}'\"")
    return 0


def describe(manifest: dict[str, Any], tasks: Sequence[str]) -> list[str]:
    """One line per source: rows, tokens, bytes per token, and packing throughput."""
    lines = []
    for task in tasks:
        s = manifest["sources"][task]
        rate = s["real_tokens"] / max(s["seconds"], 1e-9)
        dropped = (f", {s['dropped_overlong']} dropped and {s['truncated_overlong']} truncated "
                   "as longer than a row" if s["dropped_overlong"] or s["truncated_overlong"]
                   else "")
        lines.append(f"  {task}: {s['rows']:,} rows ({s['kind']}) from {s['examples']:,} "
                     f"examples{dropped}; {s['real_tokens']:,} tokens in {s['bytes'] / 2**20:.1f}"
                     f" MiB ({s['bytes'] / max(s['real_tokens'], 1):.2f} bytes/token) in "
                     f"{s['num_shards']} shards; packed at {rate:,.0f} tokens/s per worker")
    return lines


if __name__ == "__main__":
    sys.exit(main())
