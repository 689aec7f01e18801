"""Input-pipeline throughput: packed tokens/s of a mixture on one host, against the model's need.

The need is what the 2.6B model consumes per host on a TPU v4-32 (16 chips, 4 hosts) at 50 %
MFU under the FLOP convention of ``codereason_jax.train_metrics`` (4 chips a host, so the same
per host on any v4 slice); the pipeline must deliver at least 3x that. Two paths: the streaming
path (``seqio_tasks.mixing``), where every host reads and packs every stream and discards the
other hosts' rows, so a host's cost is the *global* batch's; and the row store
(``seqio_tasks.row_store``), where a host reads its own rows only.

SeqIO and TensorFlow are imported inside the functions only. ``suite_pipeline`` is the pipeline
suite of ``python -m codereason_jax.bench``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from codereason_jax import train_metrics
from codereason_jax.benchmarks import configs
from codereason_jax.benchmarks.results import echo, format_rows, guarded

PRETRAIN_MIXTURE = "pretrain_code_embedded"
INSTRUCTION_MIXTURE = "sft_text_code_embedded"


def model_need_per_host(mfu: float = 0.5, chips: int = 16, hosts: int = 4,
                        peak: float = 275e12, seq_len: int = 1024) -> dict[str, float]:
    """Tokens/s per host the 2.6B model consumes on a v4-32 (16 chips, 4 hosts) at ``mfu``."""
    config = configs.build_config("2_6b", {})
    per_token = train_metrics.training_flops_per_token(config, seq_len)
    per_chip = mfu * peak / per_token
    return {"tokens_per_s_per_chip": per_chip, "tokens_per_s_per_host": per_chip * chips / hosts,
            "tokens_per_s_global": per_chip * chips, "flops_per_token": per_token,
            "hosts": hosts, "chips": chips, "mfu": mfu, "peak_flops_per_chip": peak}


def measure(mixture: str, seq_len: int = 1024, batch_size: int = 32, steps: int = 20,
            host_index: int = 0, host_count: int = 1, pack_instructions: bool = False
            ) -> dict[str, Any]:
    """Packed rows per second of ``mixture`` after the first batch (which opens the streams)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from seqio_tasks import mixing

    start = time.perf_counter()
    iterator = mixing.mixture_iterator(mixture, sequence_length=seq_len, batch_size=batch_size,
                                       host_index=host_index, host_count=host_count,
                                       pack_instructions=pack_instructions)
    next(iterator)
    first_s = time.perf_counter() - start
    slots = real = loss = 0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
        slots += batch["inputs"].size
        real += int(np.sum(batch["segment_ids"] > 0))
        loss += int(np.sum(batch["loss_weights"] > 0))
    elapsed = time.perf_counter() - start
    return {"mixture": mixture, "seq_len": seq_len, "batch_size": batch_size, "steps": steps,
            "host_index": host_index, "host_count": host_count, "first_batch_s": first_s,
            "seconds": elapsed, "token_slots_per_s": slots / elapsed,
            "real_tokens_per_s": real / elapsed, "loss_tokens_per_s": loss / elapsed,
            "fill": real / max(slots, 1)}


def bench_store(seq_len: int, store_dir: str | None = None) -> tuple[str, dict[str, Any]]:
    """A row store of the embedded pre-training and instruction mixtures at ``seq_len``
    (prepared once, one shard a source, i.e. one worker each; reused afterwards)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from seqio_tasks.default_vocabulary import cache_dir
    from seqio_tasks.row_store import prepare

    settings = prepare.settings_for(seq_len)
    store_dir = store_dir or os.path.join(
        cache_dir(), "row_stores", f"bench_{seq_len}_{settings.vocabulary['sha256']}")
    manifest = prepare.prepare_store([PRETRAIN_MIXTURE, INSTRUCTION_MIXTURE], store_dir,
                                     settings, num_shards=1)
    return store_dir, manifest


def measure_store(mixture: str, store_dir: str, seq_len: int = 1024, batch_size: int = 32,
                  steps: int = 20, host_index: int = 0, host_count: int = 1,
                  start_step: int = 0) -> dict[str, Any]:
    """``measure`` for the row-store path: packed rows per second that host reads."""
    from seqio_tasks.row_store.reader import store_iterator

    start = time.perf_counter()
    iterator = store_iterator(mixture, store_dir, sequence_length=seq_len,
                              batch_size=batch_size, start_step=start_step,
                              host_index=host_index, host_count=host_count)
    next(iterator)
    first_s = time.perf_counter() - start
    real = slots = 0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
        slots += batch["inputs"].size
        real += int(np.sum(batch["segment_ids"] > 0))
    elapsed = time.perf_counter() - start
    return {"mixture": mixture, "seq_len": seq_len, "batch_size": batch_size, "steps": steps,
            "host_index": host_index, "host_count": host_count, "first_batch_s": first_s,
            "seconds": elapsed, "real_tokens_per_s": real / elapsed, "fill": real / max(slots, 1),
            "records_read": sum(s.records_read for s in iterator.sources)}


# -------------------------------------------------------------------------- pipeline suite

HOST_COUNTS = (1, 4, 16, 64)
STORE_STEPS_FACTOR = 10


def suite_pipeline(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both mixtures on both paths at 1, 4, 16 and 64 simulated hosts, each host with
    ``--pipeline_batch`` rows a step (the global batch grows with the hosts): the packed
    tokens/s host 0 delivers of its own rows, against what the model needs per host (3x wanted).

    A host needs the same tokens/s however many hosts there are (its chips' share), so a path
    scales when its per-host rate stays flat: the streaming path packs the global batch on
    every host (its per-host rate falls as 1/H), the store path reads the host's rows only."""
    need = model_need_per_host()
    store_dir, _ = bench_store(args.pipeline_seq_len, getattr(args, "store_dir", None))
    rows = []
    for path in ("stream", "store"):
        for mixture in (PRETRAIN_MIXTURE, INSTRUCTION_MIXTURE):
            for host_count in HOST_COUNTS:
                label = f"pipeline {path} {mixture} hosts={host_count}"
                echo(f"[bench] {label} ...")

                def run(path: str = path, mixture: str = mixture,
                        host_count: int = host_count) -> dict[str, Any]:
                    # Weak scaling: each host trains on --pipeline_batch rows a step, so the
                    # global batch grows with the hosts (as a pod's does).
                    batch = args.pipeline_batch * host_count
                    if path == "store":
                        # Reading is ~100x faster than packing: more steps for a stable figure.
                        result = measure_store(mixture, store_dir, args.pipeline_seq_len, batch,
                                               STORE_STEPS_FACTOR * args.pipeline_steps, 0,
                                               host_count)
                    else:
                        result = measure(mixture, args.pipeline_seq_len, batch,
                                         args.pipeline_steps, 0, host_count)
                    per_host = need["tokens_per_s_per_host"]
                    result["need_tokens_per_s_per_host"] = per_host
                    result["headroom"] = result["real_tokens_per_s"] / per_host
                    result["headroom_ok"] = result["headroom"] >= 3.0
                    return result

                row = guarded(label, run)
                row.update({"suite": "pipeline", "path": path, "mixture": mixture,
                            "host_count": host_count, "need": need})
                rows.append(row)
                echo(format_rows([row]))
    return rows
