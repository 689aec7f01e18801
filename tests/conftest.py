"""Test setup: 8 emulated CPU devices, configured before jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

from codereason_jax.model import PanGuConfig  # noqa: E402

if len(jax.devices()) != 8:  # pragma: no cover - guards against jax imported too early
    raise RuntimeError(f"tests need 8 emulated devices, got {len(jax.devices())}: jax was "
                       "imported before tests/conftest.py set XLA_FLAGS")


@pytest.fixture
def tiny_config() -> PanGuConfig:
    """Small enough to run in milliseconds, big enough to shard 4-way over heads and mlp."""
    return PanGuConfig(vocab_size=256, num_layers=3, d_model=32, num_heads=4, d_ff=128,
                       max_seq_len=32, dropout_rate=0.0)
