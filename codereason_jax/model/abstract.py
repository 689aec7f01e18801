"""Parameter shapes, dtypes and logical axes of a model without allocating any weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from codereason_jax.model.config import PanGuConfig
from codereason_jax.model.pangu import PanGuDecoder


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    logical_axes: tuple[str | None, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def abstract_params(config: PanGuConfig, length: int = 1) -> Any:
    """The boxed (logically partitioned) param tree as ShapeDtypeStructs, via jax.eval_shape."""
    model = PanGuDecoder(config)
    tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)
    variables = jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)
    return variables["params"]


def param_table(config: PanGuConfig) -> list[ParamInfo]:
    """One row per parameter, in tree order, with '/'-joined names."""
    rows = []
    boxed = abstract_params(config)
    flat = jax.tree_util.tree_flatten_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    for path, leaf in flat:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        value = leaf.value if isinstance(leaf, nn.LogicallyPartitioned) else leaf
        axes = tuple(leaf.names) if isinstance(leaf, nn.LogicallyPartitioned) else (
            (None,) * len(value.shape))
        rows.append(ParamInfo(name, tuple(value.shape), str(value.dtype), axes))
    return rows
