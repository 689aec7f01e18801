"""Optimizer: the paper's schedule, MindSpore AdamWeightDecay steps by hand, the decay mask."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import FrozenDict

from codereason_jax.model import ConfigError, PanGuConfig, PanGuDecoder
from codereason_jax.optim import (OptimizerConfig, decay_mask,
                                  scale_by_adam_no_bias_correction, warmup_cosine_schedule)

PEAK, END, W, D = 1e-4, 1e-6, 10, 100


def paper_lr(s: int) -> float:
    if s < W:
        return PEAK * s / W
    return END + 0.5 * (PEAK - END) * (1 + math.cos(math.pi * min(s, D) / D))


def standard_lr(s: int) -> float:
    if s < W:
        return PEAK * s / W
    return END + 0.5 * (PEAK - END) * (1 + math.cos(math.pi * min(s - W, D - W) / (D - W)))


# ------------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize("step", [0, W // 2, W - 1, W, W + 1, 55, D - 1, D, D + 1, 10 * D])
def test_schedules_match_formulas(step):
    paper = warmup_cosine_schedule(PEAK, END, W, D)
    standard = warmup_cosine_schedule(PEAK, END, W, D, variant="standard")
    np.testing.assert_allclose(float(paper(step)), paper_lr(step), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(float(standard(step)), standard_lr(step), rtol=1e-5, atol=1e-12)


def test_schedule_landmarks_and_variants_differ():
    paper = warmup_cosine_schedule(PEAK, END, W, D)
    standard = warmup_cosine_schedule(PEAK, END, W, D, variant="standard")
    assert float(paper(0)) == 0.0 and float(standard(0)) == 0.0
    np.testing.assert_allclose(float(paper(W // 2)), PEAK / 2, rtol=1e-6)
    # At s = W the standard cosine starts at the peak; the paper's is already at cos(pi W/D).
    np.testing.assert_allclose(float(standard(W)), PEAK, rtol=1e-6)
    assert float(paper(W)) < PEAK * 0.99
    for s in (W, W + 1, D // 2):
        assert abs(float(paper(s)) - float(standard(s))) > 1e-7
    np.testing.assert_allclose(float(paper(D)), END, rtol=1e-4)
    np.testing.assert_allclose(float(paper(5 * D)), END, rtol=1e-4)
    np.testing.assert_allclose(float(standard(5 * D)), END, rtol=1e-4)
    # "standard" is optax's warmup_cosine_decay_schedule.
    reference = optax.warmup_cosine_decay_schedule(0.0, PEAK, W, D, END)
    steps = jnp.arange(0, 2 * D, 7)
    np.testing.assert_allclose(np.asarray(standard(steps)), np.asarray(reference(steps)),
                               rtol=1e-5, atol=1e-12)


def test_schedule_without_warmup_starts_at_peak():
    schedule = warmup_cosine_schedule(PEAK, END, 0, D)
    np.testing.assert_allclose(float(schedule(0)), PEAK, rtol=1e-6)
    assert np.isfinite(float(schedule(0)))


@pytest.mark.parametrize("kwargs,field", [
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(decay_steps=0), "decay_steps"),
    (dict(decay_steps=W, variant="standard"), "decay_steps"),
    (dict(peak=1e-6, end=1e-4), "peak"),
    (dict(end=-1.0), "end"),
    (dict(variant="linear"), "variant"),
])
def test_schedule_validation_names_field(kwargs, field):
    args = dict(peak=PEAK, end=END, warmup_steps=W, decay_steps=D) | kwargs
    with pytest.raises(ValueError, match=f"{field}="):
        warmup_cosine_schedule(**args)


# ------------------------------------------------------------------ hand-computed AdamW steps


def tiny_params():
    return {
        "block": {
            "ln_1": {"scale": jnp.array([1.0, 0.9, 1.1]), "bias": jnp.array([0.5, -0.4, 0.3])},
            "mlp": {"kernel": jnp.array([[0.5, -0.7], [0.8, 0.6], [-0.9, 1.2]]),
                    "bias": jnp.array([0.25, -0.35])},
        },
        "word_embeddings": jnp.array([[0.3, -0.6, 0.9], [1.1, -0.2, 0.4]]),
    }


def tiny_grads(scale: float):
    return {
        "block": {
            "ln_1": {"scale": jnp.array([0.1, -0.2, 0.3]), "bias": jnp.array([-0.05, 0.4, 0.2])},
            "mlp": {"kernel": jnp.array([[0.3, -0.1], [0.2, 0.05], [-0.4, 0.25]]),
                    "bias": jnp.array([0.15, -0.3])},
        },
        "word_embeddings": jnp.array([[0.02, -0.5, 0.1], [0.3, 0.0, -0.2]]),
    } if scale == 1 else jax.tree.map(lambda g: g * scale, tiny_grads(1))


DECAYED = {"block/mlp/kernel", "word_embeddings"}


def flat(tree):
    return {"/".join(str(k.key) for k in path): np.asarray(leaf, np.float64)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def numpy_reference(params, grads_per_step, lrs, *, b1, b2, eps, wd, clip, bias_correction):
    """The MindSpore AdamWeightDecay update (optionally optax-style bias-corrected), in float64."""
    w = flat(params)
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        g = flat(grads)
        norm = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
        factor = clip / max(norm, clip) if clip else 1.0
        for k in w:
            gk = g[k] * factor
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            mh, vh = (m[k] / (1 - b1**t), v[k] / (1 - b2**t)) if bias_correction else (m[k], v[k])
            update = mh / (np.sqrt(vh) + eps) + (wd * w[k] if k in DECAYED else 0.0)
            w[k] = w[k] - lr * update
    return w


def run_steps(optimizer, params, grads_per_step):
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for grads in grads_per_step:
        params, state = step(params, state, grads)
    return params, state


def global_norm(tree) -> float:
    return float(optax.tree.norm(tree))


def test_paper_adamw_two_steps_match_mindspore_formula():
    config = OptimizerConfig(peak_learning_rate=0.1, end_learning_rate=0.01, warmup_steps=0,
                             decay_steps=4, weight_decay=0.1, clip_norm=1.0)
    optimizer, schedule = config.build(total_steps=4)
    grads = [tiny_grads(10.0), tiny_grads(0.5)]
    assert global_norm(grads[0]) > 1.0 > global_norm(grads[1])  # clipping active in step 1 only
    lrs = [0.1, 0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi / 4))]
    np.testing.assert_allclose([float(schedule(0)), float(schedule(1))], lrs, rtol=1e-6)

    params, _ = run_steps(optimizer, tiny_params(), grads)
    expected = numpy_reference(tiny_params(), grads, lrs, b1=0.9, b2=0.95, eps=1e-8, wd=0.1,
                               clip=1.0, bias_correction=False)
    got = flat(params)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=key)
    # Decay matters: without it the kernel would land elsewhere.
    no_decay = numpy_reference(tiny_params(), grads, lrs, b1=0.9, b2=0.95, eps=1e-8, wd=0.0,
                               clip=1.0, bias_correction=False)
    assert not np.allclose(got["block/mlp/kernel"], no_decay["block/mlp/kernel"], rtol=1e-4)
    np.testing.assert_allclose(got["block/ln_1/scale"], no_decay["block/ln_1/scale"], rtol=1e-6)


def test_optax_adamw_bias_corrects_on_first_step():
    grads = [tiny_grads(0.5)]
    lr = 0.1
    results = {}
    for name, corrected in (("paper_adamw", False), ("optax_adamw", True)):
        config = OptimizerConfig(name=name, peak_learning_rate=lr, end_learning_rate=0.0,
                                 warmup_steps=0, weight_decay=0.1)
        optimizer, _ = config.build(total_steps=10)
        params, _ = run_steps(optimizer, tiny_params(), grads)
        expected = numpy_reference(tiny_params(), grads, [lr], b1=0.9, b2=0.95, eps=1e-8,
                                   wd=0.1, clip=1.0, bias_correction=corrected)
        got = flat(params)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=f"{name} {key}")
        results[name] = got
    # First Adam direction: sign(g) bias-corrected vs 0.1/sqrt(0.05) * sign(g) ~ 0.447 sign(g).
    start = flat(tiny_params())["block/ln_1/bias"]
    step_paper = start - results["paper_adamw"]["block/ln_1/bias"]
    step_optax = start - results["optax_adamw"]["block/ln_1/bias"]
    np.testing.assert_allclose(step_paper / step_optax, 0.1 / math.sqrt(0.05), rtol=1e-5)


def test_no_update_at_step_zero_during_warmup():
    optimizer, _ = OptimizerConfig(warmup_steps=5).build(total_steps=100)
    params, state = run_steps(optimizer, tiny_params(), [tiny_grads(1.0)])
    for key, value in flat(params).items():
        np.testing.assert_array_equal(value, flat(tiny_params())[key])
    assert np.any(np.asarray(state[1][0].mu["block"]["mlp"]["kernel"]) != 0)  # moments moved


def test_clipping_disabled():
    # Two steps of different gradient norms: one Adam step is invariant to the gradient's
    # scale, so only a second step shows whether the first gradient was clipped.
    grads = [tiny_grads(10.0), tiny_grads(0.5)]
    for clip in (None, 0.0):
        config = OptimizerConfig(peak_learning_rate=0.1, end_learning_rate=0.0, warmup_steps=0,
                                 clip_norm=clip)
        optimizer, schedule = config.build(total_steps=10)
        lrs = [float(schedule(0)), float(schedule(1))]
        expected = numpy_reference(tiny_params(), grads, lrs, b1=0.9, b2=0.95, eps=1e-8,
                                   wd=0.1, clip=None, bias_correction=False)
        clipped = numpy_reference(tiny_params(), grads, lrs, b1=0.9, b2=0.95, eps=1e-8,
                                  wd=0.1, clip=1.0, bias_correction=False)
        assert any(not np.allclose(clipped[k], expected[k], rtol=1e-3) for k in expected)
        params, _ = run_steps(optimizer, tiny_params(), grads)
        for key, value in flat(params).items():
            np.testing.assert_allclose(value, expected[key], rtol=1e-6, err_msg=key)


def test_moments_are_float32_for_bfloat16_params():
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), tiny_params())
    grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), tiny_grads(1.0))
    transform = scale_by_adam_no_bias_correction()
    state = transform.init(params)
    updates, state = transform.update(grads, state, params)
    for tree in (state.mu, state.nu, updates):
        assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(np.asarray(state.mu["word_embeddings"]),
                               0.1 * np.asarray(grads["word_embeddings"], np.float32), rtol=1e-6)

    optimizer, _ = OptimizerConfig(warmup_steps=0).build(total_steps=10)
    new_params, opt_state = run_steps(optimizer, params, [grads, grads])
    adam_state = opt_state[1][0]
    for tree in (adam_state.mu, adam_state.nu):
        assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree.leaves(new_params)} == {jnp.dtype(jnp.bfloat16)}


# ------------------------------------------------------------------------------- decay mask


def model_params(scan_layers: bool):
    config = PanGuConfig(vocab_size=64, num_layers=3, d_model=16, num_heads=2, d_ff=32,
                         max_seq_len=8, scan_layers=scan_layers)
    # Only the tree's structure matters, so build it abstractly (no weights, no compute).
    variables = jax.eval_shape(PanGuDecoder(config).init, jax.random.key(0),
                               jnp.zeros((1, 8), jnp.int32))
    return nn.meta.unbox(variables)["params"]


@pytest.mark.parametrize("scan_layers", [False, True])
def test_decay_mask_on_model(scan_layers):
    params = model_params(scan_layers)
    mask = flat(decay_mask(params))
    blocks = ["blocks"] if scan_layers else ["block_0", "block_1"]
    kernels = {f"{block}/{module}/kernel"
               for block in blocks + ["query_layer"]
               for module in ("attention/query", "attention/key", "attention/value",
                              "attention/output", "mlp/wi", "mlp/wo")}
    embeddings = {"word_embeddings", "position_embeddings", "top_query_embeddings"}
    decayed = {key for key, value in mask.items() if value}
    assert decayed == kernels | embeddings
    not_decayed = set(mask) - decayed
    assert all(key.endswith("/bias") or "/ln_" in f"/{key}" for key in not_decayed)
    assert {"ln_f/scale", f"{blocks[0]}/ln_1/scale", "query_layer/ln_2/scale"} <= not_decayed
    assert len(mask) == len(jax.tree.leaves(params))
    # Same answer on a FrozenDict, with the FrozenDict structure kept.
    frozen_mask = decay_mask(FrozenDict(params))
    assert isinstance(frozen_mask, FrozenDict)
    assert flat(frozen_mask) == mask


def test_decay_mask_tiny_tree():
    assert flat(decay_mask(tiny_params())) == {
        "block/ln_1/bias": False, "block/ln_1/scale": False, "block/mlp/bias": False,
        "block/mlp/kernel": True, "word_embeddings": True}


# ------------------------------------------------------------------------------------ config


def test_config_defaults_are_the_paper_values():
    config = OptimizerConfig()
    assert (config.name, config.schedule) == ("paper_adamw", "paper")
    assert (config.peak_learning_rate, config.end_learning_rate) == (1e-4, 1e-6)
    assert (config.warmup_steps, config.decay_steps) == (500, None)
    assert (config.b1, config.b2, config.eps) == (0.9, 0.95, 1e-8)
    assert (config.weight_decay, config.clip_norm) == (0.1, 1.0)
    # decay_steps=None decays over the run's total steps.
    np.testing.assert_allclose(config.learning_rate_at(1000, total_steps=1000), 1e-6, rtol=1e-4)
    np.testing.assert_allclose(config.learning_rate_at(250, total_steps=1000), 5e-5, rtol=1e-6)
    expected = 1e-6 + 0.5 * (1e-4 - 1e-6) * (1 + math.cos(math.pi * 600 / 1000))
    np.testing.assert_allclose(config.learning_rate_at(600, total_steps=1000), expected,
                               rtol=1e-5)
    # An explicit decay_steps wins over total_steps.
    fixed = OptimizerConfig(decay_steps=2000)
    expected = 1e-6 + 0.5 * (1e-4 - 1e-6) * (1 + math.cos(math.pi * 600 / 2000))
    np.testing.assert_allclose(fixed.learning_rate_at(600, total_steps=1000), expected,
                               rtol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(b2=1.5), "OptimizerConfig.b2=1.5 must be in [0, 1)"),
    (dict(b1=-0.1), "OptimizerConfig.b1=-0.1 must be in [0, 1)"),
    (dict(name="sgd"), "OptimizerConfig.name='sgd'"),
    (dict(schedule="linear"), "OptimizerConfig.schedule='linear'"),
    (dict(peak_learning_rate=1e-7), "OptimizerConfig.peak_learning_rate=1e-07"),
    (dict(end_learning_rate=-1.0, peak_learning_rate=1.0), "OptimizerConfig.end_learning_rate"),
    (dict(warmup_steps=-5), "OptimizerConfig.warmup_steps=-5"),
    (dict(warmup_steps=1.5), "OptimizerConfig.warmup_steps must be an integer, got 1.5"),
    (dict(decay_steps=0), "OptimizerConfig.decay_steps=0"),
    (dict(decay_steps=400, schedule="standard"), "OptimizerConfig.decay_steps=400"),
    (dict(eps=0.0), "OptimizerConfig.eps=0.0"),
    (dict(weight_decay=-0.1), "OptimizerConfig.weight_decay=-0.1"),
    (dict(clip_norm=-1.0), "OptimizerConfig.clip_norm=-1.0"),
    (dict(peak_learning_rate=float("nan")), "OptimizerConfig.peak_learning_rate=nan"),
])
def test_config_validation_names_field(kwargs, message):
    with pytest.raises(ConfigError) as error:
        OptimizerConfig(**kwargs)
    assert message in str(error.value)


def test_build_validates_total_steps():
    with pytest.raises(ConfigError, match="total_steps=0"):
        OptimizerConfig().build(total_steps=0)
    with pytest.raises(ConfigError, match="OptimizerConfig.warmup_steps=500"):
        OptimizerConfig(schedule="standard").build(total_steps=500)
    # The paper schedule accepts a run shorter than its warmup (a smoke test).
    OptimizerConfig().build(total_steps=100)


# ----------------------------------------------- boundaries, whole messages, every config value


def _refused(call, message):
    """``call`` raises ConfigError with exactly ``message``."""
    with pytest.raises(ConfigError) as error:
        call()
    assert str(error.value) == message


@pytest.mark.parametrize("name,corrected", [("paper_adamw", False), ("optax_adamw", True)])
def test_both_optimizers_use_the_configured_betas_eps_and_float32_first_moment(name, corrected):
    """Non-default b1, b2 and eps, so that a value left at optax's default shows."""
    grads = [tiny_grads(0.5), tiny_grads(0.2)]
    config = OptimizerConfig(name=name, peak_learning_rate=0.1, end_learning_rate=0.1,
                             warmup_steps=0, b1=0.7, b2=0.8, eps=1e-2, clip_norm=None)
    optimizer, _ = config.build(total_steps=10)
    params, _ = run_steps(optimizer, tiny_params(), grads)
    expected = numpy_reference(tiny_params(), grads, [0.1, 0.1], b1=0.7, b2=0.8, eps=1e-2,
                               wd=0.1, clip=None, bias_correction=corrected)
    for key, value in flat(params).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-5, err_msg=key)
    # bf16 params: the first moment is float32 in both (optax keeps nu in the param dtype).
    bf16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), tiny_params())
    state = optimizer.init(bf16)
    float32_leaves = [leaf for leaf in jax.tree.leaves(state)
                      if leaf.dtype == jnp.float32 and leaf.shape != ()]
    assert len(float32_leaves) >= len(jax.tree.leaves(bf16))


