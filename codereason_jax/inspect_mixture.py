"""Inspect a mixture or schedule: expected vs realised shares per stage, packing, examples.

    python -m codereason_jax.inspect_mixture --mixture=sft_stepwise_decrease_embedded \
        --steps=40 --batch_size=16 --sequence_length=512 [--plot=shares.png]

Shares are computed over the first N steps of the deterministic batch sequence the trainer
sees (``seqio_tasks.mixing``): per task, the expected share of sequences (the schedule), and the
realised shares of sequences, real tokens, loss tokens and examples (documents or instruction
examples), plus packing efficiency and what was dropped or truncated.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (under SeqIO) is only the reader

import sys
from typing import Sequence

import numpy as np

from codereason_jax import cli
from codereason_jax.model.config import ConfigError


def _bar(done: int, total: int) -> str:
    width = 30
    filled = width * done // max(1, total)
    return f"\r[{'#' * filled}{'.' * (width - filled)}] step {done}/{total}"


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.inspect_mixture",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixture", required=True, help="schedule, mixture or task name")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--total_steps", type=int, default=None,
                        help="run length that places a schedule's phases (default: --steps)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--sequence_length", type=int, default=1024)
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pack_instructions", action="store_true")
    parser.add_argument("--examples", type=int, default=1, help="decoded rows shown per task")
    parser.add_argument("--plot", help="write a PNG of the realised shares per step here")
    args = parser.parse_args(argv)

    from seqio_tasks import mixing, schedules

    try:
        iterator = mixing.mixture_iterator(
            args.mixture, sequence_length=args.sequence_length, batch_size=args.batch_size,
            seed=args.seed, split=args.split, total_steps=args.total_steps or args.steps,
            pack_instructions=args.pack_instructions)
    except (schedules.ScheduleError, ConfigError, ValueError) as err:
        raise cli.UserError(str(err)) from err
    plan, sources = iterator.plan, iterator.plan.sources
    schedule = plan.schedule
    n_src = len(sources)
    # Per step and source: sequences, real tokens, loss tokens, examples (segments).
    counts = np.zeros((args.steps, 4, n_src))
    shown: dict[int, list[np.ndarray]] = {}
    for step in range(args.steps):
        batch = next(iterator)
        for j in range(n_src):
            rows = batch["source_ids"] == j
            counts[step, 0, j] = rows.sum()
            counts[step, 1, j] = (batch["segment_ids"][rows] > 0).sum()
            counts[step, 2, j] = batch["loss_weights"][rows].sum()
            counts[step, 3, j] = sum(len(np.unique(s[s > 0])) for s in batch["segment_ids"][rows])
            if rows.any() and len(shown.setdefault(j, [])) < args.examples:
                shown[j].append(batch["inputs"][rows][0])
        print(_bar(step + 1, args.steps), end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    print(f"{args.mixture}: {len(schedule.stages)} stage(s), batch {args.batch_size} x "
          f"{args.sequence_length} tokens, {args.steps} steps, seed {args.seed}, "
          f"schedule fingerprint {schedule.fingerprint()}")
    name_width = max(len(s) for s in sources)
    for i, stage in enumerate(schedule.stages):
        end = schedule.stages[i + 1].start_step if i + 1 < len(schedule.stages) else None
        steps = slice(stage.start_step, min(end or args.steps, args.steps))
        if steps.start >= args.steps:
            print(f"stage {i + 1} (from step {stage.start_step}): not reached in {args.steps} "
                  "steps")
            continue
        totals = counts[steps].sum(axis=0)  # [4, n_src]
        print(f"\nstage {i + 1}: steps {steps.start}-{steps.stop - 1}")
        print(f"  {'task'.ljust(name_width)}  expected  sequences  tokens  loss-tokens  "
              "examples  packing")
        expected = schedule.shares(i)
        for j, name in enumerate(sources):
            share = [100 * totals[k, j] / max(1, totals[k].sum()) for k in range(4)]
            efficiency = 100 * totals[1, j] / max(1, totals[0, j] * args.sequence_length)
            print(f"  {name.ljust(name_width)}  {100 * expected[name]:7.1f}%  {share[0]:8.1f}%  "
                  f"{share[1]:5.1f}%  {share[2]:10.1f}%  {share[3]:7.1f}%  {efficiency:6.1f}%")

    print("\npacking over the whole run:")
    for name, stream in zip(sources, iterator.streams):
        s = stream.packer.stats
        print(f"  {name.ljust(name_width)}  examples {s.examples}, rows {s.rows}, "
              f"efficiency {100 * s.efficiency:.1f}%, truncated {s.truncated}, "
              f"dropped {s.dropped} (longer than a row)")

    vocabulary = iterator.streams[0].task.output_features["targets"].vocabulary
    for j, rows in sorted(shown.items()):
        for row in rows:
            text = vocabulary.decode(row[row > 0].tolist())
            print(f"\n--- {sources[j]} (decoded row, first 400 characters) ---\n{text[:400]}")

    if args.plot:
        _plot(counts, sources, schedule, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


def _plot(counts: np.ndarray, sources: Sequence[str], schedule, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = counts[:, 1, :]
    share = tokens / np.maximum(1, tokens.sum(axis=1, keepdims=True))
    steps = np.arange(len(share))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.stackplot(steps, share.T * 100, labels=sources, alpha=0.8, step="post")
    for stage in schedule.stages[1:]:
        if stage.start_step < len(share):
            ax.axvline(stage.start_step, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("share of real tokens per batch (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{schedule.name}: realised share per step")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
