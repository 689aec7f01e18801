"""Input-pipeline throughput: packed tokens/s of a mixture on one host, against the model's need.

The need is what the 2.6B model consumes per host on a TPU v4-32 (16 chips, 4 hosts) at 50 %
MFU under the FLOP convention of ``codereason_jax.train_metrics``; the pipeline must deliver at
least 3x that. Every host reads and packs every stream (the rows of the other hosts are
discarded: batches do not depend on the host count), so a host's pipeline does the work of
the *global* batch; both views are reported: tokens/s delivered with host_count=1 (the global
rate one host can produce) and the host-local rate with host_count=4.

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


# -------------------------------------------------------------------------- pipeline suite


def suite_pipeline(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both mixtures at 1 and 4 hosts, each against the model's need (3x headroom wanted)."""
    need = model_need_per_host()
    rows = []
    for mixture, pack in ((PRETRAIN_MIXTURE, False), (INSTRUCTION_MIXTURE, False)):
        for host_count in (1, 4):
            label = f"pipeline {mixture} hosts={host_count}"
            echo(f"[bench] {label} ...")

            def run(mixture: str = mixture, host_count: int = host_count,
                    pack: bool = pack) -> dict[str, Any]:
                result = measure(mixture, args.pipeline_seq_len, args.pipeline_batch,
                                 args.pipeline_steps, 0, host_count, pack)
                per_host = need["tokens_per_s_per_host"]
                result["need_tokens_per_s_per_host"] = per_host
                result["headroom"] = result["real_tokens_per_s"] / per_host
                result["headroom_ok"] = result["headroom"] >= 3.0
                return result

            row = guarded(label, run)
            row.update({"suite": "pipeline", "mixture": mixture, "host_count": host_count,
                        "need": need})
            rows.append(row)
            echo(format_rows([row]))
    return rows