def test_adam_state_has_the_shapes_of_the_params_and_the_documented_defaults():
    params = tiny_params()
    transform = scale_by_adam_no_bias_correction()
    state = transform.init(params)
    for tree in (state.mu, state.nu):
        assert jax.tree.map(jnp.shape, tree) == jax.tree.map(jnp.shape, params)
    # Defaults b1=0.9, b2=0.95, eps=1e-8: with a gradient of 1e-8, eps is a third of the
    # denominator, so a wrong default moves the direction visibly.
    g = 1e-8
    grads = jax.tree.map(lambda p: jnp.full(p.shape, g, jnp.float32), params)
    direction, _ = transform.update(grads, state, params)
    want = 0.1 * g / (math.sqrt(0.05) * g + 1e-8)
    for leaf in jax.tree.leaves(direction):
        np.testing.assert_allclose(np.asarray(leaf), want, rtol=1e-5)


def test_a_bare_array_is_decayed():
    assert decay_mask(jnp.ones(3)) is True


def test_schedule_refusals_name_the_function_and_the_value():
    where = "warmup_cosine_schedule"
    _refused(lambda: warmup_cosine_schedule("x", 0.0, 0, 10),
             f"{where}: peak='x' and end=0.0 must be finite numbers.")
    _refused(lambda: warmup_cosine_schedule(1.0, float("inf"), 0, 10),
             f"{where}: peak=1.0 and end=inf must be finite numbers.")
    _refused(lambda: warmup_cosine_schedule(1.0, 0.0, 2.5, 10),
             f"{where}: warmup_steps=2.5 must be an integer >= 0.")
    _refused(lambda: warmup_cosine_schedule(1.0, 0.0, True, 10),
             f"{where}: warmup_steps=True must be an integer >= 0.")
    _refused(lambda: warmup_cosine_schedule(1.0, 0.0, 0, 0),
             f"{where}: decay_steps=0 must be an integer > 0.")
    _refused(lambda: warmup_cosine_schedule(1.0, 0.0, 5, 5, "standard"),
             f"{where}: decay_steps=5 must be > warmup_steps=5 for the 'standard' variant "
             "(its cosine runs over decay_steps - warmup_steps steps).")


