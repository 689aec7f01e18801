"""Smoke tests of ``python -m codereason_jax.bench`` on the micro config (no timing asserts)."""

import inspect
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax import bench, train_metrics
from codereason_jax.benchmarks import configs, evaluation, pipeline, timing, torch_peer
from codereason_jax.model import PanGuConfig, PanGuDecoder, decoding
from codereason_jax.model import layers as model_layers
from codereason_jax.model import pangu as model_pangu
import numpy_reference
from numpy_reference import PAPER_CONTEXT, PAPER_SHAPES, PAPER_VOCAB, param_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "seqio", "gin", "torch", "orbax", "t5", "sentencepiece")


def _args(*extra):
    return bench.parse_args(["--config=micro", "--repeats=1", "--warmup=1", *extra])


def test_bench_and_train_suite_import_no_heavy_dependencies():
    """The GPU machine has jax/flax/optax/numpy but no gin/seqio/TensorFlow: the train suite
    must not import them (nor torch, which only the peer uses)."""
    code = (
        "import sys, json\n"
        "import codereason_jax.bench as b\n"
        f"heavy = {HEAVY!r}\n"
        "at_import = [m for m in heavy if m in sys.modules]\n"
        "b.main(['--suite=train', '--config=micro', '--repeats=1', '--warmup=1'])\n"
        "after_run = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY', json.dumps([at_import, after_run]))\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY ")][-1]
    assert json.loads(line[len("HEAVY "):]) == [[], []]


def test_train_one_micro_on_a_mesh():
    args = _args("--mesh=2,1,4", "--batch_size=8")
    row = bench.train_one(args, "micro")
    assert row["mesh"] == {"data": 2, "fsdp": 1, "model": 4}
    assert row["batch_size"] == 8 and row["seq_len"] == 32
    assert row["step_s"] > 0 and row["tokens_per_s"] > 0 and row["compile_s"] > 0
    config = configs.build_config("micro", configs.resolve_options("cpu", {}))
    assert row["training_flops_per_token"] == train_metrics.training_flops_per_token(config, 32)
    assert row["tokens_per_s_per_device"] == pytest.approx(row["tokens_per_s"] / 8)
    assert 0 < row["mfu"] < 10 and math.isfinite(row["peak_flops_per_device"])
    assert "measured" in row["peak_source"]
    assert all(math.isfinite(x) for x in row["losses_first_last"])
    assert row["losses_first_last"][0] == pytest.approx(math.log(256), abs=0.1)
    assert row["peak_rss_bytes"] > 0
    assert row["model"]["block_barrier"] is True and row["model"]["head_vjp"] is True


def test_suite_train_reports_failures_and_goes_on():
    args = _args("--batch_size=3,8", "--mesh=-1,1,1")  # 3 rows cannot split over 8 devices
    rows = bench.suite_train(args)
    assert len(rows) == 2
    assert "error" in rows[0] and "tokens_per_s" in rows[1]
    text = bench.format_rows(rows)
    assert "FAILED" in text and "tok/s" in text


def test_options_resolve_per_backend():
    cpu = configs.resolve_options("cpu", {"dtype": "auto", "scan_layers": True})
    assert cpu["dtype"] == "float32" and cpu["scan_layers"] is True
    assert cpu["block_barrier"] and cpu["head_vjp"]
    gpu = configs.resolve_options("gpu", {"remat_policy": "dots"})
    assert gpu == {"dtype": "bfloat16", "attention": "auto", "scan_layers": True,
                   "block_barrier": False, "head_vjp": False, "remat_policy": "dots"}
    config = configs.build_config("350m", gpu)
    layers, d, _ = PAPER_SHAPES["pangu_350m"]
    assert config.num_params() == param_count(PAPER_VOCAB, PAPER_CONTEXT, layers, d)


# Factors on the 0.01-scale init that make attention far from uniform and the context matter:
# at the init every query sees about 1/T of each key and greedy decoding mostly repeats a token,
# so a comparison of two attention paths, or of cached and uncached decoding, could not fail.
SHARPEN = {"query": 30.0, "key": 30.0, "value": 30.0, "output": 30.0,
           "top_query_embeddings": 30.0, "word_embeddings": 10.0}


def sharpened(params):
    """params with the attention kernels and embeddings scaled by SHARPEN (stacked or not)."""
    def scale(path, x):
        names = [getattr(k, "key", str(k)) for k in path]
        if names[-1] == "kernel" and names[-2] in SHARPEN:
            return x * SHARPEN[names[-2]]
        return x * SHARPEN.get(names[-1], 1.0)

    return jax.tree_util.tree_map_with_path(scale, params)


