"""Hyperparameters of the PanGu-α decoder, validated once at construction.

The dataclass is plain Python; gin binds it at the boundary (``codereason_jax.gin_utils``), so a
gin file writes ``PanGuConfig.d_model = 2560``. Every error names the field (and so the gin
binding) to change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from codereason_jax.config_types import ConfigError, check_field_types

ACTIVATIONS = ("fast_gelu", "gelu_erf", "gelu_tanh")
INIT_SCHEMES = ("paper", "scaled")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("einsum", "xla", "cudnn", "auto")


@dataclasses.dataclass(frozen=True)
class PanGuConfig:
    """Shape and numerics of a PanGu-α decoder.

    ``num_layers`` counts the query layer, as the paper's code does: a 2.6B model has 31 ordinary
    blocks plus the query layer (32). Defaults follow the paper's released code (CodeLLM) except
    where noted.
    """

    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    # Rows of the position and top-query tables: the longest sequence the model accepts.
    max_seq_len: int
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-5
    # fast_gelu = x·σ(1.702x) as in the paper's code; gelu_erf as the HF port of the released
    # weights; gelu_tanh as MindSpore's GeLU kernel.
    activation: str = "fast_gelu"
    # "paper": every kernel and embedding N(0, 0.01), biases 0 (CodeLLM).
    # "scaled": N(0, 0.02) with attention/FFN output projections N(0, 0.02/sqrt(2·num_layers))
    # (the original PanGu-α / GPT-2 scheme).
    init_scheme: str = "paper"
    # Parameters are stored in param_dtype; matmuls run in dtype. LayerNorm, softmax and the
    # logits are always float32.
    param_dtype: str = "float32"
    dtype: str = "float32"
    # False drops the query layer: num_layers ordinary blocks, final LayerNorm, tied head
    # (a plain GPT), for the architecture ablation the paper leaves open.
    use_query_layer: bool = True
    # Rematerialisation of each block in the backward pass.
    remat_policy: str = "none"
    # Stack the ordinary blocks and run them with nn.scan (compile time independent of depth).
    scan_layers: bool = False
    # Speed options (codereason_jax.bench). Neither changes a parameter's name or shape.
    # attention: "einsum" (the reference: explicit scores, mask, softmax, dropout);
    # "xla" / "cudnn": jax.nn.dot_product_attention with that implementation (cudnn is the fused
    # flash kernel, GPU and bf16/fp16 only); "auto": cudnn on a GPU in bf16/fp16, else xla.
    # The fused paths use is_causal=True, plus the document mask only when segment ids are
    # given, and fall back to "einsum" while attention dropout is active. They are equal to
    # "einsum" up to rounding, not bitwise.
    attention: str = "einsum"
    # A fusion boundary on each block's output (for XLA:CPU). XLA:CPU otherwise
    # fuses the residual-stream gradient of all the blocks above into every consumer,
    # recomputing it O(L^2) times, and it drops optimization barriers before fusing; the
    # boundary is a runtime conditional with two identity branches (layers.materialize), which
    # on a GPU would cost a host round trip per block: leave it off there. Values are those
    # of the reference up to rounding (the fusions differ, so the gradient's rounding does).
    block_barrier: bool = False
    # The tied head's backward as a custom VJP (pangu.tied_head): it transposes h instead of
    # the logit gradient (faster on XLA:CPU; the table gradient's sums in another order), and
    # with a bf16/fp16 compute dtype runs both backward matmuls in that dtype (autodiff runs
    # them in float32 because the logits are float32).
    head_vjp: bool = False
    # Ids at and above used_vocab_size are rows that only pad the embedding table (the
    # released 13B weights pad PanGu-α's 40,000 pieces to 40,064): their logits are set to the
    # float32 minimum, so they never win an argmax nor take probability mass. None: all used.
    used_vocab_size: int | None = None

    def __post_init__(self):
        check_field_types(self)
        positive = ("vocab_size", "num_layers", "d_model", "num_heads", "d_ff", "max_seq_len")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(
                    f"PanGuConfig.{name} must be a positive integer, got {value!r}; "
                    f"set it in the model gin file (PanGuConfig.{name} = ...)."
                )
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"PanGuConfig.d_model={self.d_model} is not divisible by "
                f"PanGuConfig.num_heads={self.num_heads}; pick num_heads that divides d_model "
                f"(e.g. {_divisor_hint(self.d_model, self.num_heads)})."
            )
        if self.use_query_layer and self.num_layers < 2:
            raise ConfigError(
                f"PanGuConfig.num_layers={self.num_layers} counts the query layer, so it must be "
                ">= 2 when use_query_layer=True (at least one ordinary block below it)."
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"PanGuConfig.dropout_rate={self.dropout_rate} must be in [0, 1).")
        if self.layer_norm_epsilon <= 0:
            raise ConfigError(
                f"PanGuConfig.layer_norm_epsilon={self.layer_norm_epsilon} must be > 0."
            )
        if self.used_vocab_size is not None and not (
                isinstance(self.used_vocab_size, int)
                and 0 < self.used_vocab_size <= self.vocab_size):
            raise ConfigError(
                f"PanGuConfig.used_vocab_size={self.used_vocab_size!r} must be an integer in "
                f"(0, vocab_size={self.vocab_size}], or None when every row is a token.")
        for name, allowed in (
            ("activation", ACTIVATIONS),
            ("init_scheme", INIT_SCHEMES),
            ("remat_policy", REMAT_POLICIES),
            ("attention", ATTENTION_IMPLS),
            ("param_dtype", DTYPES),
            ("dtype", DTYPES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"PanGuConfig.{name}={getattr(self, name)!r} is not one of {allowed}."
                )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def num_ordinary_layers(self) -> int:
        """Blocks below the query layer (all of them without a query layer)."""
        return self.num_layers - 1 if self.use_query_layer else self.num_layers

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def weights_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def num_params(self) -> int:
        """Analytic parameter count (tied head counted once); tests check the model against it."""
        d = self.d_model
        per_layer = 4 * (d * d + d) + (2 * d * self.d_ff + self.d_ff + d) + 4 * d
        tables = self.vocab_size * d + self.max_seq_len * d
        if self.use_query_layer:
            tables += self.max_seq_len * d
        return self.num_layers * per_layer + tables + 2 * d


def _divisor_hint(d_model: int, num_heads: int) -> int:
    """The divisor of d_model closest to num_heads, to put in the error message."""
    divisors = [h for h in range(1, int(math.isqrt(d_model)) + 1) if d_model % h == 0]
    divisors += [d_model // h for h in divisors]
    return min(divisors, key=lambda h: (abs(h - num_heads), h))


def check_vocabulary_fits(vocabulary: Any, model_config: PanGuConfig) -> None:
    """Every token id of the tasks' vocabulary must have an embedding row."""
    used = model_config.used_vocab_size
    if used is not None and vocabulary.vocab_size > used:
        raise ConfigError(
            f"the tasks' vocabulary has {vocabulary.vocab_size} ids but the model uses only "
            f"PanGuConfig.used_vocab_size={used} of its {model_config.vocab_size} rows (the "
            "rest pad the table and are masked); choose the vocabulary the weights were trained "
            "with, or raise used_vocab_size.")
    if vocabulary.vocab_size > model_config.vocab_size:
        raise ConfigError(
            f"the tasks' vocabulary has {vocabulary.vocab_size} ids but "
            f"PanGuConfig.vocab_size={model_config.vocab_size}; bind PanGuConfig.vocab_size >= "
            f"{vocabulary.vocab_size} or choose another vocabulary (TrainConfig.vocabulary / EvalConfig.vocabulary).")
