"""Evaluation: settings, per-task results, data checks, scoring, generation, sandboxed execution,
metrics (eval_metrics/)."""
