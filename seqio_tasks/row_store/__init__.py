"""Packed rows prepared once, read by index: the pod-scale input pipeline.

* ``prepare``: tokenize and pack each source of a mixture once into ArrayRecord shards (in this
  process or on Apache Beam); the command line is ``python -m codereason_jax.prepare_rows``.
* ``records``: a row as tokens only (uint16 for vocabularies up to 65,536 ids) and back.
* ``manifest``: what a store was made from and with; refusal of runs that do not match it, and
  of missing or truncated shards.
* ``permutation``: the keyed per-epoch shuffle, evaluated per index.
* ``reader``: batches as a pure function of (step, host); each host reads only its rows.
"""
