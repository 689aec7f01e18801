"""The PanGu-α decoder: faithfulness to the equations, causality, documents, options."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference
from codereason_jax.model import PanGuDecoder
from codereason_jax.model.abstract import param_table
from codereason_jax.model.layers import ACTIVATION_FNS
from codereason_jax.model.packing import segments_from_eod

EOD = 7


def init(config, length=16, seed=0):
    model = PanGuDecoder(config)
    tokens = jnp.zeros((1, length), jnp.int32)
    params = nn.meta.unbox(model.init(jax.random.key(seed), tokens)["params"])
    return model, params


def random_tokens(config, shape, seed=1, avoid=(EOD,)):
    tokens = np.asarray(jax.random.randint(jax.random.key(seed), shape, 0, config.vocab_size))
    for bad in avoid:
        tokens = np.where(tokens == bad, bad + 1, tokens)
    return jnp.asarray(tokens)


def logits_of(model, params, tokens, **kwargs):
    return np.asarray(model.apply({"params": params}, tokens, **kwargs))


@pytest.mark.parametrize("factor", [1.0, 30.0])
def test_matches_independent_numpy_reference(tiny_config, factor):
    """Whole forward pass against a float64 numpy transcription of pangu.md's equations, at the
    init and with weights scaled up (trained_scale) so that attention is far from uniform and
    its scores, mask and softmax really shape the logits."""
    model, params = init(tiny_config)
    params = trained_scale(params, factor) if factor != 1.0 else params
    tokens = random_tokens(tiny_config, (2, 16))
    tokens = tokens.at[0, 5].set(EOD).at[1, 10].set(EOD)
    segment_ids, positions = segments_from_eod(tokens, EOD)
    got = logits_of(model, params, tokens, positions=positions, segment_ids=segment_ids)
    for row in range(2):
        maps = []
        want = numpy_reference.forward(
            jax.tree.map(np.asarray, params), tiny_config, np.asarray(tokens[row]),
            np.asarray(positions[row]), np.asarray(segment_ids[row]), maps)
        scale = np.abs(want).max()
        np.testing.assert_allclose(got[row], want, rtol=2e-4, atol=2e-5 * max(1.0, scale))
        if factor != 1.0:
            # A query's strongest key holds on average several times the uniform share 1/n of
            # its n visible keys (queries seeing at least 4 keys): over 3x in the ordinary
            # blocks, over 1.8x in the query layer (at the init: about 1x everywhere).
            ratios = []
            for m in maps:
                visible = (m > 0).sum(-1)
                ratios.append(float((m.max(-1) * visible)[visible >= 4].mean()))
            assert min(ratios[:-1]) > 3.0 and ratios[-1] > 1.8, ratios


def test_causality(tiny_config):
    """Changing token j never changes logits at i < j, and does change them at i >= j."""
    model, params = init(tiny_config)
    tokens = random_tokens(tiny_config, (1, 16))
    base = logits_of(model, params, tokens)
    for j in (0, 7, 15):
        changed = tokens.at[0, j].set((tokens[0, j] + 1) % tiny_config.vocab_size)
        out = logits_of(model, params, changed)
        np.testing.assert_array_equal(out[0, :j], base[0, :j])
        assert np.abs(out[0, j:] - base[0, j:]).max(axis=-1).min() > 1e-6


def test_packing_ids_restart_after_eod():
    tokens = jnp.array([[5, 6, EOD, 8, 9, EOD, EOD, 3, 0, 0]])
    segment_ids, positions = segments_from_eod(tokens, EOD, pad_id=0)
    np.testing.assert_array_equal(segment_ids[0], [1, 1, 1, 2, 2, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(positions[0], [0, 1, 2, 0, 1, 2, 0, 0, 1, 2])


def test_document_isolation(tiny_config):
    """Tokens after an EOD ignore everything before it, and their ids restart at 0."""
    model, params = init(tiny_config)
    first = random_tokens(tiny_config, (1, 6), seed=2).at[0, 5].set(EOD)
    second = random_tokens(tiny_config, (1, 10), seed=3)
    packed = jnp.concatenate([first, second], axis=1)
    segment_ids, positions = segments_from_eod(packed, EOD)
    out = logits_of(model, params, packed, positions=positions, segment_ids=segment_ids)

    other_first = random_tokens(tiny_config, (1, 6), seed=4).at[0, 5].set(EOD)
    repacked = jnp.concatenate([other_first, second], axis=1)
    out2 = logits_of(model, params, repacked, positions=positions, segment_ids=segment_ids)
    np.testing.assert_array_equal(out2[0, 6:], out[0, 6:])
    assert np.abs(out2[0, :6] - out[0, :6]).max() > 1e-6

    alone = logits_of(model, params, second)  # the second document at the start of a row
    np.testing.assert_allclose(out[0, 6:], alone[0], rtol=1e-5, atol=1e-6)


def trained_scale(params, factor=10.0):
    """Kernels and tables x factor: the N(0, 0.01) init makes attention almost uniform, which
    would hide whether a query or key input matters at all."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * factor if path[-1].key in ("kernel",) or x.ndim == 2 else x, params)