def test_schedule_boundaries_that_are_accepted():
    constant = warmup_cosine_schedule(1e-3, 1e-3, 0, 10)  # peak == end: a constant rate
    np.testing.assert_allclose([float(constant(s)) for s in (0, 5, 20)], [1e-3] * 3, rtol=1e-6)
    one = warmup_cosine_schedule(1e-3, 0.0, 0, 1)  # a one-step decay
    np.testing.assert_allclose([float(one(0)), float(one(1))], [1e-3, 0.0], atol=1e-12)
    standard = warmup_cosine_schedule(1e-3, 0.0, 5, 6, "standard")  # D = W + 1
    np.testing.assert_allclose([float(standard(5)), float(standard(6))], [1e-3, 0.0],
                               atol=1e-12)
    # The paper's variant allows D <= W: straight from the warmup to the end rate.
    paper = warmup_cosine_schedule(1e-3, 1e-5, 5, 5)
    np.testing.assert_allclose([float(paper(4)), float(paper(5))], [0.8e-3, 1e-5], rtol=1e-5)


def test_config_boundaries_that_are_accepted():
    OptimizerConfig(peak_learning_rate=1e-4, end_learning_rate=1e-4)
    OptimizerConfig(decay_steps=1, warmup_steps=0)
    OptimizerConfig(decay_steps=5, warmup_steps=5)  # paper schedule: D <= W allowed
    OptimizerConfig(b1=0.0, b2=0.0, weight_decay=0.0, clip_norm=0.0)
    OptimizerConfig(warmup_steps=0).build(total_steps=1)