def _loss_and_grads(config, tokens, segment_ids=None, sharpen=False):
    model = PanGuDecoder(config)
    params = model.init(jax.random.key(0), tokens)["params"]
    if sharpen:
        params = sharpened(params)

    def loss(p):
        logits = model.apply({"params": p}, tokens, segment_ids=segment_ids)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits

    (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, logits, grads


def _names(tree):
    return ["/".join(str(getattr(k, "key", k)) for k in path)
            for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _spy(monkeypatch, module, name):
    """Replace module.name by a wrapper that records each call's arguments (by parameter name)
    and calls through; calls are recorded while tracing, so under jit once per trace."""
    calls = []
    original = getattr(module, name)
    signature = inspect.signature(original)

    def spy(*args, **kwargs):
        calls.append(signature.bind(*args, **kwargs).arguments)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("changes", [
    {"block_barrier": True},  # an identity, but XLA's fusion choices move the gradient's rounding
    {"head_vjp": True},
    {"attention": "xla"},
    {"attention": "auto"},  # xla on CPU
    {"attention": "xla", "scan_layers": True, "block_barrier": True},
])
@pytest.mark.parametrize("packed", [False, True])
def test_speed_options_match_the_reference(tiny_config, changes, packed, monkeypatch):
    """Equal up to rounding, on weights where attention is sharp (a fused path that dropped the
    document mask or the causal mask would move the logits far beyond the tolerance)."""
    fused = _spy(monkeypatch, model_layers, "fused_attention")
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, tiny_config.vocab_size)
    segments = jnp.array([[1] * 9 + [2] * 7, [1] * 16]) if packed else None
    # Scanned params are stacked (and initialised differently): compare with the scanned
    # reference then.
    reference = PanGuConfig(**{**tiny_config.__dict__,
                               "scan_layers": changes.get("scan_layers", False)})
    ref = _loss_and_grads(reference, tokens, segments, sharpen=True)
    assert fused == []  # the einsum reference never takes the fused path
    new = _loss_and_grads(PanGuConfig(**{**tiny_config.__dict__, **changes}), tokens, segments,
                          sharpen=True)
    # Matching the reference is no evidence that the fused path ran (an einsum fallback would
    # match it exactly): it must be reached, with the implementation the option names. "auto"
    # is "xla" here: float32 compute (cudnn would need bf16/fp16 and a GPU).
    implementations = {call["implementation"] for call in fused}
    if "attention" in changes:
        assert implementations == {"xla"}, (changes, implementations)
    else:
        assert fused == []
    (loss_new, logits_new, grads_new), (loss_ref, logits_ref, grads_ref) = new, ref
    assert float(loss_new) == pytest.approx(float(loss_ref), rel=1e-5)
    np.testing.assert_allclose(logits_new, logits_ref, rtol=1e-4,
                               atol=1e-5 * float(np.max(np.abs(logits_ref))))
    # Gradients against the largest one (the key bias's is zero up to rounding: softmax does
    # not see a constant added to every score).
    scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads_ref))
    for name, a, b in zip(_names(grads_ref), jax.tree.leaves(grads_new),
                          jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale, err_msg=name)


def test_speed_option_comparison_has_power(tiny_config):
    """The comparison above would fail for an attention path that ignored the document mask:
    on the sharpened weights, the same tokens as one document or two give logits that differ
    far beyond its tolerance (at the plain init they differ by much less)."""
    tokens = jax.random.randint(jax.random.key(1), (1, 16), 0, tiny_config.vocab_size)
    one = jnp.ones((1, 16), jnp.int32)
    two = jnp.array([[1] * 9 + [2] * 7])
    _, joined, _ = _loss_and_grads(tiny_config, tokens, one, sharpen=True)
    _, split, _ = _loss_and_grads(tiny_config, tokens, two, sharpen=True)
    scale = float(np.max(np.abs(joined)))
    assert float(np.max(np.abs(joined[:, 9:] - split[:, 9:]))) > 1e-2 * scale
    np.testing.assert_array_equal(joined[:, :9], split[:, :9])  # causal: the first 9 agree


