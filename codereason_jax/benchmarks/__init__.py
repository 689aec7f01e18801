"""Pieces of ``python -m codereason_jax.bench``: configs, timing, and one module per suite.

Only ``configs`` and ``timing`` are imported eagerly by the CLI; every suite module imports its
heavy dependencies (torch, seqio, tensorflow) inside the functions that need them, so the train
suite runs with jax, flax, optax and numpy alone.
"""
