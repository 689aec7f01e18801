"""Device mesh and logical-axis rules: how named model dimensions map onto devices.

The mesh always has the three axes (data, fsdp, model) with an explicit shape. Rules map each
logical name used by the model (``codereason_jax.model.layers``) to a mesh axis, a tuple of
mesh axes, or None (replicated). Rules are validated: each logical name may appear once, and
only known mesh axes may be named.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import optax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Data, fully-sharded and tensor parallelism. Parameters shard their `embed` dimension over
# fsdp and their wide dimensions (vocab, heads, mlp) over model; activations shard batch over
# data x fsdp and the same wide dimensions over model.
DEFAULT_RULES: Rules = (
    ("vocab", "model"),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("position", None),
    ("layers", None),
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "model"),
    ("activation_heads", "model"),
    ("activation_kv", None),
    ("activation_vocab", "model"),
)


class PartitioningError(ValueError):
    """A mesh shape or a logical-axis rule is invalid."""


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, model) mesh of the given explicit shape over ``devices``.

    Axis types are Auto: shardings are given on inputs and outputs of jitted functions and
    the compiler propagates the rest (pjit semantics). jax.make_mesh's default, Explicit,
    would make sharding part of every array's type.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES) or any(s <= 0 for s in shape):
        raise PartitioningError(
            f"Mesh shape {shape} must have {len(MESH_AXES)} positive sizes for {MESH_AXES}.")
    devices = list(jax.devices() if devices is None else devices)
    if int(np.prod(shape)) != len(devices):
        raise PartitioningError(
            f"Mesh shape {'x'.join(map(str, shape))} (data x fsdp x model) needs "
            f"{int(np.prod(shape))} devices, but {len(devices)} are available; change the mesh "
            "shape so its product equals the device count.")
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, int, int]:
    """Replace the one -1 in (data, fsdp, model) by whatever the other sizes leave over."""
    shape = [int(s) for s in shape]
    if len(shape) != len(MESH_AXES) or shape.count(-1) > 1:
        raise PartitioningError(f"Mesh shape {tuple(shape)} must be {len(MESH_AXES)} sizes "
                                "(data, fsdp, model), at most one of them -1.")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known <= 0 or num_devices % known:
            raise PartitioningError(f"Mesh shape {tuple(shape)} does not divide the "
                                    f"{num_devices} devices.")
        shape[shape.index(-1)] = num_devices // known
    return tuple(shape)


def validate_rules(rules: Rules) -> Rules:
    """Reject a logical name mapped twice and mesh axes that do not exist."""
    seen: set[str] = set()
    for logical, mesh_axes in rules:
        if logical in seen:
            raise PartitioningError(
                f"Logical axis {logical!r} is mapped more than once in the rules; keep one "
                "mapping per name.")
        seen.add(logical)
        names = () if mesh_axes is None else (
            (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes))
        unknown = [n for n in names if n not in MESH_AXES]
        if unknown:
            raise PartitioningError(
                f"Rule for {logical!r} names mesh axes {unknown} that are not in {MESH_AXES}.")
    return tuple(rules)


def check_tensor_axes(boxed_params: Any, rules: Rules) -> None:
    """Every logical axis of every parameter has a rule, and no tensor uses a mesh axis twice
    (which Flax would silently resolve by replicating one of the dimensions)."""
    mapping = dict(validate_rules(rules))
    flat = jax.tree_util.tree_flatten_with_path(
        boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    for path, box in flat:
        if not isinstance(box, nn.LogicallyPartitioned):
            continue
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        claimed: dict[str, str] = {}
        for logical in box.names:
            if logical is None:
                continue
            if logical not in mapping:
                raise PartitioningError(
                    f"Parameter {name} has logical axis {logical!r}, which no rule maps; add "
                    f"a rule ({logical!r}, None) to replicate it or name a mesh axis.")
            target = mapping[logical]
            for axis in () if target is None else (
                    (target,) if isinstance(target, str) else target):
                if axis in claimed:
                    raise PartitioningError(
                        f"Parameter {name}: logical axes {claimed[axis]!r} and {logical!r} both "
                        f"map to mesh axis {axis!r}; change one of the two rules.")
                claimed[axis] = logical


def logical_shardings(logical_specs: Any, mesh: Mesh, rules: Rules) -> Any:
    """Map a pytree of logical PartitionSpecs to NamedShardings on ``mesh``."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, validate_rules(rules))


def param_shardings(boxed_params: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for params created with logical partitioning (boxed or abstract)."""
    return logical_shardings(nn.get_partition_spec(boxed_params), mesh, rules)


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, length, ...] input: batch split like activation_batch."""
    spec = ("activation_batch",) + ("activation_length",) + (None,) * (ndim - 2)
    return logical_shardings(PartitionSpec(*spec[:ndim]), mesh, rules)


def optimizer_state_shardings(optimizer: Any, opt_state: Any, param_shardings: Any, mesh: Mesh
                              ) -> Any:
    """Shard each params-shaped part of an optimizer state (moments) like the params and
    replicate the rest (counters, scalars). Which parts are params-shaped is not guessed from
    the tree: ``optax.tree_map_params`` asks the optimizer's own ``init``."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(optimizer, lambda _, sharding: sharding, opt_state,
                                 param_shardings, transform_non_params=lambda _: replicated)


class AbstractTrainState(NamedTuple):
    """Shapes and shardings of a model's parameters and optimizer state; nothing allocated."""
    boxed: Any  # params with their logical axes (nn.LogicallyPartitioned)
    params: Any
    param_shardings: Any
    opt_state: Any
    opt_shardings: Any


def abstract_train_state(model: Any, optimizer: Any, example: Any, mesh: Mesh, rules: Rules,
                         seed: int = 0) -> AbstractTrainState:
    """The abstract parameters and optimizer state of ``model`` for ``example`` inputs, with
    their shardings on ``mesh`` (the rules are checked against every parameter first)."""
    boxed = jax.eval_shape(lambda x: model.init(jax.random.key(seed), x), example)["params"]
    check_tensor_axes(boxed, rules)
    param_shardings_ = param_shardings(boxed, mesh, rules)
    params = nn.meta.unbox(boxed)
    opt_state = jax.eval_shape(optimizer.init, params)
    return AbstractTrainState(boxed, params, param_shardings_, opt_state,
                              optimizer_state_shardings(optimizer, opt_state, param_shardings_,
                                                        mesh))


def sharding_table(boxed_params: Any, mesh_shape: Sequence[int], rules: Rules = DEFAULT_RULES
                   ) -> dict[str, dict[str, Any]]:
    """{param name: {"spec": mesh axes per dim, "shard_shape": per-device shape}} for a mesh of
    the given shape, computed from the rules alone (no devices needed): the golden files that
    catch accidental sharding changes are made of this."""
    check_tensor_axes(boxed_params, rules)
    sizes = dict(zip(MESH_AXES, (int(s) for s in mesh_shape)))
    table = {}
    flat = jax.tree_util.tree_flatten_with_path(
        boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    for path, box in flat:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        spec = nn.logical_to_mesh_axes(tuple(box.names), validate_rules(rules))
        dims = []
        for size, axes in zip(box.value.shape, tuple(spec) + (None,) * len(box.value.shape)):
            names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
            divisor = math.prod(sizes[a] for a in names)
            if size % divisor:
                raise PartitioningError(f"{name}: dimension of size {size} is not divisible by "
                                        f"mesh axes {names} of sizes {divisor}.")
            dims.append(size // divisor)
        table[name] = {"spec": [list(a) if isinstance(a, tuple) else a for a in spec],
                       "shard_shape": dims}
    return table