def _ln_f_output(model, params, tokens):
    _, state = model.apply({"params": params}, tokens,
                           capture_intermediates=lambda mdl, _: mdl.name == "ln_f")
    return np.asarray(state["intermediates"]["ln_f"]["__call__"][0])


def test_query_layer_uses_top_query_table(tiny_config):
    """Q_top only enters through the query layer; P enters below it."""
    model, params = init(tiny_config)
    params = trained_scale(params)
    tokens = random_tokens(tiny_config, (1, 16))
    base, base_g = logits_of(model, params, tokens), _ln_f_output(model, params, tokens)

    new_table = 0.1 * jax.random.normal(jax.random.key(5),
                                        params["top_query_embeddings"].shape)
    top = dict(params, top_query_embeddings=new_table)
    out, g = logits_of(model, top, tokens), _ln_f_output(model, top, tokens)
    np.testing.assert_array_equal(g, base_g)      # lower layers untouched
    assert np.abs(out - base).max() > 1e-4        # ... but the logits move

    pos = dict(params, position_embeddings=new_table)
    out, g = logits_of(model, pos, tokens), _ln_f_output(model, pos, tokens)
    assert np.abs(g - base_g).max() > 1e-4        # position table acts below the query layer
    assert np.abs(out - base).max() > 1e-4


def test_zero_top_query_attends_uniformly(tiny_config):
    """With Q_top = 0 and no query bias, query-layer attention is uniform over the prefix."""
    model, params = init(tiny_config)
    q = params["query_layer"]["attention"]["query"]
    params = dict(params, top_query_embeddings=jnp.zeros_like(params["top_query_embeddings"]))
    params["query_layer"] = dict(params["query_layer"], attention=dict(
        params["query_layer"]["attention"], query=dict(q, bias=jnp.zeros_like(q["bias"]))))
    tokens = random_tokens(tiny_config, (1, 8))
    _, state = model.apply(
        {"params": params}, tokens,
        capture_intermediates=lambda mdl, _: mdl.name in ("value", "query_layer"))
    values = np.asarray(state["intermediates"]["query_layer"]["attention"]["value"]
                        ["__call__"][0][0])  # [T, H, D]
    prefix_means = np.cumsum(values, axis=0) / np.arange(1, 9)[:, None, None]
    out_proj = params["query_layer"]["attention"]["output"]
    attended = np.tensordot(prefix_means, np.asarray(out_proj["kernel"]), axes=2) + np.asarray(
        out_proj["bias"])
    # Reconstruct the query layer's attention branch from the uniform average and compare with
    # the residual update it made (ln_f output -> after attention), via the reference blocks.
    g = _ln_f_output(model, params, tokens)[0]
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["query_layer"])
    u = g + attended
    mlp = numpy_reference._proj(numpy_reference._fast_gelu(numpy_reference._proj(
        numpy_reference._layer_norm(u, p["ln_2"], 1e-5), p["mlp"]["wi"], 1)), p["mlp"]["wo"], 1)
    want_logits = (u + mlp) @ np.asarray(params["word_embeddings"], np.float64).T
    np.testing.assert_allclose(logits_of(model, params, tokens)[0], want_logits,
                               rtol=1e-4, atol=1e-5)


