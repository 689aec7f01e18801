"""The JAX training step as the trainer runs it, prepared once and timed by the suites.

``JaxStep`` builds the model, the paper's optimizer (clip + AdamW without bias correction) and
``trainer.make_train_step`` exactly as ``trainer.train`` does (mesh, logical-axis rules,
parameter and optimizer-state shardings, donated buffers), on a fixed random batch already on
the devices, so the timing is the step alone: no input pipeline, no compilation (the step is
compiled ahead of time and the compile time reported apart).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from codereason_jax import metrics, partitioning
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.optim import OptimizerConfig
from codereason_jax.trainer import TrainConfig, make_train_step


class JaxStep:
    """One compiled, sharded train step; ``__call__`` runs it and waits for the result.

    ``packed``: the batch carries segment ids (documents packed into rows: attention is masked
    per document); False feeds one document per row, which lets the fused (cuDNN) attention
    use its built-in causal mask.
    """

    def __init__(self, config: PanGuConfig, batch_size: int, seq_len: int,
                 mesh_shape: Sequence[int] = (-1, 1, 1), packed: bool = False,
                 donate: bool = True, seed: int = 0):
        self.config = config
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.tokens = batch_size * seq_len
        self.mesh = partitioning.make_mesh(
            partitioning.resolve_mesh_shape(tuple(mesh_shape), jax.device_count()))
        rules = partitioning.DEFAULT_RULES
        model = PanGuDecoder(config)
        train_config = TrainConfig(mixture="bench", num_steps=1000, batch_size=batch_size,
                                   sequence_length=seq_len, seed=seed,
                                   mesh_shape=tuple(self.mesh.devices.shape))
        optimizer, _ = OptimizerConfig(warmup_steps=10).build(1000)
        example = jnp.zeros((1, seq_len), jnp.int32)
        boxed = jax.eval_shape(lambda: model.init(jax.random.key(seed), example))["params"]
        param_shardings = partitioning.param_shardings(boxed, self.mesh, rules)
        abstract_params = nn.meta.unbox(boxed)
        abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
        opt_shardings = partitioning.optimizer_state_shardings(
            abstract_opt, abstract_params, param_shardings, self.mesh)
        batch_sharding = partitioning.batch_sharding(self.mesh, rules)

        rng = np.random.default_rng(seed)
        tokens = rng.integers(0, config.vocab_size, (batch_size, seq_len + 1), dtype=np.int32)
        host_batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                      "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32),
                                                   (batch_size, seq_len)).copy(),
                      "loss_weights": np.ones((batch_size, seq_len), np.float32)}
        if packed:
            host_batch["segment_ids"] = np.ones((batch_size, seq_len), np.int32)
        with jax.set_mesh(self.mesh):
            self.batch = {k: jax.device_put(v, batch_sharding) for k, v in host_batch.items()}
            self.params = jax.jit(
                lambda key: nn.meta.unbox(model.init(key, example)["params"]),
                out_shardings=param_shardings)(jax.random.key(seed))
            self.opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(self.params)
            step_fn = jax.jit(make_train_step(model, optimizer, train_config, rules),
                              in_shardings=(param_shardings, opt_shardings, batch_sharding,
                                            None),
                              out_shardings=(param_shardings, opt_shardings, None),
                              donate_argnums=(0, 1) if donate else ())
            start = time.perf_counter()
            lowered = step_fn.lower(self.params, self.opt_state, self.batch, 0)
            self.compiled = lowered.compile()
            self.compile_s = time.perf_counter() - start
        self.step = 0
        self.losses: list[float] = []
        self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))

    def __call__(self) -> float:
        self.params, self.opt_state, step_metrics = self.compiled(
            self.params, self.opt_state, self.batch, jnp.int32(self.step))
        self.step += 1
        loss = float(jax.device_get(step_metrics["loss"]))  # waits for the step
        self.losses.append(loss)
        return loss

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"compile_s": self.compile_s, "num_params": self.num_params,
                               "losses_first_last": [self.losses[0], self.losses[-1]]
                               if self.losses else []}
        try:
            memory = self.compiled.memory_analysis()
            if memory is not None:
                out["xla_memory_bytes"] = {
                    name: int(getattr(memory, name)) for name in (
                        "argument_size_in_bytes", "output_size_in_bytes",
                        "temp_size_in_bytes", "generated_code_size_in_bytes",
                        "alias_size_in_bytes") if hasattr(memory, name)}
        except Exception:  # noqa: BLE001 - not every backend reports it
            pass
        return out

    def close(self) -> None:
        for tree in (self.params, self.opt_state, self.batch):
            for leaf in jax.tree.leaves(tree):
                leaf.delete()
        self.params = self.opt_state = self.batch = None
        self.compiled = None


def flops_convention(config: PanGuConfig, seq_len: int) -> dict[str, Any]:
    return {"training_flops_per_token": metrics.training_flops_per_token(config, seq_len),
            "matmul_params": metrics.matmul_params(config),
            "convention": "6 N_matmul + 6 L T d per token: N_matmul = L(4d^2 + 2 d d_ff) + V d "
                          "(the query layer in L, the tied head once); causal attention "
                          "QK^T and AV counted once (half the square), x3 for fwd+bwd; "
                          "embedding lookups, biases, LayerNorms and remat recomputation not "
                          "counted"}
