"""Tokenize and pack each source of a mixture once into a store of packed rows (ArrayRecord).

Work is split into (task, shard) items: shard s of S is SeqIO's ``ShardInfo(s, S)`` of the
task's split, read in order (unshuffled), packed with the packer training uses
(``mixing.default_packer_factory``), each row encoded tokens-only (``records``), checked to
decode back to the same row, and written to one ArrayRecord file (``group_size:1``: one row per
random read). A shard goes to a temporary file renamed into place, then a small JSON sidecar
with its counts; a rerun keeps every finished shard, so an interrupted preparation resumes.
Once every item is done, ``manifest.json`` is assembled from the sidecars and written last.

The items run in this process, one after the other, or as an Apache Beam pipeline (one item
per work unit, any runner, e.g. Dataflow) with the same function: the two write the same files.
SeqIO shards file-backed sources (TFDS, the ``*_tfds`` corpora) by file, so each Beam worker
reads only its files; other sources are read whole and every S-th example kept.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from etils import epath

from seqio_tasks.row_store import manifest as manifest_lib
from seqio_tasks.row_store import records
from seqio_tasks.row_store.manifest import StoreError, StoreSettings

WRITER_OPTIONS = "group_size:1"
DEFAULT_NUM_SHARDS = 4


@dataclasses.dataclass(frozen=True)
class WorkItem:
    store_dir: str
    task: str
    shard: int
    num_shards: int
    settings: dict  # StoreSettings.as_json()


def settings_for(sequence_length: int, split: str = "train", pack_instructions: bool = False,
                 overlong: str = "drop") -> StoreSettings:
    """The settings of a store for the vocabulary this process's tasks tokenize with."""
    from seqio_tasks import tasks
    from seqio_tasks.default_vocabulary import vocabulary_identity

    return StoreSettings(sequence_length, split, pack_instructions, overlong,
                         vocabulary_identity(tasks.VOCABULARY, tasks.VOCABULARY_SPEC))


def source_tasks(names: Iterable[str], total_steps: int = 1000) -> list[str]:
    """The tasks of each named schedule, mixture or task, once each, in order."""
    from seqio_tasks import mixtures  # noqa: F401 (registers everything)
    from seqio_tasks.registry import resolve_schedule

    found: dict[str, None] = {}
    for name in names:
        for task in resolve_schedule(name, total_steps).tasks:
            found.setdefault(task)
    return list(found)


def _sidecar(item: WorkItem) -> epath.Path:
    name = manifest_lib.shard_name(item.task, item.shard, item.num_shards)
    return epath.Path(item.store_dir) / (name + ".json")


