"""The run-directory path layer: local paths as before, URLs untouched (no network: TF's
in-memory ram:// file system stands in for an object store, and gs:// is only named)."""

import builtins
import errno
import json
import os
import uuid

import pytest

from codereason_jax import paths
from codereason_jax.cli import RunWriteError


def _ram(name: str) -> str:
    """A fresh ram:// directory (the in-memory file system lives as long as the process)."""
    return f"ram://test_paths/{uuid.uuid4().hex}/{name}"


def test_local_paths_resolve_and_join_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not paths.is_url("runs/x") and not paths.is_url("/abs/runs/x")
    assert paths.resolve("runs/x") == os.path.abspath("runs/x") == str(tmp_path / "runs" / "x")
    assert paths.join("runs/x", "checkpoints") == os.path.join("runs/x", "checkpoints")
    assert paths.dirname("/a/b/c.json") == "/a/b"


def test_urls_are_never_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url in ("gs://bucket/runs/x", "gs://bucket/runs/x/", "s3://b/r", "ram://r"):
        assert paths.is_url(url)
    assert paths.resolve("gs://bucket/runs/x/") == "gs://bucket/runs/x"
    assert paths.resolve("gs://") == "gs://"
    assert paths.join("gs://bucket/runs/x", "checkpoints") == "gs://bucket/runs/x/checkpoints"
    assert paths.join("gs://bucket/runs/x/", "checkpoints", "4") == \
        "gs://bucket/runs/x/checkpoints/4"
    assert paths.dirname("gs://bucket/runs/x/checkpoints/") == "gs://bucket/runs/x"
    # gs:// goes through etils.epath (Orbax's own layer), ram:// through tf.io.gfile.
    from etils import epath

    gs = paths._url_path("gs://bucket/runs/x")
    assert isinstance(gs, epath.Path) and os.fspath(gs) == "gs://bucket/runs/x"
    assert isinstance(paths._url_path("ram://r"), paths._GfilePath)
    assert os.listdir(tmp_path) == []


def test_file_operations_on_a_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _ram("run")
    assert not paths.exists(run)
    paths.makedirs(paths.join(run, "sub"))
    paths.makedirs(paths.join(run, "sub"))  # exist_ok
    assert paths.isdir(run) and paths.isdir(paths.join(run, "sub"))
    config = paths.join(run, "config.gin")
    paths.write_text(config, "a = 1\n")
    paths.write_text(config, "a = 2\n")  # replaces
    assert paths.read_text(config) == "a = 2\n" and paths.read_bytes(config) == b"a = 2\n"
    assert paths.exists(config) and not paths.isdir(config)
    assert paths.listdir(run) == ["config.gin", "sub"]
    paths.remove(config)
    assert not paths.exists(config)
    assert os.listdir(tmp_path) == []  # nothing local: no ./ram: folder


def test_move_on_a_url_copies_every_file_then_removes_the_source():
    """An object store has no directory rename: a checkpoint moved aside is copied file by
    file, then the source is deleted."""
    root = _ram("run")
    source = paths.join(root, "checkpoints", "6")
    paths.makedirs(paths.join(source, "params"))
    paths.write_text(paths.join(source, "params", "shard"), "weights")
    paths.write_text(paths.join(source, "meta"), "{}")
    target = paths.join(root, "checkpoints_corrupt", "6")
    paths.makedirs(paths.dirname(target))
    paths.move(source, target)
    for gone in (source, paths.join(source, "params", "shard"), paths.join(source, "meta")):
        assert not paths.exists(gone), gone
    assert paths.listdir(target) == ["meta", "params"]
    assert paths.read_text(paths.join(target, "params", "shard")) == "weights"
    assert paths.read_text(paths.join(target, "meta")) == "{}"
    paths.move(paths.join(target, "meta"), paths.join(root, "meta"))  # a single file
    assert paths.read_text(paths.join(root, "meta")) == "{}"
    assert paths.listdir(target) == ["params"]


