"""Print the log-probabilities a checkpoint gives to a sequence of token ids (parity checks).

    python -m codereason_jax.score --checkpoint=DIR --gin_file=gin/models/pangu_2_6b.gin \\
        --token_ids=9,1432,35,27 [--step=N] [--mesh_shape=-1,1,1] [--gin.NAME=VALUE]

For ids x_0 .. x_{n-1} it prints n-1 lines: line k (k = 1 .. n-1) is
ln p(x_k | x_0 .. x_{k-1}), the natural-log probability of the k-th id (0-based) under the
model's next-token distribution at position k-1 (float32 log_softmax of the logits). The ids
are one document: positions 0 .. n-1, no end-of-document reset, no dropout. The sum of the
lines is the sequence's log-likelihood given x_0.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import dataclasses
import sys
from typing import Sequence

import numpy as np

from codereason_jax import cli, gin_utils, paths
from codereason_jax.checkpoints import CheckpointError, CheckpointMismatchError
from codereason_jax.model.config import ConfigError, PanGuConfig
from codereason_jax.partitioning import PartitioningError


def parse_token_ids(text: str, config: PanGuConfig) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise ConfigError(f"--token_ids={text!r} is not a comma-separated list of integers.")
    if len(ids) < 2:
        raise ConfigError(f"--token_ids needs at least 2 ids (got {len(ids)}): the first one "
                          "is only context.")
    bad = [i for i in ids if not 0 <= i < config.vocab_size]
    if bad:
        raise ConfigError(f"--token_ids holds ids outside [0, {config.vocab_size}) "
                          f"(PanGuConfig.vocab_size): {bad[:5]}.")
    if len(ids) > config.max_seq_len:
        raise ConfigError(f"{len(ids)} ids exceed PanGuConfig.max_seq_len={config.max_seq_len}.")
    return ids


def token_log_probs(model, params, ids: Sequence[int]) -> np.ndarray:
    """[n-1] float32: entry k-1 is log p(ids[k] | ids[:k])."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(params, tokens):
        logits = model.apply({"params": params}, tokens)[0]  # [n, vocab] float32
        log_probs = jax.nn.log_softmax(logits[:-1].astype(jnp.float32), axis=-1)
        return jnp.take_along_axis(log_probs, tokens[0, 1:, None], axis=-1)[:, 0]

    return np.asarray(run(params, jnp.asarray([list(ids)], jnp.int32)))


def load_params(model, checkpoint: str, step: int | None, mesh_shape: Sequence[int]):
    """(mesh, step, params) restored straight into the shardings of a (data, fsdp, model)
    mesh over all devices (replicated by default; fsdp/model axes shard big models)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from codereason_jax import partitioning
    from codereason_jax.checkpoints import abstract_like, restore_params

    mesh = partitioning.make_mesh(
        partitioning.resolve_mesh_shape(mesh_shape, jax.device_count()))
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
                           )["params"]
    shardings = partitioning.param_shardings(boxed, mesh, partitioning.DEFAULT_RULES)
    restored_step, params = restore_params(
        checkpoint, abstract_like(nn.meta.unbox(boxed), shardings), step)
    return mesh, restored_step, params


def recorded_config(checkpoint: str) -> dict | None:
    """The PanGuConfig fields recorded in the newest checkpoint's meta (convert_pangu writes
    them under ``model_config``), or None."""
    import orbax.checkpoint as ocp

    from codereason_jax.checkpoints import CheckpointConfig, _manager

    directory = paths.join(checkpoint, "checkpoints")
    directory = directory if paths.isdir(directory) else checkpoint
    try:
        manager = _manager(directory, CheckpointConfig(async_save=False), read_only=True)
        try:
            meta = manager.restore(max(manager.all_steps()), args=ocp.args.Composite(
                meta=ocp.args.JsonRestore())).meta
        finally:
            manager.close()
        return dict(meta["model_config"])
    except Exception:  # noqa: BLE001 (no usable meta)
        return None


def config_differences(recorded: dict | None, config: PanGuConfig,
                       fields: Sequence[str]) -> list[str]:
    if not recorded:
        return []
    return [f"{k}={recorded[k]!r} (gin: {getattr(config, k)!r})" for k in fields
            if k in recorded and recorded[k] != getattr(config, k)]


SHAPE_FIELDS = ("vocab_size", "num_layers", "d_model", "num_heads", "d_ff", "max_seq_len",
                "use_query_layer", "scan_layers")
NUMERICS_FIELDS = ("num_heads", "activation", "layer_norm_epsilon")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(
        prog="python -m codereason_jax.score", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--checkpoint", required=True,
                        help="run directory (or its checkpoints/ folder; local or gs://...), "
                        "e.g. the --output of convert_pangu")
    parser.add_argument("--token_ids", required=True, help="comma-separated ids, e.g. 9,35,27")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
    parser.add_argument("--mesh_shape", default="-1,1,1",
                        help="data,fsdp,model sizes over the devices (default -1,1,1: params "
                        "replicated; e.g. 1,-1,1 shards a model too big for one device)")
    try:
        args = gin_utils.parse_command_line(parser, argv)
        config = gin_utils.model_config()
        ids = parse_token_ids(args.token_ids, config)
        mesh_shape = tuple(int(s) for s in args.mesh_shape.split(","))
    except (ConfigError, ValueError) as err:  # gin's own errors are ValueErrors
        raise cli.UserError(str(err)) from err

    import jax

    from codereason_jax.model import PanGuDecoder

    model = PanGuDecoder(dataclasses.replace(config, dropout_rate=0.0))
    try:
        mesh, step, params = load_params(model, args.checkpoint, args.step, mesh_shape)
    except CheckpointMismatchError as err:  # the saved shapes differ from the gin files
        differ = config_differences(recorded_config(args.checkpoint), config, SHAPE_FIELDS)
        hint = ("the checkpoint was written with " + ", ".join(differ) if differ else
                "another model size, or scan_layers differs from the checkpoint's")
        raise cli.UserError(
            f"the parameters in {args.checkpoint} do not fit the PanGuConfig of the gin files "
            f"({hint}): {str(err).splitlines()[0]}") from err
    except (CheckpointError, PartitioningError, ConfigError) as err:
        raise cli.UserError(str(err)) from err
    differ = config_differences(recorded_config(args.checkpoint), config, NUMERICS_FIELDS)
    if differ:
        print("warning: the checkpoint was converted with " + ", ".join(differ) + "; the "
              "scores follow the gin files.", file=sys.stderr)
    print(f"scoring {len(ids)} ids with {paths.resolve(args.checkpoint)} (step {step})",
          file=sys.stderr)
    with jax.set_mesh(mesh):
        values = token_log_probs(model, params, ids)
    sys.stdout.write("".join(f"{v:.9g}\n" for v in values.tolist()))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
