"""The evaluate command's settings (EvalConfig, bound from gin) and which of them change results."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from codereason_jax import gin_utils
from codereason_jax.config_types import check_field_types
from codereason_jax.model.config import ConfigError


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Which tasks, how to score them, and how much to decode."""
    tasks: tuple[str, ...] = ("eval_embedded_codeqa", "eval_embedded_codegen")
    # Per-task split overrides, e.g. {'eval_mbpp': 'test'}; a task not named here is evaluated
    # on the split the paper used (seqio_tasks.tasks.default_split), others on 'validation'.
    split: Mapping[str, str] = dataclasses.field(default_factory=dict)
    mode: str = "corrected"  # paper | corrected | loglik | loglik_norm
    batch_size: int = 32
    max_examples: int | None = None  # per task; None: all
    max_new_tokens: int = 128
    sampling: str = "greedy"  # greedy | sample | paper (top-k 3 with the paper's penalties)
    seed: int = 0
    execute_tests: bool = True  # pass@k for generation tasks that carry tests
    # Samples per prompt for pass@k (1: the one greedy or sampled completion gives pass@1;
    # n > 1 draws n seeded samples and reports the unbiased pass@k for k = 1, 5, 10 <= n).
    num_samples: int = 1
    # DuReader: score only the first 20 characters of a prediction, as the paper's notebook.
    dureader_truncate_to: int | None = None
    mesh_shape: tuple[int, int, int] = (-1, 1, 1)
    data_dir: str | None = None
    # The tasks' vocabulary, as TrainConfig.vocabulary: it must be the one the model was
    # trained with ("pangu:PATH" for converted PanGu-α weights).
    vocabulary: str | None = None
    # Contamination: share of each task's examples that share a 13-gram (whitespace tokens)
    # with the train split of these tasks (pre-training and instruction corpora).
    contamination_corpora: tuple[str, ...] = ()
    contamination_n: int = 13
    # Benchmark records that cannot be scored (empty answer, answer not an option, ...) are
    # skipped and counted; strict makes the first one an error naming file:line. A task whose
    # skipped share exceeds max_skipped_fraction fails (a wrong file is never scored on a
    # sliver of its rows).
    strict: bool = False
    max_skipped_fraction: float = 0.05

    def __post_init__(self):
        if isinstance(self.split, str) or not isinstance(self.split, Mapping):
            raise ConfigError(
                f"EvalConfig.split should map task names to splits, e.g. "
                f"{{'eval_mbpp': 'test'}}, got {self.split!r}. Each task has its own default "
                "split (the one the paper evaluated), so one split for all tasks is not "
                "accepted.")
        check_field_types(self)
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ConfigError(f"EvalConfig.max_skipped_fraction should be in [0, 1], got "
                              f"{self.max_skipped_fraction!r}.")

    def read_policy(self):
        from seqio_tasks.sources.rows import ReadPolicy

        return ReadPolicy(self.strict, self.max_skipped_fraction)


gin_utils.register(EvalConfig)

# EvalConfig fields that change a task's numbers (a result computed under others is stale);
# batch_size, mesh_shape and data_dir do not (the data file's own hash is fingerprinted).
RESULT_SETTINGS = ("mode", "max_examples", "max_new_tokens", "sampling", "seed",
                   "execute_tests", "num_samples", "dureader_truncate_to",
                   "contamination_corpora", "contamination_n", "strict",
                   "max_skipped_fraction")