def test_local_write_text_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "config.gin")
    paths.write_text(path, "x")
    paths.write_text(path, "y")
    assert open(path).read() == "y" and os.listdir(tmp_path) == ["config.gin"]

    class FullDisk:
        """A file whose write stores half the text, then fails as a full disk does."""

        def __init__(self, file, mode="r", **kwargs):
            self.file = builtins.open(file, mode, **kwargs)

        def write(self, text):
            self.file.write(text[:len(text) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.file.close()

    monkeypatch.setattr(paths, "open", FullDisk, raising=False)  # the module's `open`
    with pytest.raises(RunWriteError, match="could not write .*No space left on device"):
        paths.write_text(path, "a new config\n")
    # The old file is whole and no half-written copy is left beside it.
    assert builtins.open(path).read() == "y" and os.listdir(tmp_path) == ["config.gin"]


def _steps(text: str) -> list[int]:
    return [json.loads(line)["step"] for line in text.splitlines()]


def test_step_log_on_a_local_path_appends_each_record_and_drops_on_resume(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    log = paths.StepLog(path, 0)
    for step in range(7):
        log.append({"step": step, "loss": 1.0})
        assert _steps(open(path).read()) == list(range(step + 1))  # on disk at once
    log = paths.StepLog(path, 4)  # resumed from the checkpoint of step 4
    assert _steps(open(path).read()) == [0, 1, 2, 3]
    for step in range(4, 9):
        log.append({"step": step, "loss": 2.0})
    log.flush()  # nothing pending locally
    assert _steps(open(path).read()) == list(range(9))
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]


def test_step_log_on_a_url_buffers_until_flush_and_survives_a_kill():
    path = paths.join(_ram("run"), "metrics.jsonl")
    log = paths.StepLog(path, 0, flush_every_s=1e9)
    for step in range(4):
        log.append({"step": step})
    assert not paths.exists(path)  # buffered: an object store cannot append
    log.flush()  # before the checkpoint of step 4
    for step in range(4, 7):
        log.append({"step": step})
    # Killed here: steps 4..6 were never written; the run resumes from step 4 and redoes them.
    assert _steps(paths.read_text(path)) == [0, 1, 2, 3]
    log = paths.StepLog(path, 4, flush_every_s=1e9)
    for step in range(4, 9):
        log.append({"step": step})
    log.flush()
    assert _steps(paths.read_text(path)) == list(range(9))
    # Resuming from an earlier checkpoint forgets the later records at once.
    paths.StepLog(path, 2)
    assert _steps(paths.read_text(path)) == [0, 1]


def test_step_log_on_a_url_flushes_every_so_often():
    now = [0.0]
    path = paths.join(_ram("run"), "metrics.jsonl")
    log = paths.StepLog(path, 0, flush_every_s=60.0, clock=lambda: now[0])
    log.append({"step": 0})
    assert not paths.exists(path)
    now[0] = 61.0
    log.append({"step": 1})
    assert _steps(paths.read_text(path)) == [0, 1]
    log.append({"step": 2})
    assert _steps(paths.read_text(path)) == [0, 1]


class _FakeManager:
    """Stands in for ocp.CheckpointManager: records the directory, touches nothing."""
    directories: list = []

    def __init__(self, directory, options=None, item_names=None, **kwargs):
        _FakeManager.directories.append(directory)
        self.steps = [4]

    def all_steps(self):
        return self.steps

    def close(self):
        pass

    def wait_until_finished(self):
        pass

    def restore(self, step, args=None):
        raise AssertionError("not reached")


def test_a_gs_run_dir_maps_to_gs_checkpoints_without_local_folders(tmp_path, monkeypatch):
    from codereason_jax import checkpoints

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoints.ocp, "CheckpointManager", _FakeManager)
    monkeypatch.setattr(_FakeManager, "directories", [])
    # No network: a bucket whose step 4 has params but no optimizer state.
    existing = {"gs://bucket/runs/x/checkpoints", "gs://bucket/runs/x/checkpoints/4/params"}
    monkeypatch.setattr(checkpoints.paths, "isdir", lambda p: p in existing)

    run = checkpoints.RunCheckpoints("gs://bucket/runs/x/", checkpoints.CheckpointConfig())
    assert run.directory == "gs://bucket/runs/x/checkpoints"
    with pytest.raises(checkpoints.CheckpointError, match="'gs://bucket/runs/x'"):
        run.restore_latest(None, None)  # the weights-only guard looked in the bucket
    with pytest.raises(checkpoints.CheckpointError, match="no checkpoint at step 7"):
        checkpoints.restore_params("gs://bucket/runs/x", None, step=7)  # init_from
    assert _FakeManager.directories == ["gs://bucket/runs/x/checkpoints"] * 2
    assert os.listdir(tmp_path) == []
