"""Evaluation throughput: multiple-choice questions/s and generation tokens/s (KV cache or not).

Multiple choice goes through ``evaluation.scoring.RowScorer`` (the evaluator's batched scorer:
all candidates of many questions in padded rows, one forward pass per batch). Generation goes
through ``evaluation.generation.generate`` (greedy, KV cache) and, for comparison, a greedy loop
without a cache that reruns the whole forward pass over a fixed-width buffer for every token.
Both are greedy from the same prompts, so they must produce the same tokens. ``suite_eval`` is
the eval suite of ``python -m codereason_jax.bench``.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from codereason_jax.benchmarks import configs
from codereason_jax.benchmarks.results import echo, format_rows, guarded
from codereason_jax.model import PanGuConfig, PanGuDecoder


def init_params(model: PanGuDecoder, seed: int = 0) -> Any:
    example = jnp.zeros((1, 8), jnp.int32)
    return jax.jit(lambda key: nn.meta.unbox(model.init(key, example)["params"]))(
        jax.random.key(seed))


def multiple_choice(config: PanGuConfig, params: Any = None, questions: int = 64,
                    candidates: int = 4, prompt_len: int = 96, span_len: int = 16,
                    batch_size: int = 32, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Questions/s of batched candidate scoring (after one untimed pass that compiles)."""
    from codereason_jax.evaluation import scoring

    model = PanGuDecoder(config)
    params = init_params(model, seed) if params is None else params
    rng = np.random.default_rng(seed)
    rows = []
    limit = config.max_seq_len
    for _ in range(questions):
        prompt = rng.integers(1, config.vocab_size, prompt_len).tolist()
        for _ in range(candidates):
            span = rng.integers(1, config.vocab_size,
                                int(rng.integers(max(1, span_len // 2), span_len + 1))).tolist()
            rows.append(scoring.span_row(prompt, span, limit))
    scorer = scoring.RowScorer(model, params, batch_size=batch_size)
    scorer(rows)  # compile every width bucket
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        sums = scorer(rows)
        times.append(time.perf_counter() - start)
    elapsed = float(np.median(times))
    tokens = sum(len(r.tokens) - 1 for r in rows)
    return {"questions": questions, "candidates": candidates, "rows": len(rows),
            "batch_size": batch_size, "seconds": elapsed, "questions_per_s": questions / elapsed,
            "rows_per_s": len(rows) / elapsed, "scored_tokens_per_s": tokens / elapsed,
            "finite": bool(np.all(np.isfinite(sums)))}


def generate_without_cache(model: PanGuDecoder, params: Any, prompts: np.ndarray,
                           new_tokens: int) -> np.ndarray:
    """Greedy continuation recomputing the full forward pass for every new token.

    The buffer has the final width from the start (one compilation); causality makes the
    unfilled tail irrelevant to the logits read at the last filled position.
    """
    batch, prompt_len = prompts.shape
    total = prompt_len + new_tokens
    buffer = np.zeros((batch, total), np.int32)
    buffer[:, :prompt_len] = prompts

    tokens = jnp.asarray(buffer)
    for i in range(prompt_len, total):
        tokens = _append_next_token(model, params, tokens, jnp.int32(i))
    return np.asarray(tokens[:, prompt_len:])


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _append_next_token(model, params, tokens, index):
    logits = model.apply({"params": params}, tokens)
    last = jax.lax.dynamic_index_in_dim(logits, index - 1, axis=1, keepdims=False)
    token = jnp.argmax(last, axis=-1).astype(jnp.int32)
    return jax.lax.dynamic_update_index_in_dim(tokens, token, index, axis=1)


def _model_and_prompts(config: PanGuConfig, params: Any, batch_size: int, prompt_len: int,
                       seed: int) -> tuple[PanGuDecoder, Any, np.ndarray]:
    """The model, its params (initialised from ``seed`` unless given) and random prompts."""
    model = PanGuDecoder(config)
    params = init_params(model, seed) if params is None else params
    rng = np.random.default_rng(seed)
    prompts = rng.integers(1, config.vocab_size, (batch_size, prompt_len)).astype(np.int32)
    return model, params, prompts


def generation(config: PanGuConfig, params: Any = None, batch_size: int = 1,
               prompt_len: int = 16, new_tokens: int = 512, seed: int = 0,
               with_no_cache: bool = True) -> dict[str, Any]:
    """Generation tokens/s with the KV cache and without; both greedy from the same prompts."""
    from codereason_jax.evaluation import generation as gen

    model, params, prompts = _model_and_prompts(config, params, batch_size, prompt_len, seed)
    sampling = gen.SamplingConfig(method="greedy", max_new_tokens=new_tokens)
    eos = -1  # never produced: every row generates exactly new_tokens tokens

    def cached():
        return gen.generate(model, params, [p.tolist() for p in prompts], eos, sampling,
                            batch_size=batch_size)

    cached()  # compile the prompt pass and the one-token step
    start = time.perf_counter()
    with_cache = np.array(cached(), np.int32)
    cache_s = time.perf_counter() - start
    out: dict[str, Any] = {
        "batch_size": batch_size, "prompt_len": prompt_len, "new_tokens": new_tokens,
        "cache_seconds": cache_s,
        "cache_tokens_per_s": batch_size * new_tokens / cache_s}
    if with_no_cache:
        generate_without_cache(model, params, prompts, 1)  # compile (a different width)
        # Compile the full-width step once, untimed: one token at the final width.
        warm = np.concatenate([prompts, np.zeros((batch_size, new_tokens - 1), np.int32)], 1)
        generate_without_cache(model, params, warm, 1)
        start = time.perf_counter()
        no_cache = generate_without_cache(model, params, prompts, new_tokens)
        no_cache_s = time.perf_counter() - start
        out.update({"no_cache_seconds": no_cache_s,
                    "no_cache_tokens_per_s": batch_size * new_tokens / no_cache_s,
                    "cache_speedup": no_cache_s / cache_s,
                    "same_tokens": bool(np.array_equal(with_cache, no_cache)),
                    "tokens_agree_fraction": float(np.mean(with_cache == no_cache))})
    return out


# ------------------------------------------------------------------ whole loop on the device
# The evaluator's generate() decodes in one compiled loop that stops at EOS, then reads the
# tokens back. These two greedy loops always run all new_tokens steps on the device
# (lax.fori_loop), which isolates what the KV cache saves: one token's work per step instead
# of a whole forward pass.


@functools.partial(jax.jit, static_argnums=(0, 3))
def _greedy_cached(model, params, prompts, new_tokens):
    from codereason_jax.model import decoding

    batch, prompt_len = prompts.shape
    cache = decoding.init_cache(model, params, batch, prompt_len + new_tokens)
    positions = jnp.broadcast_to(jnp.arange(prompt_len), prompts.shape)
    logits, cache = decoding.extend(model, params, cache, prompts, positions)

    def body(i, carry):
        last, cache, out = carry
        token = jnp.argmax(last, axis=-1).astype(jnp.int32)
        out = out.at[:, i].set(token)
        position = jnp.full((batch, 1), prompt_len + i, jnp.int32)
        logits, cache = decoding.extend(model, params, cache, token[:, None], position)
        return logits[:, -1], cache, out

    out = jnp.zeros((batch, new_tokens), jnp.int32)
    _, _, out = jax.lax.fori_loop(0, new_tokens, body, (logits[:, -1], cache, out))
    return out


@functools.partial(jax.jit, static_argnums=(0, 3))
def _greedy_uncached(model, params, prompts, new_tokens):
    batch, prompt_len = prompts.shape
    tokens = jnp.zeros((batch, prompt_len + new_tokens), jnp.int32)
    tokens = tokens.at[:, :prompt_len].set(prompts)

    def body(i, tokens):
        logits = model.apply({"params": params}, tokens)
        index = prompt_len + i
        last = jax.lax.dynamic_index_in_dim(logits, index - 1, axis=1, keepdims=False)
        token = jnp.argmax(last, axis=-1).astype(jnp.int32)
        return jax.lax.dynamic_update_index_in_dim(tokens, token, index, axis=1)

    tokens = jax.lax.fori_loop(0, new_tokens, body, tokens)
    return tokens[:, prompt_len:]


def generation_on_device(config: PanGuConfig, params: Any = None, batch_size: int = 1,
                         prompt_len: int = 16, new_tokens: int = 512, seed: int = 0,
                         with_no_cache: bool = True) -> dict[str, Any]:
    """Greedy generation with the whole token loop in one compiled program, cache or not."""
    model, params, prompts = _model_and_prompts(config, params, batch_size, prompt_len, seed)
    prompts = jnp.asarray(prompts)
    out: dict[str, Any] = {"batch_size": batch_size, "prompt_len": prompt_len,
                           "new_tokens": new_tokens, "loop": "on device (lax.fori_loop)"}
    variants = [("cache", _greedy_cached)] + (
        [("no_cache", _greedy_uncached)] if with_no_cache else [])
    results = {}
    for name, fn in variants:
        start = time.perf_counter()
        fn(model, params, prompts, new_tokens).block_until_ready()  # compile
        out[f"{name}_compile_s"] = time.perf_counter() - start
        start = time.perf_counter()
        results[name] = np.asarray(fn(model, params, prompts, new_tokens))
        seconds = time.perf_counter() - start
        out[f"{name}_seconds"] = seconds
        out[f"{name}_tokens_per_s"] = batch_size * new_tokens / seconds
    if with_no_cache:
        out["cache_speedup"] = out["no_cache_seconds"] / out["cache_seconds"]
        out["same_tokens"] = bool(np.array_equal(results["cache"], results["no_cache"]))
        out["tokens_agree_fraction"] = float(np.mean(results["cache"] == results["no_cache"]))
    return out


# ------------------------------------------------------------------------------ eval suite


def suite_eval(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Multiple choice, then generation through the evaluator and through a loop compiled
    whole, per config."""
    rows = []
    for name in args.configs:
        options = configs.options_from_args(args, jax.devices()[0].platform)
        # Evaluation runs deterministic forward passes: no scan/remat/barrier needed, but
        # the same dtype and attention.
        options.update(block_barrier=False, head_vjp=False, remat_policy="none")
        need = args.gen_prompt + args.gen_tokens
        config = configs.build_config(name, options, 0.0, max_seq_len=need)
        echo(f"[bench] eval {name}: multiple choice ...")
        mc = guarded(f"eval {name} multiple choice", lambda: multiple_choice(
            config, questions=args.mc_questions, repeats=max(1, min(args.repeats, 3))))
        rows.append({"suite": "eval", "kind": "multiple_choice", "config": name,
                     "model": configs.describe(config), **mc})
        echo(format_rows([rows[-1]]))
        # The evaluator's generate(), then greedy loops compiled whole (cached and uncached).
        for label, measure, extra in (
                ("", generation, {"loop": "evaluator (compiled loop, stops at EOS)"}),
                (", loop on device", generation_on_device, {})):
            echo(f"[bench] eval {name}: generation of {args.gen_tokens} tokens{label} ...")
            gen = guarded(f"eval {name} generation{label}", lambda measure=measure: measure(
                config, batch_size=args.gen_batch, prompt_len=args.gen_prompt,
                new_tokens=args.gen_tokens,
                with_no_cache=args.no_cache_baseline in ("auto", True)))
            rows.append({"suite": "eval", "kind": "generation", "config": name, **extra,
                         "model": configs.describe(config), **gen})
            echo(format_rows([rows[-1]]))
    return rows
