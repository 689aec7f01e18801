"""End-to-end check of the model on this machine: sharded init, training steps, cached decoding.

    python -m codereason_jax.smoke_check --gin_file=gin/models/pangu_tiny.gin [--mesh=8x1x1]

Until the SeqIO pipeline and trainer exist this is the project's main job: it packs this
package's own Python sources as UTF-8 bytes (token id = byte value, one EOD id after each file)
into rows with per-document positions, trains a few AdamW steps under jit with explicit
shardings, and checks that the loss falls from ln(vocab) and that cached decoding reproduces the
full forward pass. Exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from codereason_jax import gin_utils, partitioning
from codereason_jax.losses import cross_entropy
from codereason_jax.model import ConfigError, PanGuConfig, PanGuDecoder, decoding
from codereason_jax.model.packing import segments_from_eod

BYTE_EOD = 256  # first id after the 256 byte values


def byte_corpus_rows(config: PanGuConfig, num_rows: int) -> np.ndarray:
    """[num_rows, max_seq_len + 1] rows of this package's sources, as bytes, EOD-separated."""
    if config.vocab_size <= BYTE_EOD:
        raise ConfigError(f"The smoke check's byte tokens need PanGuConfig.vocab_size > "
                          f"{BYTE_EOD}, got {config.vocab_size}.")
    package = os.path.dirname(os.path.abspath(__file__))
    stream: list[int] = []
    for path in sorted(glob.glob(os.path.join(package, "**", "*.py"), recursive=True)):
        with open(path, "rb") as f:
            stream.extend(f.read())
        stream.append(BYTE_EOD)
    width = config.max_seq_len + 1
    needed = num_rows * width
    reps = -(-needed // len(stream))  # the sources are cycled if they are shorter than needed
    return np.array((stream * reps)[:needed], np.int32).reshape(num_rows, width)


def parse_mesh(text: str | None) -> tuple[int, int, int]:
    if text is None:
        return (jax.device_count(), 1, 1)
    try:
        data, fsdp, model = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--mesh={text!r} must be DATAxFSDPxMODEL, e.g. 2x1x4") from None
    return data, fsdp, model


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m codereason_jax.smoke_check",
                                     description=__doc__.split("\n\n")[0])
    gin_utils.add_gin_flags(parser)
    parser.add_argument("--mesh", help="DATAxFSDPxMODEL (default: all devices on data)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    try:
        rest, bindings = gin_utils.split_gin_bindings(argv)
        args = parser.parse_args(rest)
        gin_utils.parse(args.gin_file, bindings)
        config = gin_utils.model_config()
        mesh = partitioning.make_mesh(parse_mesh(args.mesh))
        rows = byte_corpus_rows(config, args.steps * args.batch_size)
    except (ConfigError, partitioning.PartitioningError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    rules = partitioning.DEFAULT_RULES
    model = PanGuDecoder(config)
    length = config.max_seq_len
    print(f"model: {config.num_params():,} params, {config.num_layers} layers (query layer "
          f"{'on' if config.use_query_layer else 'off'}), d={config.d_model}, seq={length}")
    print(f"mesh: {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} "
          "device(s)")

    example = jnp.zeros((args.batch_size, length), jnp.int32)
    batch_sharding = partitioning.batch_sharding(mesh, rules)
    optimizer = optax.adamw(optax.warmup_cosine_decay_schedule(
        0.0, args.learning_rate, max(1, args.steps // 10), args.steps), weight_decay=0.1)

    def init_boxed_state(key):
        # Optimizer slots mirror the params' logical boxes, so one call shards the whole state.
        params = model.init(key, example)["params"]
        return params, optimizer.init(params)

    state_sharding = partitioning.param_shardings(
        jax.eval_shape(init_boxed_state, jax.random.key(0)), mesh, rules)

    def init_state(key):
        return nn.meta.unbox(init_boxed_state(key))

    def loss_fn(params, batch, dropout_key):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        segment_ids, positions = segments_from_eod(inputs, BYTE_EOD)
        with nn.logical_axis_rules(rules):
            logits = model.apply({"params": params}, inputs, positions, segment_ids,
                                 deterministic=False, rngs={"dropout": dropout_key})
        total, count = cross_entropy(logits, targets)
        return total / count

    def train_step(state, batch, dropout_key):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, dropout_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    with jax.set_mesh(mesh):
        state = jax.jit(init_state, out_shardings=state_sharding)(jax.random.key(0))
        step_fn = jax.jit(train_step, in_shardings=(state_sharding, batch_sharding, None),
                          out_shardings=(state_sharding, None), donate_argnums=0)
        losses, start = [], None
        for step in range(args.steps):
            batch = jax.device_put(rows[step * args.batch_size:(step + 1) * args.batch_size],
                                   batch_sharding)
            state, loss = step_fn(state, batch, jax.random.key(step))
            losses.append(float(loss))
            if step == 0:
                start = time.perf_counter()  # exclude compilation
            if step % 5 == 0 or step == args.steps - 1:
                print(f"step {step:4d}  loss {losses[-1]:.4f}", flush=True)
        seconds = time.perf_counter() - start
        tokens_per_s = (args.steps - 1) * args.batch_size * length / max(seconds, 1e-9)
        print(f"throughput: {tokens_per_s:,.0f} tokens/s after compilation")

        params = jax.device_get(state[0])
    failures = []
    ln_v = math.log(config.vocab_size)
    if abs(losses[0] - ln_v) > 0.5:
        failures.append(f"initial loss {losses[0]:.3f} is far from ln(vocab)={ln_v:.3f}")
    if not np.mean(losses[-5:]) < losses[0] - 1.0:
        failures.append(f"loss did not fall: {losses[0]:.3f} -> {np.mean(losses[-5:]):.3f}")

    prompt = jnp.asarray(rows[:2, :32])
    full = model.apply({"params": params}, prompt)
    cache = decoding.init_cache(model, params, batch_size=2, max_length=32)
    positions = jnp.broadcast_to(jnp.arange(32), (2, 32))
    first, cache = decoding.extend(model, params, cache, prompt[:, :16], positions[:, :16])
    pieces = [first]
    for i in range(16, 32):
        step_logits, cache = decoding.extend(model, params, cache, prompt[:, i:i + 1],
                                             positions[:, i:i + 1])
        pieces.append(step_logits)
    decode_error = float(jnp.abs(jnp.concatenate(pieces, axis=1) - full).max())
    print(f"cached decoding vs full forward: max |Δlogit| = {decode_error:.2e}")
    if not decode_error < 1e-3:
        failures.append(f"cached decoding differs from the full forward by {decode_error}")

    if failures:
        print("smoke check FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"smoke check passed: loss {losses[0]:.3f} -> {np.mean(losses[-5:]):.3f} "
          f"(ln V = {ln_v:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
