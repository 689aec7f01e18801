"""codereason_jax: at which training stage does code data help an LLM reason?"""

__version__ = "0.1.0"
