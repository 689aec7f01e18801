"""The optimizer and learning-rate schedule of the paper's code (CodeLLM), in optax.

Paper vs code values: docs/training.md, "Optimisation". The paper's code trains with
MindSpore ``AdamWeightDecay`` (fp32 moments), which has **no bias correction**:

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - lr_s * (m / (sqrt(v) + eps) + wd * w)      wd only on non-bias, non-LayerNorm params

after clipping the gradients to global norm 1.0. ``optax.adamw`` bias-corrects, so the paper's
optimizer is assembled here from ``scale_by_adam_no_bias_correction``; ``optax.adamw`` stays
available (``OptimizerConfig.name="optax_adamw"``) as the ablation.

The schedule is a linear warmup followed by a cosine evaluated at the GLOBAL step (CodeLLM
``src/utils.py`` ``LearningRate``), not at ``step - warmup`` as
``optax.warmup_cosine_decay_schedule`` does; both variants are provided. Step 0 has learning rate 0 whenever there is a warmup, as in the
paper's code (MindSpore's global step also starts at 0).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codereason_jax.config_types import ConfigError, check_field_types

SCHEDULE_VARIANTS = ("paper", "standard")
OPTIMIZER_NAMES = ("paper_adamw", "optax_adamw")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool) and math.isfinite(value))


# --------------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------------


def _validate_schedule_args(peak: float, end: float, warmup_steps: int, decay_steps: int,
                            variant: str, where: str) -> None:
    if variant not in SCHEDULE_VARIANTS:
        raise ConfigError(f"{where}: variant={variant!r} must be one of {SCHEDULE_VARIANTS}.")
    if not _is_real(peak) or not _is_real(end):
        raise ConfigError(f"{where}: peak={peak!r} and end={end!r} must be finite numbers.")
    if end < 0:
        raise ConfigError(f"{where}: end={end} must be >= 0.")
    if peak < end:
        raise ConfigError(f"{where}: peak={peak} must be >= end={end}.")
    if not _is_int(warmup_steps) or warmup_steps < 0:
        raise ConfigError(f"{where}: warmup_steps={warmup_steps!r} must be an integer >= 0.")
    if not _is_int(decay_steps) or decay_steps <= 0:
        raise ConfigError(f"{where}: decay_steps={decay_steps!r} must be an integer > 0.")
    if variant == "standard" and decay_steps <= warmup_steps:
        raise ConfigError(
            f"{where}: decay_steps={decay_steps} must be > warmup_steps={warmup_steps} for the "
            "'standard' variant (its cosine runs over decay_steps - warmup_steps steps).")


def warmup_cosine_schedule(peak: float, end: float, warmup_steps: int, decay_steps: int,
                           variant: str = "paper") -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then a cosine down to ``end``.

    With s the global step, W = warmup_steps, D = decay_steps:

      s < W:   peak * s / W                                   (both variants)
      "paper" (CodeLLM ``LearningRate``; MindSpore WarmUpLR + CosineDecayLR), s >= W:
               end + (peak - end)/2 * (1 + cos(pi * min(s, D) / D))
        The cosine runs on the global step, so just after warmup the rate is already a little
        below ``peak`` (the curve is continuous only when W = 0), and it reaches ``end`` at s = D.
        D <= W is allowed: the rate then drops from the warmup straight to ``end``.
      "standard" (``optax.warmup_cosine_decay_schedule`` semantics), s >= W:
               end + (peak - end)/2 * (1 + cos(pi * min(s - W, D - W) / (D - W)))
        The cosine starts at ``peak`` at s = W and reaches ``end`` at s = D; needs D > W.
    """
    _validate_schedule_args(peak, end, warmup_steps, decay_steps, variant,
                            "warmup_cosine_schedule")
    peak, end = float(peak), float(end)
    warmup, decay = int(warmup_steps), int(decay_steps)
    if variant == "standard":  # optax's own: its decay_steps count the warmup too
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, decay, end)

    def schedule(count: jax.Array | int) -> jax.Array:
        # The paper's: only its cosine differs from optax's (it runs on the global step).
        step = jnp.asarray(count, jnp.float32)
        warmup_lr = peak * step / max(warmup, 1)  # max(): W = 0 never takes this branch
        progress = jnp.minimum(step, decay) / decay
        cosine_lr = end + 0.5 * (peak - end) * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(step < warmup, warmup_lr, cosine_lr)

    return schedule


