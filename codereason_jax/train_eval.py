"""Periodic evaluation during training: held-out loss per training source and task metrics.

Every ``TrainConfig.eval_every`` steps the trainer calls the evaluator made here: the loss on
``eval_batches`` fixed validation batches of each training task, and the metrics of
``eval_tasks`` (at most ``eval_max_examples`` examples each). The batches are read once, so
every evaluation of a run sees the same ones.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Sequence

import flax.linen as nn
import jax

from codereason_jax import partitioning
from codereason_jax.losses import cross_entropy
from codereason_jax.model import PanGuConfig, PanGuDecoder

if TYPE_CHECKING:
    from codereason_jax.trainer import TrainConfig


def make_evaluator(model: PanGuDecoder, model_config: PanGuConfig, config: TrainConfig,
                   rules: partitioning.Rules, batch_sharding: Any,
                   sources: Sequence[str]) -> Callable[[Any], dict[str, float]]:
    """params -> {"eval_loss/<task>": ..., "eval/<task>/<metric>": ...} (deterministic)."""
    from codereason_jax import evaluate
    from seqio_tasks import mixing
    from seqio_tasks.tasks import default_split

    batches = {}
    for task in sources:
        iterator = mixing.mixture_iterator(
            task, sequence_length=config.sequence_length, batch_size=config.batch_size,
            seed=config.seed, split="validation", host_index=jax.process_index(),
            host_count=jax.process_count(), pack_instructions=config.pack_instructions,
            overlong=config.overlong, row_shuffle_buffer=config.row_shuffle_buffer)
        batches[task] = [{k: v for k, v in next(iterator).items() if k != "source_ids"}
                         for _ in range(config.eval_batches)]

    @jax.jit
    def loss_sums(params, batch):
        with nn.logical_axis_rules(rules):
            logits = model.apply({"params": params}, batch["inputs"], batch["positions"],
                                 batch["segment_ids"])
        return cross_entropy(logits, batch["targets"], batch["loss_weights"])

    eval_model = PanGuDecoder(dataclasses.replace(model_config, dropout_rate=0.0))
    eval_config = evaluate.EvalConfig(tasks=config.eval_tasks,
                                      max_examples=config.eval_max_examples,
                                      execute_tests=False)

    def evaluator(params) -> dict[str, float]:
        results = {}
        for task, host_batches in batches.items():
            total = weight = 0.0
            for host_batch in host_batches:
                batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
                         for k, v in host_batch.items()}
                t, w = jax.device_get(loss_sums(params, batch))
                total, weight = total + float(t), weight + float(w)
            results[f"eval_loss/{task}"] = total / max(weight, 1.0)
        for task in config.eval_tasks:
            for name, value in evaluate.evaluate_task(task, default_split(task), eval_model,
                                                      params, eval_config)["metrics"].items():
                if isinstance(value, float):
                    results[f"eval/{task}/{name}"] = value
        return results

    return evaluator
