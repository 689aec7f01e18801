"""Cloud TPU launch tooling: ``python -m launch.tpu --help`` (see launch/README.md)."""
