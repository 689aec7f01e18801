"""Batches of a schedule read from a row store: a pure function of (step, host).

Row k that source j gives the run is row ``permute(k mod N_j, N_j, key(seed, j, k div N_j))`` of
its store (N_j rows: one pass over the source), so each epoch reads every stored row once, in
its own order, and any row of any step is found without reading what came before. The global
rows of step s come from ``mixing.MixturePlan`` exactly as on the streaming path (same sources,
same shares per period); host h of H computes the rows of its slice [h·B/H, (h+1)·B/H) and
reads those records only. Resuming at step s costs what starting costs.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from seqio_tasks import packing
from seqio_tasks.mixing import MixturePlan, host_rows
from seqio_tasks.row_store import manifest as manifest_lib
from seqio_tasks.row_store import records
from seqio_tasks.row_store.manifest import StoreSettings
from seqio_tasks.row_store.permutation import permutation_key, permute


class SourceRows:
    """Random access to the stored rows of one source, by the run's row index."""

    def __init__(self, store_dir: str, task: str, entry: Mapping[str, Any], length: int,
                 pad_id: int, eos_id: int, seed: int):
        from array_record.python.array_record_data_source import ArrayRecordDataSource

        self.task = task
        self.entry = entry
        self.rows = int(entry["rows"])
        self.kind = entry["kind"]
        self.dtype = np.dtype(entry["token_dtype"]).newbyteorder("<")
        self.length, self.pad_id, self.eos_id, self.seed = length, pad_id, eos_id, seed
        files = manifest_lib.check_shards(store_dir, task, entry)
        self._data = ArrayRecordDataSource([_Shard(f, s["rows"])
                                            for f, s in zip(files, entry["shards"])])
        self.records_read = 0

    def store_indices(self, run_rows: np.ndarray) -> np.ndarray:
        """Where the run's rows ``run_rows`` of this source are stored."""
        run_rows = np.asarray(run_rows, np.int64)
        epochs, within = np.divmod(run_rows, self.rows)
        out = np.empty_like(run_rows)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            key = permutation_key(self.seed, self.task, "rows", int(epoch))
            out[sel] = permute(within[sel], self.rows, key)
        return out

    def read(self, run_rows: np.ndarray) -> list[packing.Row]:
        indices = self.store_indices(run_rows)
        blobs = self._data.__getitems__([int(i) for i in indices])
        self.records_read += len(blobs)
        return [records.decode_row(b, self.kind, self.dtype, self.length, self.pad_id,
                                   self.eos_id) for b in blobs]

    def counts_through(self, rows_consumed: int) -> dict[str, int]:
        """Examples read, dropped and truncated for the passes begun by ``rows_consumed`` rows
        (the store's one-pass counts once per pass: rows are read a pass at a time)."""
        passes = -(-rows_consumed // self.rows)
        return {"examples": passes * self.entry["examples"],
                "dropped_overlong": passes * self.entry["dropped_overlong"],
                "truncated_overlong": passes * self.entry["truncated_overlong"]}


class _Shard:
    """A file and its row count, as ArrayRecordDataSource's file instruction (it then opens
    no file before the first read)."""

    def __init__(self, filename: str, rows: int):
        self.filename, self.skip, self.take, self.examples_in_shard = filename, 0, rows, rows


class StoreMixtureIterator:
    """Host-local batches of a schedule from a row store, starting at any step."""

    def __init__(self, plan: MixturePlan, sources: Mapping[str, SourceRows],
                 start_step: int = 0, host_index: int = 0, host_count: int = 1):
        self.plan = plan
        self.sources = [sources[name] for name in plan.sources]
        self.step = start_step
        self.host_slice = host_rows(plan.batch_size, host_index, host_count)

    def __iter__(self):
        return self

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The host's rows of global batch ``step`` (reads nothing else)."""
        sources, indices = self.plan.rows(step)
        sources, indices = sources[self.host_slice], indices[self.host_slice]
        rows: list[packing.Row | None] = [None] * sources.size
        for j in np.unique(sources):
            where = np.flatnonzero(sources == j)
            for i, row in zip(where, self.sources[j].read(indices[where])):
                rows[i] = row
        batch = {k: np.stack([row[k] for row in rows]) for k in packing.ROW_FIELDS}
        batch["source_ids"] = sources.astype(np.int32)
        return batch

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.batch(self.step)
        self.step += 1
        return batch

    def row_stats(self, step: int) -> dict[str, dict[str, int]]:
        """What each source's packing read, dropped and truncated, for the passes over it that
        the batches up to ``step`` have begun."""
        consumed = self.plan.consumed_before(step + 1)
        return {source.task: source.counts_through(int(n))
                for source, n in zip(self.sources, consumed)}


def open_store(store_dir: str, plan: MixturePlan, settings: StoreSettings, seed: int,
               pad_id: int, eos_id: int) -> dict[str, SourceRows]:
    """Each source of ``plan`` in the store, after checking the store was prepared for this
    run's settings and that every shard is whole."""
    manifest = manifest_lib.read(store_dir)
    manifest_lib.check_settings(manifest, settings, list(plan.sources), store_dir)
    return {task: SourceRows(store_dir, task, manifest["sources"][task],
                             settings.sequence_length, pad_id, eos_id, seed)
            for task in plan.sources}


def store_iterator(name: str, store_dir: str, *, sequence_length: int, batch_size: int,
                   seed: int = 0, split: str = "train", start_step: int = 0,
                   total_steps: int | None = None, host_index: int = 0, host_count: int = 1,
                   pack_instructions: bool = False, overlong: str = "drop"
                   ) -> StoreMixtureIterator:
    """Like ``mixing.mixture_iterator``, from the row store in ``store_dir``."""
    from seqio_tasks import mixtures, tasks  # noqa: F401 (registers every task and mixture)
    from seqio_tasks.registry import resolve_schedule
    from seqio_tasks.row_store.prepare import settings_for

    plan = MixturePlan(resolve_schedule(name, total_steps or 1000), batch_size)
    settings = settings_for(sequence_length, split, pack_instructions, overlong)
    vocabulary = tasks.VOCABULARY
    sources = open_store(store_dir, plan, settings, seed, vocabulary.pad_id, vocabulary.eos_id)
    return StoreMixtureIterator(plan, sources, start_step, host_index, host_count)
