"""A row store's manifest: what the rows were made from and with, and how to check them.

``STORE/manifest.json`` is written last, once every shard is complete, so its presence marks a
finished store. It records the settings the rows depend on (vocabulary identity, sequence
length, split, packing), each source's rows, examples, dropped/truncated counts and shards
(file, rows, bytes, sha256), and the source data's fingerprint (the SeqIO source's file list
where it has one, and a digest of the tokenized examples read). A run compares its settings with
it and is refused, naming each difference; a shard that is missing or shorter than recorded is
named and never read as fewer rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from etils import epath

from seqio_tasks.sources.files import DataFileError

FORMAT = "codereason_row_store"
VERSION = 1
MANIFEST = "manifest.json"


class StoreError(DataFileError):
    """A row store is missing, unfinished or damaged; the message names the file."""


class StoreMismatchError(StoreError):
    """A run's settings differ from those the store was prepared with."""


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """What the packed rows depend on (the seed does not: the shuffle is applied when read)."""
    sequence_length: int
    split: str
    pack_instructions: bool
    overlong: str
    vocabulary: Mapping[str, Any]  # seqio_tasks.default_vocabulary.vocabulary_identity

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "vocabulary": dict(self.vocabulary)}


def shard_name(task: str, shard: int, num_shards: int) -> str:
    return f"{task}/rows-{shard:05d}-of-{num_shards:05d}.array_record"


def differences(stored: Mapping[str, Any], wanted: StoreSettings) -> list[str]:
    """``field: store X, run Y`` for each setting that differs."""
    found = []
    for name, value in wanted.as_json().items():
        if name == "vocabulary":
            old = stored.get("vocabulary", {})
            for key in ("kind", "size", "sha256"):
                if old.get(key) != value.get(key):
                    found.append(f"vocabulary {key}: store {old.get(key)!r}, run "
                                 f"{value.get(key)!r}")
        elif stored.get(name) != value:
            found.append(f"{name}: store {stored.get(name)!r}, run {value!r}")
    return found


def read(store_dir: str) -> dict[str, Any]:
    """The manifest of a finished store, or a StoreError saying how to make one."""
    path = epath.Path(store_dir) / MANIFEST
    if not path.exists():
        partial = epath.Path(store_dir).exists() and any(epath.Path(store_dir).iterdir())
        raise StoreError(
            f"{path} does not exist: {store_dir} is "
            + ("a row store whose preparation did not finish; run the same prepare command "
               "again to complete it" if partial else "not a prepared row store; prepare one "
               "with python -m codereason_jax.prepare_rows --store_dir=" + store_dir))
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path} is not valid JSON ({err}); prepare the store again.") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise StoreError(f"{path} is not a version-{VERSION} {FORMAT} manifest (format "
                         f"{manifest.get('format')!r}, version {manifest.get('version')!r}).")
    return manifest


def write(store_dir: str, manifest: Mapping[str, Any]) -> None:
    """Write the manifest whole, through a temporary file renamed over it."""
    path = epath.Path(store_dir) / MANIFEST
    tmp = epath.Path(f"{path}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp.replace(path)


def check_settings(manifest: Mapping[str, Any], wanted: StoreSettings, tasks: list[str],
                   store_dir: str) -> None:
    """Refuse a run whose settings or sources the store was not prepared for."""
    problems = differences(manifest.get("settings", {}), wanted)
    missing = [t for t in tasks if t not in manifest.get("sources", {})]
    if missing:
        problems.append(f"sources not in the store: {', '.join(missing)} (it has "
                        f"{', '.join(sorted(manifest.get('sources', {}))) or 'none'})")
    if problems:
        raise StoreMismatchError(
            f"the row store {store_dir} does not match this run: {'; '.join(problems)}. Prepare "
            "a store with the run's settings (python -m codereason_jax.prepare_rows) or point "
            "TrainConfig.row_store_dir at one.")


def check_shards(store_dir: str, task: str, source: Mapping[str, Any]) -> list[str]:
    """The paths of a source's shards, each checked to hold the bytes and rows recorded."""
    from array_record.python import array_record_module

    found = []
    for shard in source["shards"]:
        path = epath.Path(store_dir) / shard["file"]
        if not path.exists():
            raise StoreError(f"{path} is missing: the store's manifest lists it with "
                             f"{shard['rows']} rows of {task}. Restore the file, or prepare "
                             "the store again.")
        size = path.stat().length
        if size != shard["bytes"]:
            raise StoreError(f"{path} has {size} bytes, the manifest records {shard['bytes']}: "
                             "the shard is truncated or was replaced. Restore it, or prepare "
                             "the store again.")
        reader = array_record_module.ArrayRecordReader(os.fspath(path))
        try:
            rows = reader.num_records()
        finally:
            reader.close()
        if rows != shard["rows"]:
            raise StoreError(f"{path} holds {rows} rows, the manifest records {shard['rows']}; "
                             "prepare the store again.")
        found.append(os.fspath(path))
    return found
