"""The SeqIO source of the ``*_tfds`` tasks: a prepared TFDS dataset, local or on ``gs://``.

``PreparedTfdsSource`` is a ``seqio.TfdsDataSource`` that

* resolves its TFDS data dir when first read, not when the task is registered, so
  ``TrainConfig.data_dir`` / ``$CODEREASON_DATA_DIR`` / ``$CODEREASON_TFDS_DIR`` set at run time
  apply (``seqio.set_tfds_data_dir_override`` still wins, as for every TFDS source);
* never prepares anything (``read_only``): a dataset missing there fails with the command
  that prepares it;
* reads by file: with ``shard_info`` (``seqio.ShardInfo(index, num_shards)``) each host opens
  only its own files (file i goes to host i mod num_shards) when the split has at least
  ``num_shards`` files, otherwise SeqIO shards the examples.
"""

from __future__ import annotations

from typing import Callable, Sequence

import seqio
from etils import epath

from seqio_tasks.sources import corpora
from seqio_tasks.sources.files import DataFileError

PREPARE = "python -m seqio_tasks.tfds_builders.prepare"


class PreparedTfdsSource(seqio.TfdsDataSource):
    """``seqio.TfdsDataSource`` over ``tfds_name`` (``name[/config]:version``) in a data dir
    given by ``data_dir`` (default: ``corpora.default_tfds_data_dir()`` at read time)."""

    def __init__(self, tfds_name: str, splits: Sequence[str], *, prepare_hint: str = "",
                 data_dir: str | Callable[[], str] | None = None):
        self._name = tfds_name
        self._split_names = tuple(splits)
        self._data_dir = data_dir
        self._prepare_hint = prepare_hint
        self._loader_dir: str | None = None
        self._checked: set[str] = set()
        super().__init__(tfds_name=tfds_name, splits=self._split_names, read_only=True)

    def _configured_dir(self) -> str:
        if callable(self._data_dir):
            return self._data_dir()
        return self._data_dir or corpora.default_tfds_data_dir()

    @property
    def tfds_dataset(self) -> seqio.utils.LazyTfdsLoader:
        data_dir = self._configured_dir()
        if data_dir != self._loader_dir:
            self._tfds_dataset = seqio.utils.LazyTfdsLoader(
                self._name, data_dir=data_dir, split_map={s: s for s in self._split_names},
                read_only=True)
            self._loader_dir = data_dir
        return self._tfds_dataset

    @property
    def dataset_dir(self) -> str:
        """Where the prepared files are (``DATA_DIR/name[/config]/version``)."""
        return str(epath.Path(self.tfds_dataset.data_dir) / self._name.replace(":", "/"))

    def check_prepared(self) -> None:
        """Raise a ``DataFileError`` with the preparing command unless the data is there and
        readable through tf.data."""
        data_dir = self.tfds_dataset.data_dir
        if data_dir in self._checked:
            return
        dataset_dir = epath.Path(self.dataset_dir)
        if not (dataset_dir / "dataset_info.json").exists():
            raise DataFileError(
                f"TFDS {self._name}: not prepared under {data_dir} (no {dataset_dir}/"
                f"dataset_info.json). Prepare it once with `{PREPARE} {self._prepare_hint}"
                f"--data_dir={data_dir}`, or point $CODEREASON_TFDS_DIR (or TrainConfig.data_dir"
                ", whose tensorflow_datasets/ is used) at the directory that holds it.")
        file_format = self.tfds_dataset.info.file_format
        if file_format is not None and file_format.value != "tfrecord":
            raise DataFileError(
                f"TFDS {self._name} under {data_dir} is stored as {file_format.value}, which "
                "TFDS reads only by random access (tfds.data_source), not through tf.data as "
                f"SeqIO does. Prepare a tfrecord copy (`{PREPARE} ... --file_format=tfrecord`).")
        self._checked.add(data_dir)

    def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
        self.check_prepared()
        return super().get_dataset(split, shuffle, seed, shard_info, **kwargs)

    def list_shards(self, split: str) -> Sequence[str]:
        self.check_prepared()
        return super().list_shards(split)

    def num_input_examples(self, split: str) -> int | None:
        self.check_prepared()
        return super().num_input_examples(split)
