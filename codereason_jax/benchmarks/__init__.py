"""Pieces of ``python -m codereason_jax.bench``: configs, timing, results, one module per suite.

Each suite module holds its measurements and the suite that runs them (``suite_train`` in
``train``, ``suite_peer`` in ``torch_peer``, ``suite_pipeline`` in ``pipeline``, ``suite_eval`` in
``evaluation``); the CLI imports a suite module only when that suite runs. Every suite module
imports its heavy dependencies (torch, seqio, tensorflow) inside the functions that need them, so
the train suite runs with jax, flax, optax and numpy alone. ``gpu.sh`` is the GPU preset.
"""
