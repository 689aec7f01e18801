"""Sharded forward passes over explicit 8-device meshes equal the single-device result."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from codereason_jax import partitioning
from codereason_jax.model import PanGuDecoder
from codereason_jax.model.packing import segments_from_eod
from test_model import EOD, random_tokens, trained_scale


def sharded_logits(config, mesh_shape, tokens, positions, segment_ids, seed=0):
    """Init directly into shardings on the mesh, run a jitted forward, return logits+params."""
    model = PanGuDecoder(config)
    mesh = partitioning.make_mesh(mesh_shape)
    rules = partitioning.DEFAULT_RULES
    abstract = jax.eval_shape(lambda t: model.init(jax.random.key(seed), t), tokens)
    shardings = partitioning.param_shardings(abstract["params"], mesh, rules)
    batch = partitioning.batch_sharding(mesh, rules)

    @jax.jit
    def init_fn(key, t):
        params = nn.meta.unbox(model.init(key, t)["params"])
        return jax.lax.with_sharding_constraint(params, shardings)

    def forward(params, t, pos, seg):
        with nn.logical_axis_rules(rules):
            return model.apply({"params": params}, t, positions=pos, segment_ids=seg)

    logits_sharding = partitioning.logical_shardings(
        P("activation_batch", "activation_length", "activation_vocab"), mesh, rules)
    with jax.set_mesh(mesh):
        params = trained_scale(init_fn(jax.random.key(seed), tokens))
        params = jax.device_put(params, shardings)
        inputs = [jax.device_put(x, batch) for x in (tokens, positions, segment_ids)]
        logits = jax.jit(forward, in_shardings=(shardings, batch, batch, batch),
                         out_shardings=logits_sharding)(params, *inputs)
    return logits, params


@pytest.mark.parametrize("mesh_shape", [(2, 1, 4), (1, 8, 1), (2, 2, 2)],
                         ids=["data2xmodel4", "fsdp8", "2x2x2"])
def test_sharded_forward_equals_unsharded(tiny_config, mesh_shape):
    cfg = dataclasses.replace(tiny_config, d_model=64, d_ff=256, num_heads=4, vocab_size=512)
    tokens = random_tokens(cfg, (8, 16)).at[:, 9].set(EOD)
    segment_ids, positions = segments_from_eod(tokens, EOD)

    model = PanGuDecoder(cfg)
    ref_init = jax.jit(lambda key, t: nn.meta.unbox(model.init(key, t)["params"]))
    ref_params = trained_scale(ref_init(jax.random.key(0), tokens))
    want = np.asarray(jax.jit(model.apply)({"params": ref_params}, tokens, positions,
                                           segment_ids))

    logits, params = sharded_logits(cfg, mesh_shape, tokens, positions, segment_ids)
    # Initialising under shardings gives bitwise the values of a jitted single-device init.
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), ref_params)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=1e-5)

    data, fsdp, model_axis = mesh_shape
    mlp_kernel = params["block_0"]["mlp"]["wi"]["kernel"]  # (embed, mlp)
    assert mlp_kernel.addressable_shards[0].data.shape == (64 // fsdp, 256 // model_axis)
    word = params["word_embeddings"]  # (vocab, embed)
    assert word.addressable_shards[0].data.shape == (512 // model_axis, 64 // fsdp)
    assert logits.addressable_shards[0].data.shape == (8 // (data * fsdp), 16, 512 // model_axis)


def test_mesh_is_auto_and_checks_device_count():
    mesh = partitioning.make_mesh((2, 1, 4))
    assert mesh.axis_names == partitioning.MESH_AXES
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "model": 4}
    assert all(t == AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(partitioning.PartitioningError, match="needs 6 devices, but 8"):
        partitioning.make_mesh((2, 3, 1))
    with pytest.raises(partitioning.PartitioningError, match="3 positive sizes"):
        partitioning.make_mesh((8, 1))


def test_rules_are_validated():
    dup = partitioning.DEFAULT_RULES + (("mlp", "fsdp"),)
    with pytest.raises(partitioning.PartitioningError, match="'mlp' is mapped more than once"):
        partitioning.validate_rules(dup)
    with pytest.raises(partitioning.PartitioningError, match=r"names mesh axes \['tensor'\] that are not in"):
        partitioning.validate_rules((("mlp", "tensor"),))
    mesh = partitioning.make_mesh((1, 8, 1))
    spec = partitioning.logical_shardings(P("embed", "mlp"), mesh, partitioning.DEFAULT_RULES)
    assert spec.spec == P("fsdp", "model")


def test_param_shardings_cover_every_parameter(tiny_config):
    model = PanGuDecoder(tiny_config)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                 jnp.zeros((1, 8), jnp.int32)))["params"]
    mesh = partitioning.make_mesh((2, 1, 4))
    shardings = partitioning.param_shardings(abstract, mesh, partitioning.DEFAULT_RULES)
    leaves = jax.tree.leaves(shardings)
    assert len(leaves) == len(jax.tree.leaves(nn.meta.unbox(abstract)))
    assert shardings["block_0"]["attention"]["query"]["kernel"].spec == P("fsdp", "model", None)


def test_activation_constraints_reach_the_program(tiny_config):
    """Under the rules, activations carry their logical shardings into the lowered program."""
    model = PanGuDecoder(tiny_config)
    mesh, rules = partitioning.make_mesh((2, 1, 4)), partitioning.DEFAULT_RULES
    tokens = jnp.zeros((8, 16), jnp.int32)
    abstract = jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)["params"]

    def forward(params, t):
        with nn.logical_axis_rules(rules):
            return model.apply({"params": params}, t)

    with jax.set_mesh(mesh):
        text = jax.jit(forward).lower(nn.meta.unbox(abstract), tokens).as_text()
    heads = '[{"data", "fsdp"}, {}, {"model"}, {}]'
    constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
    # q, k, v and the attention output in each of the 3 attention layers.
    assert sum(heads in line for line in constraints) == 4 * tiny_config.num_layers


@pytest.mark.parametrize("name", ["paper_adamw", "optax_adamw"])
def test_optimizer_state_is_sharded_like_the_params_it_mirrors(tiny_config, name):
    from codereason_jax.optim import OptimizerConfig

    optimizer, _ = OptimizerConfig(name=name, warmup_steps=1).build(10)
    mesh = partitioning.make_mesh((2, 2, 2))
    model = PanGuDecoder(tiny_config)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 8), jnp.int32))
                           )["params"]
    param_shardings = partitioning.param_shardings(boxed, mesh, partitioning.DEFAULT_RULES)
    params = nn.meta.unbox(boxed)
    opt_state = jax.eval_shape(optimizer.init, params)
    shardings = partitioning.optimizer_state_shardings(optimizer, opt_state, param_shardings,
                                                       mesh)

    def names(path):
        return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))

    by_param = {names(path): s for path, s in
                jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
    mirrored = replicated = 0
    for (path, sharding), leaf in zip(jax.tree_util.tree_flatten_with_path(shardings)[0],
                                      jax.tree.leaves(opt_state)):
        if names(path) in by_param:  # a moment of that parameter
            assert sharding == by_param[names(path)], path
            mirrored += 1
        else:  # step counters and other scalars
            assert leaf.ndim == 0 and sharding.spec == jax.sharding.PartitionSpec(), path
            replicated += 1
    assert mirrored == 2 * len(by_param) and replicated >= 1  # mu and nu of every parameter