def test_head_vjp_in_bf16_rounds_only_the_logit_gradient(tiny_config, monkeypatch):
    head = _spy(monkeypatch, model_pangu, "tied_head")
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, tiny_config.vocab_size)
    bf16 = {**tiny_config.__dict__, "dtype": "bfloat16"}
    ref = _loss_and_grads(PanGuConfig(**bf16), tokens)
    assert head == []  # head_vjp off: plain autodiff of the einsum
    new = _loss_and_grads(PanGuConfig(**{**bf16, "head_vjp": True}), tokens)
    assert head  # head_vjp on: the custom-VJP head is used
    np.testing.assert_array_equal(new[1], ref[1])  # the forward pass is unchanged
    # ... but the backward pass is not the same computation: the bf16-rounded logit gradient
    # changes some gradient's bits (equal gradients everywhere would mean the option did
    # nothing; the tolerance below could not tell).
    assert any(not np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(new[2]), jax.tree.leaves(ref[2])))
    scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(ref[2]))
    for a, b in zip(jax.tree.leaves(new[2]), jax.tree.leaves(ref[2])):
        assert a.dtype == b.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=0.05, atol=5e-3 * scale)


def test_fused_attention_falls_back_to_einsum_under_dropout(tiny_config):
    config = PanGuConfig(**{**tiny_config.__dict__, "dropout_rate": 0.1, "attention": "xla"})
    reference = PanGuConfig(**{**tiny_config.__dict__, "dropout_rate": 0.1})
    tokens = jnp.ones((2, 8), jnp.int32)
    params = PanGuDecoder(reference).init(jax.random.key(0), tokens)["params"]
    outs = [PanGuDecoder(c).apply({"params": params}, tokens, deterministic=False,
                                  rngs={"dropout": jax.random.key(3)}) for c in (config, reference)]
    np.testing.assert_array_equal(outs[0], outs[1])


def _micro_sharpened():
    config = configs.build_config("micro", {})
    assert config.dtype == config.param_dtype == "float32"
    return config, PanGuDecoder(config), sharpened(evaluation.init_params(PanGuDecoder(config)))


def test_sharpened_micro_weights_attend_far_from_uniformly():
    """What makes the cache tests below able to fail: in every layer the last position puts
    several times the uniform weight 1/T on its strongest key, and the next-token argmax
    changes along the sequence (the NumPy reference's attention maps and logits)."""
    config, _, params = _micro_sharpened()
    length = 17
    tokens = np.random.default_rng(0).integers(1, config.vocab_size, length)
    maps = []
    logits = numpy_reference.forward(jax.device_get(params), config, tokens, np.arange(length),
                                     np.ones(length, np.int32), maps)
    assert len(maps) == config.num_layers
    strongest = [float(m[:, -1, :].max(-1).mean()) for m in maps]
    assert min(strongest) > 2.5 / length, strongest
    assert max(strongest) > 0.4, strongest
    assert len(set(logits.argmax(-1).tolist())) >= 3


def _greedy_with_cache(model, params, prompts, new_tokens, corrupt=None):
    """Greedy decoding through decoding.extend; ``corrupt`` may rewrite the cache after the
    prompt pass (to show that a wrong cache changes the tokens)."""
    batch, prompt_len = prompts.shape
    cache = decoding.init_cache(model, params, batch, prompt_len + new_tokens)
    logits, cache = decoding.extend(model, params, cache, jnp.asarray(prompts),
                                    jnp.broadcast_to(jnp.arange(prompt_len), prompts.shape))
    if corrupt is not None:
        cache = corrupt(cache)
    out = []
    for i in range(new_tokens):
        token = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
        out.append(np.asarray(token))
        logits, cache = decoding.extend(model, params, cache, token[:, None],
                                        jnp.full((batch, 1), prompt_len + i, jnp.int32))
    return np.stack(out, 1)


def test_generation_with_cache_equals_without():
    """Token for token in float32, on weights where the context decides the next token."""
    config, model, params = _micro_sharpened()
    result = evaluation.generation(config, params=params, batch_size=2, prompt_len=5,
                                   new_tokens=12)
    assert result["same_tokens"] is True and result["tokens_agree_fraction"] == 1.0
    assert result["cache_tokens_per_s"] > 0 and result["no_cache_tokens_per_s"] > 0
    assert result["cache_speedup"] > 0
    prompts = np.random.default_rng(0).integers(1, config.vocab_size, (2, 5)).astype(np.int32)
    uncached = evaluation.generate_without_cache(model, params, prompts, 12)
    np.testing.assert_array_equal(_greedy_with_cache(model, params, prompts, 12), uncached)
    assert all(len(set(row.tolist())) >= 3 for row in uncached)  # not one repeated token


