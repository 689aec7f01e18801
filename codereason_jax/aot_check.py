"""Ahead-of-time fit check: compile the real train step for a mesh without allocating weights.

    python -m codereason_jax.aot_check --gin_file=gin/models/pangu_2_6b.gin --mesh=1x16x1 \\
        --batch_size=64 --sequence_length=1024 --hbm_gib=32 \\
        [--gin.PanGuConfig.dtype="'bfloat16'"] [--gin.PanGuConfig.remat_policy="'full'"]

The devices are emulated CPU devices (``--devices``, default: the mesh size), so this runs on
any machine. It prints, per device, the bytes of parameters, optimizer state, the batch and the
compiler's temporaries (activations and workspace), and the FLOPs of one step, and exits with
status 1 when their sum exceeds ``--hbm_gib`` (e.g. 32 for TPU v4, 16 for v5e). The CPU
compiler's temporaries approximate the TPU compiler's; treat a small margin with care.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Sequence

from codereason_jax import cli


def _parse_mesh(text: str) -> tuple[int, int, int]:
    try:
        data, fsdp, model = (int(x) for x in text.lower().split("x"))
    except ValueError:
        from codereason_jax.cli import UserError

        raise UserError(f"--mesh={text!r} must be DATAxFSDPxMODEL, e.g. 2x8x1") from None
    return data, fsdp, model


def _check_gin_mesh(mesh: str) -> None:
    """A gin file that binds TrainConfig.mesh_shape (gin/partitioning/) must agree with --mesh."""
    import gin

    try:
        bound = tuple(gin.query_parameter("TrainConfig.mesh_shape"))
    except ValueError:
        return  # not bound
    given = _parse_mesh(mesh)
    if any(b not in (-1, g) for b, g in zip(bound, given)):
        raise ValueError(f"--mesh={mesh} differs from TrainConfig.mesh_shape = {bound} bound in "
                         "the gin files; pass --mesh=" + "x".join(map(str, bound)) + ".")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.aot_check",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh", required=True, help="DATAxFSDPxMODEL")
    parser.add_argument("--devices", type=int, help="emulated devices (default: mesh size)")
    parser.add_argument("--batch_size", type=int, default=64, help="global batch (sequences)")
    parser.add_argument("--sequence_length", type=int, default=1024)
    parser.add_argument("--grad_accumulation", type=int, default=1)
    parser.add_argument("--hbm_gib", type=float, default=32.0, help="per-device memory budget")
    mesh_shape = None
    for arg in argv:  # the device count must be fixed before jax is imported
        if arg.startswith("--mesh="):
            mesh_shape = _parse_mesh(arg.split("=", 1)[1])
    devices = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--devices=")), None)
    if mesh_shape is not None:
        count = devices or mesh_shape[0] * mesh_shape[1] * mesh_shape[2]
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={count}")
        os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import jax.numpy as jnp

    from codereason_jax import gin_utils, partitioning, train_metrics
    from codereason_jax.model import PanGuDecoder
    from codereason_jax.model.config import ConfigError
    from codereason_jax.optim import OptimizerConfig
    from codereason_jax.trainer import TrainConfig, make_train_step

    gin_utils.register(TrainConfig)  # run and partitioning files bind TrainConfig too
    try:
        args = gin_utils.parse_command_line(parser, argv)
        _check_gin_mesh(args.mesh)
        model_config = gin_utils.model_config()
        optimizer_config = gin_utils.build(OptimizerConfig)
        config = TrainConfig(mixture="(aot)", num_steps=1, batch_size=args.batch_size,
                             sequence_length=args.sequence_length,
                             mesh_shape=_parse_mesh(args.mesh),
                             grad_accumulation=args.grad_accumulation)
        mesh = partitioning.make_mesh(config.mesh_shape)
    except (ConfigError, ValueError, partitioning.PartitioningError) as err:
        raise cli.UserError(str(err)) from err

    rules = partitioning.DEFAULT_RULES
    model = PanGuDecoder(model_config)
    optimizer, _ = optimizer_config.build(1000)
    example = jax.ShapeDtypeStruct((config.batch_size, config.sequence_length), jnp.int32)
    boxed, params, param_shardings, opt_state, opt_shardings = (
        partitioning.abstract_train_state(model, optimizer, example, mesh, rules))
    batch_sharding = partitioning.batch_sharding(mesh, rules)

    def abstract(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            tree, shardings)

    shape = (config.batch_size, config.sequence_length)
    batch = {k: jax.ShapeDtypeStruct(shape, jnp.float32 if k == "loss_weights" else jnp.int32,
                                     sharding=batch_sharding)
             for k in ("inputs", "targets", "positions", "segment_ids", "loss_weights")}
    step = jax.ShapeDtypeStruct((), jnp.int32)
    with jax.set_mesh(mesh):
        compiled = jax.jit(make_train_step(model, optimizer, config, rules),
                           in_shardings=(param_shardings, opt_shardings, batch_sharding, None),
                           out_shardings=(param_shardings, opt_shardings, None),
                           donate_argnums=(0, 1)).lower(
            abstract(params, param_shardings), abstract(opt_state, opt_shardings), batch,
            step).compile()

    def per_device(tree, shardings):
        return sum(math.prod(s.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
                   for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))

    param_bytes = per_device(params, param_shardings)
    opt_bytes = per_device(opt_state, opt_shardings)
    batch_bytes = sum(4 * batch_sharding.shard_shape(shape)[0] * shape[1] for _ in batch)
    memory = compiled.memory_analysis()
    temp_bytes = int(getattr(memory, "temp_size_in_bytes", 0))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    total = param_bytes + opt_bytes + batch_bytes + temp_bytes
    gib = 1024 ** 3
    print(f"model: {model_config.num_params():,} params, dtype {model_config.dtype}, remat "
          f"{model_config.remat_policy}, scan {model_config.scan_layers}")
    print(f"mesh {dict(mesh.shape)} over {jax.device_count()} emulated devices; global batch "
          f"{config.batch_size} x {config.sequence_length}, {config.grad_accumulation} "
          "micro-batch(es)")
    print("per device:")
    for name, value in (("parameters", param_bytes), ("optimizer state", opt_bytes),
                        ("batch", batch_bytes), ("temporaries (activations, workspace)",
                                                 temp_bytes), ("total", total)):
        print(f"  {name:<38} {value / gib:9.3f} GiB")
    tokens_per_device = config.batch_size * config.sequence_length / jax.device_count()
    analytic = train_metrics.training_flops_per_token(model_config, config.sequence_length)
    print(f"model FLOPs per step per device: {analytic * tokens_per_device:.3e} "
          "(6 x matmul weights + causal attention per token; remat recomputation not counted)")
    print(f"compiler FLOPs per step per device: {flops:.3e} (XLA counts a loop body once, so "
          "this undercounts scan_layers=True)")
    if total > args.hbm_gib * gib:
        print(f"error: {total / gib:.2f} GiB per device exceeds the budget of {args.hbm_gib} "
              "GiB; shard more (a larger fsdp or model axis), turn on remat "
              "(PanGuConfig.remat_policy), use bfloat16, or split the batch "
              "(--grad_accumulation).", file=sys.stderr)
        return 1
    print(f"fits: {total / gib:.2f} of {args.hbm_gib} GiB per device")
    return 0


if __name__ == "__main__":
    sys.exit(main())
