"""Evaluation: scoring, generation, sandboxed execution, metrics."""