# --------------------------------------------------------------------------------------------
# Adam without bias correction (MindSpore AdamWeightDecay)
# --------------------------------------------------------------------------------------------


class ScaleByAdamNoBiasCorrectionState(NamedTuple):
    """First and second moments, float32 whatever the parameter dtype."""

    mu: Any
    nu: Any


def scale_by_adam_no_bias_correction(b1: float = 0.9, b2: float = 0.95,
                                     eps: float = 1e-8) -> optax.GradientTransformation:
    """MindSpore AdamWeightDecay's direction m / (sqrt(v) + eps), without bias correction.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  update = m / (sqrt(v) + eps).
    Moments and updates are float32 (the paper's ``FP32StateAdamWeightDecay``), so low-precision
    params (bf16/fp16) neither lose the small moment increments nor the update: optax's
    ``apply_updates`` adds the float32 update and casts back, as MindSpore does.
    Without bias correction the early updates are smaller by about (1 - b1)/sqrt(1 - b2) (0.45 at
    the first step for the paper's betas), which acts as an extra warmup.
    """

    def init_fn(params: Any) -> ScaleByAdamNoBiasCorrectionState:
        zeros = lambda p: jnp.zeros(jnp.shape(p), jnp.float32)  # noqa: E731
        return ScaleByAdamNoBiasCorrectionState(mu=jax.tree.map(zeros, params),
                                                nu=jax.tree.map(zeros, params))

    def update_fn(updates: Any, state: ScaleByAdamNoBiasCorrectionState,
                  params: Any = None) -> tuple[Any, ScaleByAdamNoBiasCorrectionState]:
        del params
        grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), updates)
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, grads)
        direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return direction, ScaleByAdamNoBiasCorrectionState(mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Weight-decay mask
# --------------------------------------------------------------------------------------------


def _is_decayed(path: tuple[Any, ...], _leaf: Any) -> bool:
    names = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    if not names:
        return True
    if names[-1] == "bias":
        return False
    return not any(name.startswith("ln_") for name in names[:-1])


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: everything except biases and LayerNorm params.

    Mirrors the paper's code (decay unless the name contains "layernorm" or "bias"): a leaf named
    ``bias`` or any leaf under a module named ``ln_*`` is not decayed; kernels and all three
    embedding tables (word, position, top-query) are. Only the dict keys of a leaf's path are
    read, so nested dicts, FrozenDicts and scanned trees (``blocks/...`` with a layer axis) work.
    """
    return jax.tree_util.tree_map_with_path(_is_decayed, params)


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer, schedule and clipping; defaults are the paper's pre-training values.

    Errors name the field, and so the gin binding, to change.
    """

    # "paper_adamw": MindSpore AdamWeightDecay (no bias correction, fp32 moments) as in the
    # paper's code. "optax_adamw": optax.adamw, which bias-corrects (ablation).
    name: str = "paper_adamw"
    # Paper Table 9 pre-training value; instruction tuning uses 2e-5. (The code's default is
    # 5e-5 because its 2.6B override to 1e-4 is commented out.)
    peak_learning_rate: float = 1e-4
    end_learning_rate: float = 1e-6
    # Paper Table 9. The paper's code never overrides its default of 2000 (pre-training and
    # instruction tuning alike); set 2000 to mirror the code instead of the paper.
    warmup_steps: int = 500
    # Step at which the cosine reaches end_learning_rate. None = the run's total steps, which
    # the trainer passes to build(). (The code used 200,000 for pre-training, 8,750 / 2,700 for
    # instruction tuning.)
    decay_steps: int | None = None
    # "paper": cosine on the global step (CodeLLM); "standard": cosine over the steps after
    # warmup (optax.warmup_cosine_decay_schedule). See warmup_cosine_schedule.
    schedule: str = "paper"
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    # Decoupled-style decay added to the Adam direction before scaling by the learning rate;
    # not applied to biases and LayerNorm params (see decay_mask).
    weight_decay: float = 0.1
    # Global-norm gradient clipping; None or 0 disables it.
    clip_norm: float | None = 1.0

    def __post_init__(self) -> None:
        check_field_types(self)
        cls = "OptimizerConfig"
        if self.name not in OPTIMIZER_NAMES:
            raise ConfigError(f"{cls}.name={self.name!r} must be one of {OPTIMIZER_NAMES}.")
        if self.schedule not in SCHEDULE_VARIANTS:
            raise ConfigError(
                f"{cls}.schedule={self.schedule!r} must be one of {SCHEDULE_VARIANTS}.")
        for field in ("peak_learning_rate", "end_learning_rate", "b1", "b2", "eps",
                      "weight_decay"):
            value = getattr(self, field)
            if not _is_real(value):
                raise ConfigError(f"{cls}.{field}={value!r} must be a finite number.")
        if self.end_learning_rate < 0:
            raise ConfigError(f"{cls}.end_learning_rate={self.end_learning_rate} must be >= 0.")
        if self.peak_learning_rate < self.end_learning_rate:
            raise ConfigError(
                f"{cls}.peak_learning_rate={self.peak_learning_rate} must be >= "
                f"{cls}.end_learning_rate={self.end_learning_rate}.")
        if not _is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise ConfigError(f"{cls}.warmup_steps={self.warmup_steps!r} must be an integer "
                              ">= 0.")
        if self.decay_steps is not None:
            if not _is_int(self.decay_steps) or self.decay_steps <= 0:
                raise ConfigError(f"{cls}.decay_steps={self.decay_steps!r} must be None or an "
                                  "integer > 0.")
            if self.schedule == "standard" and self.decay_steps <= self.warmup_steps:
                raise ConfigError(
                    f"{cls}.decay_steps={self.decay_steps} must be > "
                    f"{cls}.warmup_steps={self.warmup_steps} with schedule='standard'.")
        for field in ("b1", "b2"):
            value = getattr(self, field)
            if not 0 <= value < 1:
                raise ConfigError(f"{cls}.{field}={value} must be in [0, 1).")
        if self.eps <= 0:
            raise ConfigError(f"{cls}.eps={self.eps} must be > 0.")
        if self.weight_decay < 0:
            raise ConfigError(f"{cls}.weight_decay={self.weight_decay} must be >= 0.")
        if self.clip_norm is not None and (not _is_real(self.clip_norm) or self.clip_norm < 0):
            raise ConfigError(f"{cls}.clip_norm={self.clip_norm!r} must be None or a finite "
                              "number >= 0 (None or 0 disables clipping).")

    def learning_rate_schedule(self, total_steps: int) -> optax.Schedule:
        """The schedule for a run of ``total_steps`` (the decay length when decay_steps is None)."""
        if not _is_int(total_steps) or total_steps <= 0:
            raise ConfigError(f"OptimizerConfig: total_steps={total_steps!r} (the run's optimizer "
                              "steps) must be an integer > 0.")
        decay_steps = self.decay_steps if self.decay_steps is not None else int(total_steps)
        if self.schedule == "standard" and decay_steps <= self.warmup_steps:
            raise ConfigError(
                f"OptimizerConfig.warmup_steps={self.warmup_steps} must be < the decay steps "
                f"({decay_steps} = total_steps, since OptimizerConfig.decay_steps is None) with "
                "schedule='standard'.")
        return warmup_cosine_schedule(self.peak_learning_rate, self.end_learning_rate,
                                      self.warmup_steps, decay_steps, self.schedule)

    def build(self, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """The optimizer chain and its schedule for a run of ``total_steps`` optimizer steps.

        paper_adamw:  clip -> m/(sqrt(v)+eps) -> + wd*w (masked) -> * -lr_s
                      i.e. w <- w - lr_s * (m/(sqrt(v)+eps) + wd*w), exactly MindSpore's update.
        optax_adamw:  clip -> optax.adamw (same structure, but m and v bias-corrected; its first
                      moment is float32, its second moment keeps the param dtype).
        """
        schedule = self.learning_rate_schedule(total_steps)
        clip = (optax.clip_by_global_norm(self.clip_norm) if self.clip_norm
                else optax.identity())
        if self.name == "paper_adamw":
            inner = optax.chain(
                scale_by_adam_no_bias_correction(self.b1, self.b2, self.eps),
                optax.add_decayed_weights(self.weight_decay, mask=decay_mask),
                optax.scale_by_learning_rate(schedule),
            )
        else:
            inner = optax.adamw(schedule, b1=self.b1, b2=self.b2, eps=self.eps,
                                weight_decay=self.weight_decay, mask=decay_mask,
                                mu_dtype=jnp.float32)
        return optax.chain(clip, inner), schedule

    def learning_rate_at(self, step: int, total_steps: int) -> float:
        """Learning rate applied at optimizer step ``step`` (0-based), for logging."""
        return float(self.learning_rate_schedule(total_steps)(step))
