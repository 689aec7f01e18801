"""Prepare a real pre-training corpus once as a sharded TFDS dataset (locally or on Beam).

    python -m seqio_tasks.tfds_builders.prepare --dataset=codeparrot \\
        --manual_dir=/data/codeparrot-clean --data_dir=gs://BUCKET/tfds \\
        [--beam_runner=DirectRunner|DataflowRunner --beam_options=KEY=VALUE,KEY=VALUE] \\
        [--num_shards=N] [--file_format=tfrecord|array_record]

    python -m seqio_tasks.tfds_builders.prepare --dataset=text_corpus \\
        --manual_dir=gs://BUCKET/text_corpus --data_dir=gs://BUCKET/tfds \\
        [--config=file|paragraphs] [--text_field=text] [--extensions=.jsonl,.jsonl.gz]

Defaults: --manual_dir is $CODEREASON_DATA_DIR/codeparrot-clean or .../text_corpus (where the
reader-based tasks look), --data_dir is $CODEREASON_TFDS_DIR or
$CODEREASON_DATA_DIR/tensorflow_datasets (where the ``*_tfds`` tasks look). Without a Beam
flag the examples are generated in this process; with one, as an Apache Beam pipeline
(``--beam_options`` are Beam's pipeline flags without the dashes, comma-separated, e.g.
``runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp,setup_file=./setup.py``).
On Dataflow, --manual_dir must be readable by the workers (gs://).

--num_shards: choose a multiple of the number of hosts that will read the data (each host
opens the files i with i mod hosts == its index); by default TFDS aims at 64 MiB-1 GiB files.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow is only the file writer here

import argparse  # noqa: E402
import sys  # noqa: E402
from typing import Sequence  # noqa: E402

DEFAULT_MANUAL_RELPATH = {"codeparrot": "codeparrot-clean", "text_corpus": "text_corpus"}
FILE_FORMATS = ("tfrecord", "array_record")


def parse_beam_options(spec: Sequence[str]) -> list[str]:
    """``["a=1,b=2", "--c=3"]`` -> ``["--a=1", "--b=2", "--c=3"]`` (Beam's flag syntax)."""
    flags = []
    for chunk in spec:
        for item in chunk.split(","):
            item = item.strip()
            if not item:
                continue
            flags.append(item if item.startswith("--") else "--" + item)
    return flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seqio_tasks.tfds_builders.prepare",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--dataset", required=True, choices=sorted(DEFAULT_MANUAL_RELPATH))
    parser.add_argument("--manual_dir", help="the local copy of the corpus (local or gs://)")
    parser.add_argument("--data_dir", help="TFDS data dir to write (local or gs://)")
    parser.add_argument("--config", default="file", choices=("file", "paragraphs"),
                        help="text_corpus: a .txt file is one document, or each paragraph")
    parser.add_argument("--text_field", default="text",
                        help="text_corpus: the JSON-lines field holding the text")
    parser.add_argument("--extensions", default=None,
                        help="text_corpus: comma-separated file kinds to read, skipping others")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="files per split (default: by size, 64 MiB to 1 GiB each)")
    parser.add_argument("--file_format", default="tfrecord", choices=FILE_FORMATS,
                        help="tfrecord: read by the SeqIO *_tfds tasks (tf.data); "
                             "array_record: random access via tfds.data_source only")
    parser.add_argument("--beam_runner", default=None,
                        help="generate with Apache Beam on this runner (DirectRunner, "
                             "DataflowRunner, ...)")
    parser.add_argument("--beam_options", action="append", default=[],
                        help="Beam pipeline flags KEY=VALUE[,KEY=VALUE...] (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="regenerate even if the dataset is already prepared")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from seqio_tasks.sources import corpora
    from seqio_tasks.sources.files import DataFileError, data_root
    from seqio_tasks.tfds_builders import builders

    manual_dir = args.manual_dir or os.path.join(data_root(),
                                                 DEFAULT_MANUAL_RELPATH[args.dataset])
    data_dir = args.data_dir or corpora.default_tfds_data_dir()
    if args.num_shards is not None and args.num_shards < 1:
        print("error: --num_shards must be positive.", file=sys.stderr)
        return 2
    use_beam = args.beam_runner is not None or bool(args.beam_options)
    if use_beam and not builders.beam_is_available():
        print(f"error: {builders.BEAM_MISSING}", file=sys.stderr)
        return 2

    config = None
    try:
        if args.dataset == "text_corpus":
            extensions = None if args.extensions is None else [
                e.strip() for e in args.extensions.split(",") if e.strip()]
            config = builders.text_corpus_config(args.config, args.text_field, extensions)
        # Check the input before anything is created, with the same listing the builder uses.
        _check_manual_dir(args.dataset, manual_dir, builders)
        if args.dataset == "codeparrot":
            n_files = len(builders.codeparrot_input_files(manual_dir))
        else:
            n_files = len(builders.text_input_files(manual_dir, config.extensions))
    except (DataFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import tensorflow_datasets as tfds

    builder = builders.make_builder(args.dataset, data_dir, config=config,
                                    file_format=args.file_format)
    if builder.is_prepared() and not args.overwrite:
        print(f"{builder.name} is already prepared at {builder.data_dir}; pass --overwrite "
              "to regenerate it.")
        _print_summary(builder)
        return 0
    beam_options = None
    if use_beam:
        beam = tfds.core.lazy_imports.apache_beam
        beam_options = beam.options.pipeline_options.PipelineOptions(
            flags=parse_beam_options(args.beam_options))
    download_config = tfds.download.DownloadConfig(
        manual_dir=manual_dir, num_shards=args.num_shards, beam_runner=args.beam_runner,
        beam_options=beam_options,
        download_mode=(tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if args.overwrite
                       else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    config_name = f"/{builder.builder_config.name}" if builder.builder_config else ""
    print(f"Preparing {builder.name}{config_name} from {n_files} files in {manual_dir} into "
          f"{data_dir} as {args.file_format}{' with Beam' if use_beam else ''} ...")
    try:
        builder.download_and_prepare(download_config=download_config)
    except DataFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # TFDS's Beam writer on an empty split
        if "number of generated examples is 0" not in str(err):
            raise
        print(f"error: {err}\nNo document of the input falls in that split (split_by_hash "
              f"sends about {corpora.HASH_VALIDATION_FRACTION:.1%} of the keys to validation):"
              " the input is too small.", file=sys.stderr)
        return 2
    _print_summary(builder)
    return 0


def _check_manual_dir(dataset: str, manual_dir: str, builders) -> None:
    from etils import epath

    from seqio_tasks.sources.files import DataFileError

    builder_cls = builders.BUILDERS[dataset]
    path = epath.Path(manual_dir)
    if not path.exists() or not path.is_dir():
        raise DataFileError(
            f"{dataset}: the manual dir {manual_dir} does not exist (or is not a directory). "
            f"{builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")


def _print_summary(builder) -> None:
    from seqio_tasks import tfds_builders

    config = builder.builder_config.name if builder.builder_config else None
    print(f"Prepared {builder.name}{'/' + config if config else ''} "
          f"{builder.version} at {builder.data_dir}:")
    for name, split in builder.info.splits.items():
        print(f"  {name}: {split.num_examples} examples in {split.num_shards} files, "
              f"{split.num_bytes / 2**20:.1f} MiB")
    dataset = "codeparrot" if builder.name == tfds_builders.CODEPARROT_NAME else "text_corpus"
    task = f"{dataset}_tfds" if config in (None, "file") else None
    print(f"Read it as TFDS {tfds_builders.tfds_name(dataset, config)} with data_dir="
          f"{builder.data_dir_root}" + (
              f"; the SeqIO task {task} reads it with $CODEREASON_TFDS_DIR="
              f"{builder.data_dir_root}." if task else
              " (register a task for it with seqio_tasks.tasks.add_prepared_pretraining_task)."))


if __name__ == "__main__":
    sys.exit(main())