def test_config_refusals_are_whole_sentences():
    cls = "OptimizerConfig"
    _refused(lambda: OptimizerConfig(b1=1.0), f"{cls}.b1=1.0 must be in [0, 1).")
    _refused(lambda: OptimizerConfig(warmup_steps=-5),
             f"{cls}.warmup_steps=-5 must be an integer >= 0.")
    _refused(lambda: OptimizerConfig(decay_steps=0),
             f"{cls}.decay_steps=0 must be None or an integer > 0.")
    _refused(lambda: OptimizerConfig(schedule="standard", warmup_steps=5, decay_steps=5),
             f"{cls}.decay_steps=5 must be > {cls}.warmup_steps=5 with schedule='standard'.")
    _refused(lambda: OptimizerConfig(clip_norm=-1.0),
             f"{cls}.clip_norm=-1.0 must be None or a finite number >= 0 (None or 0 disables "
             "clipping).")
    _refused(lambda: OptimizerConfig().build(total_steps=0),
             f"{cls}: total_steps=0 (the run's optimizer steps) must be an integer > 0.")
    _refused(lambda: OptimizerConfig().build(total_steps=10.0),
             f"{cls}: total_steps=10.0 (the run's optimizer steps) must be an integer > 0.")
    _refused(lambda: OptimizerConfig(schedule="standard").build(total_steps=500),
             f"{cls}.warmup_steps=500 must be < the decay steps (500 = total_steps, since "
             f"{cls}.decay_steps is None) with schedule='standard'.")


def test_the_configured_schedule_variant_reaches_the_schedule():
    standard = OptimizerConfig(schedule="standard", peak_learning_rate=PEAK,
                               end_learning_rate=END, warmup_steps=W, decay_steps=D)
    for step in (W, W + 7, D // 2):
        np.testing.assert_allclose(standard.learning_rate_at(step, total_steps=D),
                                   standard_lr(step), rtol=1e-5)
