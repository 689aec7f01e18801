"""Train our default SentencePiece vocabulary from SeqIO tasks, a mixture, or a directory of files.

    python -m codereason_jax.train_vocab --output=vocab/code_32k.model --vocab_size=32000 \\
        --mixture=pretrain_code --max_characters=50000000
    python -m codereason_jax.train_vocab --output=/tmp/v.model --vocab_size=2000 --text_dir=src/

Raw text comes from each task's source (``source.get_dataset(split="train", shuffle=False)``,
field --text_field), before any preprocessing. A mixture contributes characters from each task in
proportion to its mixing rate, --max_characters in total; several --task flags share the budget
equally. Every --heldout_every-th document is kept out of training; after writing PATH.model and
PATH.vocab, the vocabulary must reproduce those documents exactly (python and TF paths), and the
characters-per-token ratio on them is printed. Usage errors exit with code 2.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (under SeqIO) is only the reader

import argparse
import dataclasses
import importlib
import sys
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from codereason_jax import cli

TASKS_MODULE = "seqio_tasks.mixtures"  # registers the tasks and the mixtures
TEXT_SUFFIXES = (".txt", ".py")


class UsageError(ValueError):
    """Bad flags or sources: printed as ``error: ...`` with exit code 2."""


@dataclasses.dataclass(frozen=True)
class TextSource:
    """A named stream of documents and how many characters to take from it."""
    name: str
    documents: Callable[[], Iterator[str]]
    max_characters: int


# -- sources -----------------------------------------------------------------------------------

def directory_source(text_dir: str, max_characters: int) -> TextSource:
    """All .txt/.py files under text_dir, recursively, in sorted path order."""
    if not os.path.isdir(text_dir):
        raise UsageError(f"--text_dir={text_dir} is not a directory.")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(text_dir) for name in names
        if name.endswith(TEXT_SUFFIXES))
    if not paths:
        raise UsageError(f"--text_dir={text_dir} holds no {'/'.join(TEXT_SUFFIXES)} files.")

    def documents() -> Iterator[str]:
        for path in paths:
            try:
                with open(path, encoding="utf-8") as f:
                    yield f.read()
            except UnicodeDecodeError:
                print(f"warning: skipping {path}: not UTF-8", file=sys.stderr)

    return TextSource(text_dir, documents, max_characters)


def _import_task_registrations() -> None:
    """Register the project's tasks; without them only tasks registered elsewhere exist."""
    try:
        importlib.import_module(TASKS_MODULE)
    except Exception as err:  # noqa: BLE001 - any failure leaves the registry usable
        print(f"warning: could not import {TASKS_MODULE} ({type(err).__name__}: {err}); only "
              "tasks registered elsewhere are available.", file=sys.stderr)


def task_source(task, text_field: str, max_characters: int) -> TextSource:
    """The raw ``text_field`` strings of a seqio task's train split."""
    if "train" not in task.source.splits:
        raise UsageError(f"task {task.name} has no 'train' split (splits: "
                         f"{list(task.source.splits)}).")

    def documents() -> Iterator[str]:
        dataset = task.source.get_dataset(split="train", shuffle=False)
        fields = dataset.element_spec
        if text_field not in fields:
            raise UsageError(f"task {task.name} has no field {text_field!r} (fields: "
                             f"{sorted(fields)}); set --text_field.")
        for example in dataset.as_numpy_iterator():
            value = example[text_field]
            if not isinstance(value, bytes):
                raise UsageError(f"task {task.name}: field {text_field!r} is not a scalar "
                                 f"string (got {type(value).__name__}).")
            yield value.decode("utf-8", errors="replace")

    return TextSource(task.name, documents, max_characters)


def seqio_sources(task_names: Sequence[str] | None, mixture_name: str | None, text_field: str,
                  max_characters: int) -> list[TextSource]:
    """Sources for --task (equal shares) or --mixture (shares by mixing rate)."""
    import seqio  # Deferred: --text_dir runs need neither seqio's registries nor TF datasets.

    _import_task_registrations()
    if mixture_name is not None:
        if mixture_name not in seqio.MixtureRegistry.names():
            raise UsageError(f"unknown mixture {mixture_name!r}; registered mixtures: "
                             f"{sorted(seqio.MixtureRegistry.names()) or 'none'}.")
        mixture = seqio.MixtureRegistry.get(mixture_name)
        rates = {task: mixture.get_rate(task) for task in mixture.tasks}
    else:
        tasks = []
        for name in task_names or ():
            if name not in seqio.TaskRegistry.names():
                raise UsageError(f"unknown task {name!r}; registered tasks: "
                                 f"{sorted(seqio.TaskRegistry.names()) or 'none'}.")
            tasks.append(seqio.TaskRegistry.get(name))
        rates = {task: 1.0 for task in tasks}
    total = sum(rate for rate in rates.values() if rate > 0)
    if total <= 0:
        raise UsageError(f"mixture {mixture_name!r} gives every task a zero rate.")
    return [task_source(task, text_field, int(max_characters * rate / total))
            for task, rate in rates.items() if rate > 0]