def test_plain_gpt_head_switch(tiny_config):
    cfg = dataclasses.replace(tiny_config, use_query_layer=False)
    model, params = init(cfg)
    assert "top_query_embeddings" not in params and "query_layer" not in params
    assert len([k for k in params if k.startswith("block_")]) == cfg.num_layers
    assert sum(r.size for r in param_table(cfg)) == numpy_reference.param_count(
        cfg.vocab_size, cfg.max_seq_len, cfg.num_layers, cfg.d_model, cfg.d_ff,
        query_layer=False)
    tokens = random_tokens(cfg, (1, 12))
    want = numpy_reference.forward(jax.tree.map(np.asarray, params), cfg, np.asarray(tokens[0]),
                                   np.arange(12), np.ones(12, int))
    np.testing.assert_allclose(logits_of(model, params, tokens)[0], want, rtol=2e-4, atol=2e-5)


def _stack_blocks(params, n):
    blocks = [params.pop(f"block_{i}") for i in range(n)]
    params["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return params


def _remat_policies(jaxpr):
    """The ``policy`` of every rematerialisation (``remat2``) equation in a jaxpr, sub-jaxprs
    (scan bodies, jit calls, custom VJPs) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("remat2", "checkpoint", "remat"):
            found.append(eqn.params["policy"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    found += _remat_policies(sub)
    return found


def test_scan_and_remat_match_unrolled(tiny_config):
    model, params = init(tiny_config)
    tokens = random_tokens(tiny_config, (2, 16))
    base = logits_of(model, params, tokens)

    def loss(m, p):
        return jnp.mean(m.apply({"params": p}, tokens) ** 2)

    def grad_policies(m, p):
        return _remat_policies(jax.make_jaxpr(jax.grad(loss, argnums=1), static_argnums=0)(
            m, p).jaxpr)

    # remat_policy="none": no rematerialisation in the backward pass (so the check below can
    # tell a rematerialised block from a plain one).
    assert grad_policies(model, params) == []
    base_grad = jax.grad(loss, argnums=1)(model, params)
    for policy, want_policy in (("full", None),
                                ("dots", jax.checkpoint_policies.checkpoint_dots)):
        cfg = dataclasses.replace(tiny_config, scan_layers=True, remat_policy=policy)
        scanned = PanGuDecoder(cfg)
        stacked = _stack_blocks(dict(params), cfg.num_ordinary_layers)
        assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(
            jnp.shape, nn.meta.unbox(scanned.init(jax.random.key(0), tokens)["params"]))
        np.testing.assert_allclose(logits_of(scanned, stacked, tokens), base, rtol=1e-5,
                                   atol=1e-6)
        grad = jax.grad(loss, argnums=1)(scanned, stacked)
        want = _stack_blocks(dict(base_grad), cfg.num_ordinary_layers)
        # Equal gradients say nothing about remat (it only changes what is recomputed): the
        # scanned block must really be rematerialised, with the configured policy.
        policies = grad_policies(scanned, stacked)
        assert policies and all(p is want_policy for p in policies), (policy, policies)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                     grad, want)


def test_dropout_is_seeded_and_active(tiny_config):
    cfg = dataclasses.replace(tiny_config, dropout_rate=0.1)
    model, params = init(cfg)
    tokens = random_tokens(cfg, (1, 16))

    def run(seed):
        return logits_of(model, params, tokens, deterministic=False,
                         rngs={"dropout": jax.random.key(seed)})

    np.testing.assert_array_equal(run(1), run(1))
    assert np.abs(run(1) - run(2)).max() > 1e-4
    assert np.abs(run(1) - logits_of(model, params, tokens)).max() > 1e-4


def test_bf16_compute_keeps_fp32_params_and_logits(tiny_config):
    model, params = init(tiny_config)
    cfg = dataclasses.replace(tiny_config, dtype="bfloat16")
    bf16 = PanGuDecoder(cfg)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    tokens = random_tokens(cfg, (2, 16))
    out = bf16.apply({"params": params}, tokens)
    assert out.dtype == jnp.float32
    ref = logits_of(model, params, tokens)
    # bf16 matmuls keep ~3 significant digits: agreement to a few percent of the logit scale.
    assert np.abs(np.asarray(out) - ref).max() < 0.05 * np.abs(ref).max()


def test_initial_loss_is_log_vocab():
    """The tiny N(0, 0.01) init gives near-uniform predictions: loss ~= ln V (pangu.md §10)."""
    from codereason_jax.model import PanGuConfig
    cfg = PanGuConfig(vocab_size=8192, num_layers=4, d_model=128, num_heads=4, d_ff=512,
                      max_seq_len=64, dropout_rate=0.0)
    model, params = init(cfg, length=64)
    tokens = random_tokens(cfg, (4, 64))
    logits = model.apply({"params": params}, tokens)
    loss = -jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None],
                                axis=-1).mean()
    # Logits independent of the target can only add to ln V (Jensen); at std ~0.1 they add ~0.01.
    assert 0.0 <= float(loss) - math.log(8192) < 0.05


@pytest.mark.parametrize("scheme,std,out_std", [("paper", 0.01, 0.01),
                                                ("scaled", 0.02, 0.02 / math.sqrt(2 * 4))])
def test_init_schemes(scheme, std, out_std):
    from codereason_jax.model import PanGuConfig
    cfg = PanGuConfig(vocab_size=4096, num_layers=4, d_model=128, num_heads=4, d_ff=512,
                      max_seq_len=64, init_scheme=scheme)
    _, params = init(cfg)
    block = params["block_1"]
    assert np.std(params["word_embeddings"]) == pytest.approx(std, rel=0.03)
    assert np.std(block["mlp"]["wi"]["kernel"]) == pytest.approx(std, rel=0.03)
    assert np.std(block["mlp"]["wo"]["kernel"]) == pytest.approx(out_std, rel=0.03)
    assert np.std(block["attention"]["output"]["kernel"]) == pytest.approx(out_std, rel=0.05)
    assert np.all(np.asarray(block["mlp"]["wi"]["bias"]) == 0)
    np.testing.assert_array_equal(block["ln_1"]["scale"], np.ones(128))


def test_activations():
    x = jnp.array([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(ACTIVATION_FNS["fast_gelu"](x),
                               x / (1 + np.exp(-1.702 * np.asarray(x))), rtol=1e-6)
    np.testing.assert_allclose(ACTIVATION_FNS["gelu_erf"](x)[2], 0.8413447, rtol=1e-6)
    np.testing.assert_allclose(ACTIVATION_FNS["gelu_tanh"](x)[2], 0.8411920, rtol=1e-6)


def test_out_of_range_token_is_loud_not_clamped(tiny_config):
    """A token id >= vocab_size poisons its row with NaN (jnp.take would clamp silently)."""
    model, params = init(tiny_config)
    tokens = random_tokens(tiny_config, (2, 8))
    bad = tokens.at[0, 3].set(tiny_config.vocab_size)
    out = logits_of(model, params, bad)
    assert np.isnan(out[0]).all()
    np.testing.assert_array_equal(out[1], logits_of(model, params, tokens)[1])