def test_a_wrong_cache_would_be_caught():
    """The comparison has power: the prompt's cached keys and values reversed in time give
    other tokens than the uncached loop (at the plain init they would not)."""
    config, model, params = _micro_sharpened()
    prompts = np.random.default_rng(0).integers(1, config.vocab_size, (2, 5)).astype(np.int32)
    uncached = evaluation.generate_without_cache(model, params, prompts, 12)

    def reverse_in_time(cache):
        return jax.tree.map(lambda c: jnp.flip(c, 1) if c.dtype == jnp.float32 else c, cache)

    wrong = _greedy_with_cache(model, params, prompts, 12, corrupt=reverse_in_time)
    assert np.mean(wrong == uncached) < 0.75


def test_generation_loop_on_device_with_cache_equals_without():
    config, _, params = _micro_sharpened()
    result = evaluation.generation_on_device(config, params=params, batch_size=2, prompt_len=5,
                                             new_tokens=12)
    assert result["same_tokens"] is True
    assert result["cache_tokens_per_s"] > 0 and result["no_cache_tokens_per_s"] > 0
    host = evaluation.generation(config, params=params, batch_size=2, prompt_len=5,
                                 new_tokens=12, with_no_cache=False)
    assert "no_cache_tokens_per_s" not in host and host["cache_tokens_per_s"] > 0


def test_multiple_choice_throughput():
    config = configs.build_config("micro", {})
    result = evaluation.multiple_choice(config, questions=6, candidates=4, prompt_len=10,
                                        span_len=4, batch_size=8, repeats=1)
    assert result["rows"] == 24 and result["questions_per_s"] > 0 and result["finite"]


def test_eval_suite_rows():
    rows = bench.suite_eval(_args("--gen_tokens=8", "--gen_prompt=4", "--mc_questions=4"))
    assert [r["kind"] for r in rows] == ["multiple_choice", "generation", "generation"]
    assert rows[1]["same_tokens"] is True and rows[2]["same_tokens"] is True
    assert "questions/s" in bench.format_rows(rows)


def test_model_need_per_host_is_about_35k():
    need = pipeline.model_need_per_host()
    assert 33_000 < need["tokens_per_s_per_host"] < 36_000
    assert need["tokens_per_s_global"] == pytest.approx(4 * need["tokens_per_s_per_host"])


@pytest.mark.slow
def test_pipeline_measure_embedded_mixture():
    result = pipeline.measure(pipeline.PRETRAIN_MIXTURE, seq_len=64, batch_size=4, steps=2)
    assert result["real_tokens_per_s"] > 0 and result["fill"] == 1.0


@pytest.mark.skipif(not torch_peer.available(), reason="torch is not installed")
def test_torch_peer_worker_micro():
    config = configs.build_config("micro", {})
    worker = torch_peer.TorchWorker(config, 2, 16)
    try:
        assert abs(worker.info()["first_loss"] - math.log(config.vocab_size)) < 0.2
        timing_ = worker()
        assert timing_["wall"] > 0 and timing_["cpu"] >= 0
    finally:
        worker.close()


def test_json_output_and_timing_helpers(tmp_path):
    path = str(tmp_path / "out.jsonl")
    bench.write_json(path, {"results": [{"mfu": float("nan"), "x": np.float32(1.5)}]})
    bench.write_json(path, {"results": []})
    lines = open(path).read().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["results"][0] == {"mfu": None, "x": 1.5}
    peak = timing.MatmulPeak(64)
    peak.sample(2)
    assert peak.summary()["samples"] == 2 and peak.peak() > 0
    assert timing.peak_rss_bytes() > 0
    result = timing.time_repeats(lambda: None, 3, peak_sampler=peak)
    assert len(result["step_s_all"]) == 3 and len(peak.wall) == 5


@pytest.mark.slow
def test_gpu_script_smoke_on_cpu(tmp_path):
    env = dict(os.environ, BENCH_SMOKE="1", OUT=str(tmp_path), JAX_PLATFORMS="cpu",
               XLA_FLAGS="", PYTHON=sys.executable)
    out = subprocess.run(["bash", "codereason_jax/benchmarks/gpu.sh"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:]
    results = [json.loads(line) for line in open(tmp_path / "gpu_bench.jsonl")]
    assert len(results) >= 5
    summary = open(tmp_path / "gpu_summary.txt").read()
    assert "train" in summary and "generation" in summary
