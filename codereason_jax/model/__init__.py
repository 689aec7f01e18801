"""The PanGu-α decoder (with its top query layer) in Flax."""

from codereason_jax.model.config import ConfigError, PanGuConfig
from codereason_jax.model.pangu import PanGuDecoder

__all__ = ["ConfigError", "PanGuConfig", "PanGuDecoder"]
