"""SeqIO rate functions: mix by example count, by token count, or by fixed weights.

Fixed weights are plain numbers in a mixture. The two functions here derive a task's rate from
its data, for static mixtures in the data's natural proportions. Token counts matter because a
code file and a paragraph of prose differ in length by an order of magnitude.
"""

from __future__ import annotations

import functools

import numpy as np
import seqio

TOKEN_SAMPLE_SIZE = 2000


def rate_num_examples(task: seqio.Task, split: str = "train") -> float:
    """Number of examples in the task's split (counted by reading its source once)."""
    count = task.source.num_input_examples(split)
    if not count:
        raise ValueError(f"Task {task.name!r} split {split!r} has no examples to weight by.")
    return float(count)


@functools.lru_cache(maxsize=None)
def _mean_tokens(task_name: str, split: str, sample_size: int) -> float:
    task = seqio.get_mixture_or_task(task_name)
    ds = task.get_dataset(sequence_length=None, split=split, shuffle=False,
                          trim_output_features=False).take(sample_size)
    lengths = [sum(len(example[k]) for k in task.output_features if k in example)
               for example in ds.as_numpy_iterator()]
    return float(np.mean(lengths))


def rate_num_tokens(task: seqio.Task, split: str = "train",
                    sample_size: int = TOKEN_SAMPLE_SIZE) -> float:
    """Tokens in the task's split: examples x mean tokens per example.

    The mean is taken over the first ``sample_size`` examples in source order, so the count is
    exact for tasks up to that size and an estimate (stated as such) beyond it.
    """
    return rate_num_examples(task, split) * _mean_tokens(task.name, split, sample_size)