def _file_digest(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def finished_shard(item: WorkItem) -> dict[str, Any] | None:
    """The counts of a shard already written with these settings, else None."""
    sidecar = _sidecar(item)
    if not sidecar.exists():
        return None
    done = json.loads(sidecar.read_text())
    path = epath.Path(item.store_dir) / done["file"]
    if done.get("settings") != item.settings or not path.exists() or (
            path.stat().length != done["bytes"]):
        return None
    return done


def prepare_shard(item: WorkItem, progress: Callable[[int], None] | None = None
                  ) -> dict[str, Any]:
    """Pack shard ``item.shard`` of ``item.task`` into its ArrayRecord file; return its counts
    (also written beside it). Idempotent: a finished shard is not written again."""
    done = finished_shard(item)
    if done is not None:
        return done
    import seqio
    from array_record.python.array_record_module import ArrayRecordWriter

    from seqio_tasks import mixing, mixtures  # noqa: F401 (registers the tasks)

    settings = item.settings
    task = seqio.get_mixture_or_task(item.task)
    vocabulary = task.output_features["targets"].vocabulary
    packer = mixing.default_packer_factory(task, settings["sequence_length"],
                                           settings["pack_instructions"],
                                           settings["overlong"])()
    kind = records.packing_kind(packer)
    dtype = records.token_dtype(vocabulary.vocab_size)
    name = manifest_lib.shard_name(item.task, item.shard, item.num_shards)
    path = epath.Path(item.store_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = epath.Path(f"{path}.tmp-{os.getpid()}")
    examples_digest = hashlib.sha256()
    start = time.perf_counter()
    writer = ArrayRecordWriter(os.fspath(tmp), WRITER_OPTIONS)
    rows = 0

    def write(row) -> None:
        nonlocal rows
        record = records.encode_row(row, kind, dtype)
        back = records.decode_row(record, kind, dtype, settings["sequence_length"],
                                  vocabulary.pad_id, vocabulary.eos_id)
        if not records.rows_equal(back, row):
            raise StoreError(
                f"{item.task}: row {rows} of shard {item.shard} cannot be stored as tokens "
                f"only (its segments are not marked by the end-of-document id "
                f"{vocabulary.eos_id}: does a document hold that id, or lack it at its end?).")
        writer.write(record)
        rows += 1

    try:
        dataset = task.get_dataset(sequence_length=None, split=settings["split"], shuffle=False,
                                   num_epochs=1, trim_output_features=False,
                                   try_in_mem_cache=False,
                                   shard_info=seqio.ShardInfo(item.shard, item.num_shards))
        for example in dataset.as_numpy_iterator():
            parts = [example["inputs"], example["targets"]] if "inputs" in example else [
                example["targets"]]
            for part in parts:
                examples_digest.update(np.asarray(part, np.int64).tobytes() + b"|")
            for row in packer.add(*parts):
                write(row)
            if progress is not None:
                progress(1)
        for row in packer.flush():
            write(row)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(path)
    stats = packer.stats
    done = {"file": name, "rows": rows, "bytes": path.stat().length,
            "sha256": _file_digest(path), "kind": kind, "token_dtype": dtype.name,
            "examples": stats.examples, "dropped_overlong": stats.dropped,
            "truncated_overlong": stats.truncated, "real_tokens": stats.real_tokens,
            "loss_tokens": stats.loss_tokens, "examples_sha256": examples_digest.hexdigest(),
            "seconds": time.perf_counter() - start, "settings": settings}
    sidecar = _sidecar(item)
    tmp_sidecar = epath.Path(f"{sidecar}.tmp-{os.getpid()}")
    tmp_sidecar.write_text(json.dumps(done, indent=1))
    tmp_sidecar.replace(sidecar)
    return done


def _prepare_item(item: WorkItem) -> dict[str, Any]:  # a top-level function: Beam pickles it
    return prepare_shard(item)


def run_in_process(items: Sequence[WorkItem]) -> None:
    from tqdm import tqdm

    with tqdm(total=len(items), unit="shard", desc="row store", leave=False) as bar:
        for item in items:
            bar.set_postfix_str(f"{item.task} {item.shard + 1}/{item.num_shards}")
            prepare_shard(item)
            bar.update(1)


def run_on_beam(items: Sequence[WorkItem], runner: str | None, beam_flags: Sequence[str]
                ) -> None:
    """The same items as one Apache Beam pipeline (apache-beam must be importable)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(flags=list(beam_flags), **({"runner": runner} if runner else {}))
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline | "items" >> beam.Create(list(items)) | beam.Reshuffle()
             | "pack" >> beam.Map(_prepare_item))


def source_entry(items: Sequence[WorkItem]) -> dict[str, Any]:
    """A source's manifest entry, from its finished shards' sidecars."""
    shards = []
    for item in items:
        done = finished_shard(item)
        if done is None:
            raise StoreError(f"shard {item.shard} of {item.task} in {item.store_dir} did not "
                             "finish; run the preparation again (finished shards are kept).")
        shards.append(done)
    task = items[0].task
    total = {k: sum(s[k] for s in shards) for k in ("rows", "bytes", "examples",
                                                     "dropped_overlong", "truncated_overlong",
                                                     "real_tokens", "loss_tokens")}
    if total["rows"] == 0:
        raise StoreError(f"{task} split {items[0].settings['split']!r} gave no rows (no "
                         "examples, or every one dropped as too long for a row).")
    digest = hashlib.sha256("".join(s["examples_sha256"] for s in shards).encode())
    import seqio

    listing = seqio.get_mixture_or_task(task).source.list_shards(items[0].settings["split"])
    return {**total, "kind": shards[0]["kind"], "token_dtype": shards[0]["token_dtype"],
            "num_shards": len(shards), "seconds": sum(s["seconds"] for s in shards),
            "shards": [{k: s[k] for k in ("file", "rows", "bytes", "sha256")} for s in shards],
            "source": {"examples_sha256": digest.hexdigest(),
                       "files": [str(f) for f in listing if str(f) != items[0].settings["split"]]}}


def prepare_store(names: Sequence[str], store_dir: str, settings: StoreSettings,
                  num_shards: int = DEFAULT_NUM_SHARDS, beam_runner: str | None = None,
                  beam_flags: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any]:
    """Prepare (or complete, or reuse) the store of every source of ``names``; the manifest."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards} must be positive.")
    tasks = source_tasks(names)
    root = epath.Path(store_dir)
    existing = None
    if (root / manifest_lib.MANIFEST).exists():
        existing = manifest_lib.read(store_dir)
        problems = manifest_lib.differences(existing["settings"], settings)
        if problems and not overwrite:
            raise manifest_lib.StoreMismatchError(
                f"{store_dir} holds a row store prepared with other settings "
                f"({'; '.join(problems)}); choose another --store_dir, or pass --overwrite.")
        if problems:
            existing = None
    have = set(existing["sources"]) if existing else set()
    todo = [t for t in tasks if t not in have]
    items = [WorkItem(store_dir, task, s, num_shards, settings.as_json())
             for task in todo for s in range(num_shards)]
    if items:
        root.mkdir(parents=True, exist_ok=True)
        if beam_runner or beam_flags:
            run_on_beam(items, beam_runner, beam_flags)
        else:
            run_in_process(items)
    sources = dict(existing["sources"]) if existing else {}
    for task in todo:
        sources[task] = source_entry([i for i in items if i.task == task])
    manifest = {"format": manifest_lib.FORMAT, "version": manifest_lib.VERSION,
                "settings": settings.as_json(), "sources": sources,
                "epochs": "one pass of each source; epoch e reads it in the order of a keyed "
                          "permutation of its rows (seed, task, e)",
                "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds")}
    if items or existing is None:
        manifest_lib.write(store_dir, manifest)
    return manifest