# -- collecting and splitting ------------------------------------------------------------------

def collect_documents(sources: Sequence[TextSource]) -> list[str]:
    """Read documents from each source up to its character budget (the last one truncated)."""
    documents: list[str] = []
    with tqdm(total=sum(s.max_characters for s in sources), unit="char", unit_scale=True,
              desc="collecting text", file=sys.stderr) as progress:
        for source in sources:
            left = source.max_characters
            for document in source.documents():
                if left <= 0:
                    break
                document = document[:left]
                if document:
                    documents.append(document)
                    left -= len(document)
                    progress.update(len(document))
    return documents


def split_heldout(documents: list[str], every: int) -> tuple[list[str], list[str]]:
    """(training, held-out): every ``every``-th document, or the last one if that gives none."""
    if len(documents) < 2:
        return documents, []
    heldout_index = set(range(every - 1, len(documents), every)) or {len(documents) - 1}
    train = [d for i, d in enumerate(documents) if i not in heldout_index]
    heldout = [d for i, d in enumerate(documents) if i in heldout_index]
    return train, heldout


def vocab_path_for(model_path: str) -> str:
    stem = model_path[:-len(".model")] if model_path.endswith(".model") else model_path
    return stem + ".vocab"


# -- entry point -------------------------------------------------------------------------------

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.train_vocab",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="where to write the .model file")
    parser.add_argument("--vocab_size", type=int, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", action="append", help="a registered seqio task (repeatable)")
    source.add_argument("--mixture", help="a registered seqio mixture")
    source.add_argument("--text_dir", help="a directory of .txt/.py files")
    parser.add_argument("--max_characters", type=int, default=20_000_000,
                        help="characters to collect in total (default: %(default)s)")
    parser.add_argument("--text_field", default="text",
                        help="the raw text field of the tasks' sources (default: %(default)s)")
    parser.add_argument("--character_coverage", type=float, default=0.9995,
                        help="share of characters kept as pieces; the rest use byte pieces")
    parser.add_argument("--heldout_every", type=int, default=20,
                        help="hold out every N-th document for the round-trip check")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    from seqio_tasks import vocabularies  # Deferred: imports TensorFlow.

    try:
        if args.max_characters <= 0 or args.heldout_every < 2:
            raise UsageError("--max_characters must be positive and --heldout_every at least 2.")
        if args.text_dir is not None:
            sources = [directory_source(args.text_dir, args.max_characters)]
        else:
            sources = seqio_sources(args.task, args.mixture, args.text_field,
                                    args.max_characters)
        documents = collect_documents(sources)
        if not any(documents):
            raise UsageError(f"no text found in {', '.join(s.name for s in sources)}.")
        train, heldout = split_heldout(documents, args.heldout_every)
        output_dir = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(output_dir, exist_ok=True)
        vocabularies.train_sentencepiece(train, args.vocab_size, args.output,
                                         character_coverage=args.character_coverage)
    except ValueError as err:  # UsageError, and train_sentencepiece's size/empty errors
        raise cli.UserError(str(err)) from err

    vocab_file = vocab_path_for(args.output)
    vocabularies.write_vocab_file(args.output, vocab_file)
    vocab = vocabularies.code_vocabulary(args.output)
    print(f"wrote {args.output} and {vocab_file} ({vocab.vocab_size} pieces)")
    print(f"trained on {len(train)} documents, {sum(map(len, train)):,} characters; "
          f"held out {len(heldout)} documents, {sum(map(len, heldout)):,} characters")
    checked = heldout or train
    try:
        vocabularies.assert_roundtrip(vocab, checked)
        vocabularies.assert_roundtrip(vocab, checked, use_tf=True)
    except vocabularies.RoundTripError as err:
        print(f"error: the vocabulary does not round-trip: {err}", file=sys.stderr)
        return 1
    which = "held-out" if heldout else "training (nothing held out)"
    tokens = sum(len(vocab.encode(text)) for text in checked)
    print(f"round-trip: exact on {len(checked)} {which} documents (python and TF)")
    print(f"characters per token on {which} text: {sum(map(len, checked)) / tokens:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
