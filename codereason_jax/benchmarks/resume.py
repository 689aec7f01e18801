"""What a resume costs: the time to the first batch of a run restarted at step s.

The streaming path re-reads, re-tokenizes and re-packs every stream's consumed prefix, so its
cost grows with s; the row store computes the rows of step s and reads them, so its cost does
not. Measured at steps 0, 1,000 and 1,000,000 (epochs wrap as in training); where the
streaming path would take too long (more rows to skip than ``--resume_stream_rows``), its time
is estimated from the consumed prefix at the per-row rate it showed at step 1,000. ``suite_resume``
is the resume suite of ``python -m codereason_jax.bench``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from codereason_jax.benchmarks import pipeline
from codereason_jax.benchmarks.results import echo, format_rows

RESUME_STEPS = (0, 1_000, 1_000_000)


def first_batch_s(path: str, store_dir: str, step: int, seq_len: int, batch_size: int) -> float:
    """Seconds from building the iterator at ``step`` to holding its first batch."""
    from seqio_tasks import mixing
    from seqio_tasks.row_store.reader import store_iterator

    start = time.perf_counter()
    if path == "store":
        iterator = store_iterator(pipeline.PRETRAIN_MIXTURE, store_dir, sequence_length=seq_len,
                                  batch_size=batch_size, start_step=step)
    else:
        iterator = mixing.mixture_iterator(pipeline.PRETRAIN_MIXTURE, sequence_length=seq_len,
                                           batch_size=batch_size, start_step=step)
    next(iterator)
    return time.perf_counter() - start


def suite_resume(args: argparse.Namespace) -> list[dict[str, Any]]:
    from seqio_tasks.mixing import MixturePlan
    from seqio_tasks.registry import resolve_schedule

    seq_len, batch = args.pipeline_seq_len, args.pipeline_batch
    echo(f"[bench] resume: row store of the embedded mixtures at sequence length {seq_len} ...")
    prepared_at = time.perf_counter()
    store_dir, manifest = pipeline.bench_store(seq_len, getattr(args, "store_dir", None))
    prepared_s = time.perf_counter() - prepared_at
    sources = manifest["sources"]
    tokens = sum(s["real_tokens"] for s in sources.values())
    rows = [{"suite": "resume", "kind": "store", "store_dir": store_dir,
             "tokens": tokens, "bytes": sum(s["bytes"] for s in sources.values()),
             "bytes_per_token": sum(s["bytes"] for s in sources.values()) / tokens,
             "prepare_tokens_per_s_per_worker": tokens / sum(s["seconds"]
                                                             for s in sources.values()),
             "this_run_s": prepared_s}]
    echo(format_rows(rows))
    plan = MixturePlan(resolve_schedule(pipeline.PRETRAIN_MIXTURE, 1000), batch)
    first_batch_s("store", store_dir, 0, seq_len, batch)  # imports and task registration
    stream_rate = None  # seconds per consumed row, measured at step 1,000
    for path in ("store", "stream"):
        base = None
        for step in RESUME_STEPS:
            skipped = int(plan.consumed_before(step).sum())
            row = {"suite": "resume", "kind": "resume", "path": path, "step": step,
                   "rows_skipped": skipped, "batch_size": batch, "seq_len": seq_len}
            if path == "stream" and skipped > args.resume_stream_rows:
                row["first_batch_s"] = base + stream_rate * skipped
                row["estimated"] = True
            else:
                row["first_batch_s"] = first_batch_s(path, store_dir, step, seq_len, batch)
                row["estimated"] = False
                if step == 0:
                    base = row["first_batch_s"]
                elif path == "stream":
                    stream_rate = max(row["first_batch_s"] - base, 0.0) / skipped
            rows.append(row)
            echo(format_rows([row]))
    return rows
