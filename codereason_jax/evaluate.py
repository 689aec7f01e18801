"""Evaluate a checkpoint (or a freshly initialised model) on reasoning tasks.

    python -m codereason_jax.evaluate --gin_file=gin/models/pangu_tiny.gin \\
        --checkpoint=runs/demo_cpu --tasks=eval_embedded_codeqa,eval_embedded_codegen \\
        --output=results.json [--gin.EvalConfig.mode="'corrected'"]
    python -m codereason_jax.evaluate --check_data --gin_file=gin/eval/tables_2_3_6.gin

Multiple-choice tasks are scored by ``codereason_jax.evaluation.scoring`` (mode ``paper``
reproduces the released scorer, quirk included); generation tasks decode with the KV cache and
report BLEU (the paper's one-segment computation and a proper corpus BLEU) and, where the task
carries tests (MBPP), pass@1 by sandboxed execution. One JSON file holds, per task, the metrics
with bootstrap 95% intervals, n, the chance level, the records skipped by reason, and every
example's prediction and scores, plus the model, checkpoint and vocabulary identity and the
operative config; a markdown summary is written beside it. ``--checkpoint`` and ``--output``
may be local paths or URLs (``gs://BUCKET/...``).

Each task is evaluated on the split the paper used unless ``EvalConfig.split`` (a mapping task
-> split) says otherwise. The results file is rewritten, atomically, after every task, with a
fingerprint of the checkpoint, the task settings and the data file; a rerun skips the tasks
whose fingerprint matches (``--force`` recomputes them). A task that fails does not stop the
others: each failure is one ``error:`` line, and the exit status is 1.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (under SeqIO) is only the reader

import dataclasses
import hashlib
import json
import math
import sys
import time
import traceback
from typing import Any, Mapping, Sequence

import gin
import numpy as np

from codereason_jax import cli, gin_utils, paths
from codereason_jax.checkpoints import CheckpointError
from codereason_jax.config_types import check_field_types
from codereason_jax.model.config import ConfigError
from codereason_jax.partitioning import PartitioningError


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Which tasks, how to score them, and how much to decode."""
    tasks: tuple[str, ...] = ("eval_embedded_codeqa", "eval_embedded_codegen")
    # Per-task split overrides, e.g. {'eval_mbpp': 'test'}; a task not named here is evaluated
    # on the split the paper used (seqio_tasks.tasks.default_split), others on 'validation'.
    split: Mapping[str, str] = dataclasses.field(default_factory=dict)
    mode: str = "corrected"  # paper | corrected | loglik | loglik_norm
    batch_size: int = 32
    max_examples: int | None = None  # per task; None: all
    max_new_tokens: int = 128
    sampling: str = "greedy"  # greedy | sample | paper (top-k 3 with the paper's penalties)
    seed: int = 0
    execute_tests: bool = True  # pass@k for generation tasks that carry tests
    # Samples per prompt for pass@k (1: the one greedy or sampled completion gives pass@1;
    # n > 1 draws n seeded samples and reports the unbiased pass@k for k = 1, 5, 10 <= n).
    num_samples: int = 1
    # DuReader: score only the first 20 characters of a prediction, as the paper's notebook.
    dureader_truncate_to: int | None = None
    mesh_shape: tuple[int, int, int] = (-1, 1, 1)
    data_dir: str | None = None
    # The tasks' vocabulary, as TrainConfig.vocabulary: it must be the one the model was
    # trained with ("pangu:PATH" for converted PanGu-α weights).
    vocabulary: str | None = None
    # Contamination: share of each task's examples that share a 13-gram (whitespace tokens)
    # with the train split of these tasks (pre-training and instruction corpora).
    contamination_corpora: tuple[str, ...] = ()
    contamination_n: int = 13
    # Benchmark records that cannot be scored (empty answer, answer not an option, ...) are
    # skipped and counted; strict makes the first one an error naming file:line. A task whose
    # skipped share exceeds max_skipped_fraction fails (a wrong file is never scored on a
    # sliver of its rows).
    strict: bool = False
    max_skipped_fraction: float = 0.05

    def __post_init__(self):
        if isinstance(self.split, str) or not isinstance(self.split, Mapping):
            raise ConfigError(
                f"EvalConfig.split should map task names to splits, e.g. "
                f"{{'eval_mbpp': 'test'}}, got {self.split!r}. Each task has its own default "
                "split (the one the paper evaluated), so one split for all tasks is not "
                "accepted.")
        check_field_types(self)
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ConfigError(f"EvalConfig.max_skipped_fraction should be in [0, 1], got "
                              f"{self.max_skipped_fraction!r}.")

    def read_policy(self):
        from seqio_tasks.sources.rows import ReadPolicy

        return ReadPolicy(self.strict, self.max_skipped_fraction)


gin_utils.register(EvalConfig)

# EvalConfig fields that change a task's numbers (a result computed under others is stale);
# batch_size, mesh_shape and data_dir do not (the data file's own hash is fingerprinted).
RESULT_SETTINGS = ("mode", "max_examples", "max_new_tokens", "sampling", "seed",
                   "execute_tests", "num_samples", "dureader_truncate_to",
                   "contamination_corpora", "contamination_n", "strict",
                   "max_skipped_fraction")


def _load_params(model, checkpoint: str | None, seed: int, mesh_shape,
                 step: int | None = None):
    """Params sharded over a (data, fsdp, model) mesh like training: restored straight into
    the shardings, or freshly initialised (a baseline)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from codereason_jax import partitioning
    from codereason_jax.checkpoints import abstract_like, restore_params
    mesh = partitioning.make_mesh(
        partitioning.resolve_mesh_shape(mesh_shape, jax.device_count()))
    example = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(seed), example))["params"]
    shardings = partitioning.param_shardings(boxed, mesh, partitioning.DEFAULT_RULES)
    if checkpoint is None:
        params = jax.jit(lambda key: nn.meta.unbox(model.init(key, example)["params"]),
                         out_shardings=shardings)(jax.random.key(seed))
        return mesh, params, 0
    step, params = restore_params(checkpoint, abstract_like(nn.meta.unbox(boxed), shardings),
                                  step)
    return mesh, params, step


def evaluate_task(name: str, split: str, model, params, config: EvalConfig) -> dict[str, Any]:
    import seqio

    from codereason_jax.evaluation import generation, metrics, scoring

    task = seqio.get_mixture_or_task(name)
    vocabulary = task.output_features["targets"].vocabulary
    dataset = task.get_dataset(None, split=split, shuffle=False, trim_output_features=False)
    rows = list(dataset.as_numpy_iterator())
    if not rows:
        raise ValueError(f"task {name} has no {split} examples")
    if "inputs" not in rows[0]:
        return _language_modelling(rows, model, params, config)
    if "candidate" in rows[0]:
        if config.max_examples is not None:
            keep = set(list(dict.fromkeys(r["example_id"] for r in rows))[:config.max_examples])
            rows = [r for r in rows if r["example_id"] in keep]
        scorer = scoring.RowScorer(model, params, config.batch_size)
        results = scoring.score_multiple_choice(rows, vocabulary, scorer, config.mode)
        accuracy, low, high = metrics.accuracy_with_ci([r.correct for r in results],
                                                       seed=config.seed)
        texts = _example_texts(rows, "example_id")
        # Chance as scored: a uniform pick is right with probability |gold| / |candidates|.
        chance = float(np.mean([len(set(r.labels)) / len(r.scores) for r in results]))
        return {"kind": "multiple_choice", "mode": config.mode, "n": len(results),
                "chance": 100 * chance, "contamination": _contamination(texts, config),
                "metrics": {"accuracy": 100 * accuracy, "accuracy_ci95": [100 * low,
                                                                         100 * high]},
                "truncated": sum(r.truncated for r in results),
                "examples": [dataclasses.asdict(r) for r in results]}

    rows = rows if config.max_examples is None else rows[:config.max_examples]
    sampling = {"greedy": generation.SamplingConfig(max_new_tokens=config.max_new_tokens),
                "sample": generation.SamplingConfig(method="sample", top_k=3, seed=config.seed,
                                                    max_new_tokens=config.max_new_tokens),
                "paper": dataclasses.replace(generation.PAPER_SAMPLING, seed=config.seed,
                                             max_new_tokens=config.max_new_tokens),
                }[config.sampling]
    prompts = [vocabulary.encode(r["inputs_pretokenized"].decode()) for r in rows]
    # A prompt longer than the context leaves room for the answer by keeping its end (where
    # the question is); how many were cut is in the results, never silent.
    room = model.config.max_seq_len - config.max_new_tokens
    if room < 1:
        raise ConfigError(f"EvalConfig.max_new_tokens={config.max_new_tokens} leaves no room "
                          f"for a prompt in the context of {model.config.max_seq_len}.")
    truncated = sum(len(p) > room for p in prompts)
    prompts = [p[-room:] for p in prompts]
    samples = []  # samples[j][i]: the j-th completion of prompt i
    for j in range(config.num_samples):
        sample_config = sampling if config.num_samples == 1 else dataclasses.replace(
            sampling, method="sample", seed=config.seed + j)
        outputs = generation.generate(model, params, prompts, vocabulary.eos_id, sample_config,
                                      batch_size=config.batch_size)
        samples.append([vocabulary.decode(o) for o in outputs])
    predictions = samples[0]
    extras = [json.loads(r["extra"]) for r in rows]
    references = [r["targets_pretokenized"].decode() for r in rows]

    def tokenize(text):
        return [str(i) for i in vocabulary.encode(text)]

    # Corpus BLEU (one segment per example) with a bootstrap interval over examples; each
    # example keeps its additive BLEU counts so runs can be compared pairwise.
    bleu_counts = metrics.example_bleu_counts(
        [[tokenize(r)] for r in references],
        [tokenize(p.strip()) for p in predictions])
    bleu, low, high = metrics.bootstrap_statistic_ci(
        bleu_counts, lambda t: 100 * metrics.bleu_from_counts(t).bleu, seed=config.seed)
    try:
        bleu_paper = metrics.paper_bleu(references, predictions, tokenize)
    except ValueError:  # every prediction empty: the paper's notebook divides by zero
        bleu_paper = None
    result = {"kind": "generation", "sampling": dataclasses.asdict(sampling), "n": len(rows),
              "chance": None,  # BLEU, EM/F1 and pass@k have no chance level of a random pick
              "num_samples": config.num_samples, "truncated_prompts": truncated,
              "contamination": _contamination(_example_texts(rows, "example_id"), config),
              "metrics": {"bleu_paper": bleu_paper, "bleu_corpus": bleu, "bleu_corpus_ci95": [low, high]}}
    if "dureader" in name:
        scores = metrics.dureader_em_f1(predictions, [e["references"] for e in extras],
                                        truncate_to=config.dureader_truncate_to)
        result["metrics"].update({"em": scores["em"], "f1": scores["f1"]})
    examples = [{"example_id": r["example_id"].decode(), "prediction": p, "reference": ref,
                 "bleu_counts": c.tolist()}
                for r, p, ref, c in zip(rows, predictions, references, bleu_counts)]
    if config.execute_tests and all(e.get("tests") for e in extras):
        from codereason_jax.evaluation import sandbox

        programs = [sandbox.mbpp_program(sample[i], e["tests"], e.get("setup_code", ""),
                                         e.get("test_imports", ()))
                    for sample in samples for i, e in enumerate(extras)]
        statuses = [x.status for x in sandbox.check_many(programs, sandbox.SandboxConfig())]
        passed = np.array([s == "passed" for s in statuses]).reshape(config.num_samples,
                                                                     len(rows))
        accuracy, low, high = metrics.accuracy_with_ci(passed[0].tolist(), seed=config.seed)
        result["metrics"].update({"pass@1": 100 * accuracy, "pass@1_ci95": [100 * low,
                                                                           100 * high]})
        counts = [(config.num_samples, int(c)) for c in passed.sum(axis=0)]
        for k in (1, 5, 10):
            if 1 < config.num_samples and k <= config.num_samples:
                result["metrics"][f"pass@{k}_unbiased"] = 100 * metrics.mean_pass_at_k(counts, k)
        for i, example in enumerate(examples):
            example["execution"] = [statuses[j * len(rows) + i]
                                    for j in range(config.num_samples)]
    result["examples"] = examples
    return result


def _language_modelling(rows: list[dict[str, Any]], model, params, config: EvalConfig
                        ) -> dict[str, Any]:
    """Per-token loss of a corpus's held-out documents (a pre-training task's split).

    Each document (at most ``max_examples``) is cut into windows of max_seq_len + 1 tokens
    overlapping by one, so every token after the first is predicted exactly once, with at most
    max_seq_len tokens of context. The interval bootstraps documents (a ratio of sums).
    """
    from codereason_jax.evaluation import metrics, scoring

    rows = rows if config.max_examples is None else rows[:config.max_examples]
    width = model.config.max_seq_len + 1
    windows, owners = [], []
    for d, row in enumerate(rows):
        tokens = np.asarray(row["targets"], np.int32)
        for start in range(0, max(len(tokens) - 1, 1), width - 1):
            piece = tokens[start:start + width]
            if len(piece) < 2:
                continue
            windows.append(scoring.ScoringRow(piece, np.ones(len(piece) - 1, np.float32),
                                              False))
            owners.append(d)
    nll = scoring.RowScorer(model, params, config.batch_size)(windows)
    per_document = np.zeros((len(rows), 2))
    for owner, value, window in zip(owners, nll, windows):
        per_document[owner] += (value, len(window.weights))
    loss, low, high = metrics.bootstrap_statistic_ci(
        per_document, lambda t: t[0] / t[1], seed=config.seed)
    return {"kind": "language_modelling", "n": len(rows),
            # The loss of a uniform prediction over the vocabulary.
            "chance": math.log(model.config.vocab_size),
            "metrics": {"loss": loss, "loss_ci95": [low, high],
                        "perplexity": float(np.exp(loss)),
                        "tokens": int(per_document[:, 1].sum())},
            "examples": [{"nll_sum": float(a), "tokens": int(b)} for a, b in per_document]}


def _example_texts(rows: list[dict[str, Any]], key: str) -> list[str]:
    """One text per example (its first row's prompt and target) for the n-gram check."""
    texts: dict[Any, str] = {}
    for row in rows:
        texts.setdefault(row[key], row["inputs_pretokenized"].decode() + " " +
                         row["targets_pretokenized"].decode())
    return list(texts.values())


_CORPUS_CACHE: dict[str, list[str]] = {}


def _corpus_texts(name: str) -> list[str]:
    """The raw strings of a task's train split, read once per process."""
    import seqio

    if name not in _CORPUS_CACHE:
        source = seqio.get_mixture_or_task(name).source
        texts = []
        for record in source.get_dataset("train", shuffle=False).as_numpy_iterator():
            texts.append(" ".join(v.decode() for v in record.values() if isinstance(v, bytes)))
        _CORPUS_CACHE[name] = texts
    return _CORPUS_CACHE[name]


def _contamination(texts: list[str], config: EvalConfig) -> dict[str, float]:
    from codereason_jax.evaluation import metrics

    return {name: metrics.ngram_overlap(texts, _corpus_texts(name),
                                        n=config.contamination_n)["fraction"]
            for name in config.contamination_corpora}


def resolve_splits(config: EvalConfig) -> dict[str, str]:
    """Each task's split: its override in EvalConfig.split, else its default. Unknown tasks or
    splits are refused here, before any model work, with what exists."""
    import seqio

    from seqio_tasks.tasks import default_split

    names = seqio.TaskRegistry.names()
    unknown = [t for t in config.tasks if t not in names]
    if unknown:
        raise ConfigError(f"unknown tasks {unknown}; evaluation tasks: "
                          f"{sorted(n for n in names if n.startswith('eval_'))}")
    stray = [t for t in config.split if t not in names]
    if stray:
        raise ConfigError(f"EvalConfig.split names unknown tasks {stray}.")
    splits = {}
    for name in config.tasks:
        split = config.split.get(name) or default_split(name)
        available = list(seqio.get_mixture_or_task(name).source.splits)
        if split not in available:
            raise ConfigError(f"task {name} has no split {split!r}; its splits: {available} "
                              f"(set EvalConfig.split = {{'{name}': '{available[0]}'}}).")
        splits[name] = split
    return splits


# ----------------------------------------------------------------------------- --check_data

def data_summary(name: str, split: str) -> dict[str, Any]:
    """Rows, skipped counts and chance of a task's split, read without a model or vocabulary."""
    import seqio

    from seqio_tasks.tasks import BENCHMARKS

    if name in BENCHMARKS:
        loaded = BENCHMARKS[name].load(split)
        return {"rows": len(loaded.examples), "skipped": loaded.examples.skipped,
                "skipped_at": loaded.examples.skipped_at,
                "filtered": loaded.examples.filtered, "chance": loaded.chance,
                "source": loaded.examples.source, "sha256": loaded.data_sha256}
    source = seqio.get_mixture_or_task(name).source
    gold: dict[str, tuple[int, int]] = {}  # example id -> (|gold|, |candidates|)
    rows = 0
    for row in source.get_dataset(split, shuffle=False).as_numpy_iterator():
        rows += 1
        if "candidate" in row:
            labels = {x for x in row["labels"].decode().split(",") if x}
            count = gold.get(row["example_id"], (len(labels), 0))[1]
            gold[row["example_id"]] = (len(labels), count + 1)
    chance = (float(np.mean([g / c for g, c in gold.values()])) if gold else None)
    return {"rows": len(gold) if gold else rows, "skipped": {}, "skipped_at": {},
            "filtered": {}, "chance": chance, "source": None, "sha256": None}


def check_data_line(name: str, split: str, summary: dict[str, Any]) -> str:
    """``eval_jecqa_kd: 999 rows, skipped 1 (empty answer 1), split test, chance 0.49``."""
    from seqio_tasks.sources.rows import describe_counts

    skipped = sum(summary["skipped"].values())
    line = f"{name}: {summary['rows']} rows, skipped {skipped}"
    if skipped:
        line += f" ({describe_counts(summary['skipped'])})"
    chance = summary["chance"]
    line += f", split {split}, chance " + ("n/a" if chance is None else f"{chance:.2f}")
    if summary["filtered"]:
        line += f", filtered {sum(summary['filtered'].values())} " \
                f"({describe_counts(summary['filtered'])})"
    return line


def check_data(splits: dict[str, str]) -> int:
    failed = 0
    for name, split in splits.items():
        try:
            print(check_data_line(name, split, data_summary(name, split)), flush=True)
        except ValueError as err:  # DataFileError, a template that cannot be filled
            print(f"error: {name}: {err}", file=sys.stderr, flush=True)
            failed += 1
    if failed:
        print(f"error: {failed} of {len(splits)} tasks could not be loaded.", file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- results file

def fingerprint(identity: dict[str, Any], name: str, split: str, config: EvalConfig,
                data_sha256: str | None) -> tuple[str, dict[str, Any]]:
    """A hash of what a task's numbers depend on: the checkpoint (path, step, model, vocabulary)
    or initialisation, the task, its split and settings, and the data file's content."""
    inputs = {"model": identity, "task": name, "split": split, "data_sha256": data_sha256,
              "settings": {k: getattr(config, k) for k in RESULT_SETTINGS}}
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], inputs


def load_previous(output: str, identity: dict[str, Any], force: bool) -> dict[str, Any]:
    """Task results already in ``output`` for this model identity ({} with --force); results
    of another model or checkpoint are refused rather than overwritten."""
    if force or not paths.exists(output):
        return {}
    try:
        previous = json.loads(paths.read_text(output))
        tasks = previous["tasks"]
        other = previous.get("identity")
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{output} exists but is not a results file of this command ({err}); "
                          "pass another --output, or --force to replace it.") from None
    if other != identity:
        raise ConfigError(
            f"{output} holds results of another model or checkpoint ({json.dumps(other)[:300]}), "
            f"not of this one ({json.dumps(identity)[:300]}). Pass another --output to keep "
            "both, or --force to replace them.")
    return tasks


def write_results(output: str, results: dict[str, Any]) -> None:
    """The JSON (atomically replaced) and its markdown summary beside it."""
    from codereason_jax import report

    paths.write_text(output, json.dumps(results, indent=1, ensure_ascii=False))
    base = output[:-len(".json")] if output.endswith(".json") else output
    paths.write_text(base + ".md", report.run_summary(results))


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.evaluate",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="run (or checkpoints/) directory, local or a URL "
                        "(gs://...); omit to evaluate a freshly initialised model")
    parser.add_argument("--tasks", help="comma-separated task names (overrides EvalConfig)")
    parser.add_argument("--output", help="results JSON to write (a local path or a URL); "
                        "a markdown summary goes beside it")
    parser.add_argument("--check_data", action="store_true",
                        help="load every task's data (no model), print one line per task with "
                        "rows, skipped records, split and chance; exit 1 if any fails")
    parser.add_argument("--data_dir", help="benchmark data root (overrides EvalConfig.data_dir "
                        "and $CODEREASON_DATA_DIR)")
    parser.add_argument("--strict", action="store_true",
                        help="a record that cannot be scored is an error (EvalConfig.strict)")
    parser.add_argument("--force", action="store_true",
                        help="recompute tasks already in --output")
    cli.add_debug_flag(parser)
    args = gin_utils.parse_command_line(parser, argv)
    # --check_data reads files only: no model gin file is needed for it.
    model_config = None if args.check_data else gin_utils.model_config()
    config = gin_utils.build(EvalConfig)
    if args.tasks:
        config = dataclasses.replace(config, tasks=tuple(args.tasks.split(",")))
    if args.strict:
        config = dataclasses.replace(config, strict=True)
    if args.data_dir:
        config = dataclasses.replace(config, data_dir=args.data_dir)
    if not args.check_data and not args.output:
        raise ConfigError("--output is required (the results JSON to write), unless "
                          "--check_data.")
    if config.data_dir:
        os.environ["CODEREASON_DATA_DIR"] = config.data_dir

    import seqio

    from codereason_jax.model import PanGuDecoder
    from codereason_jax.model.config import check_vocabulary_fits
    from seqio_tasks.default_vocabulary import use_vocabulary
    from seqio_tasks.sources.rows import read_policy
    try:
        use_vocabulary(config.vocabulary)
        from seqio_tasks import mixtures  # noqa: F401 (registers the tasks)
        splits = resolve_splits(config)
        if args.check_data:
            with read_policy(config.read_policy()):
                return check_data(splits)
        from seqio_tasks.tasks import VOCABULARY
        check_vocabulary_fits(VOCABULARY, model_config)
    except ValueError as err:  # a vocabulary or task the data cannot give
        raise ConfigError(str(err)) from err

    model = PanGuDecoder(dataclasses.replace(model_config, dropout_rate=0.0))
    vocabulary = seqio.get_mixture_or_task(config.tasks[0]).output_features["targets"].vocabulary
    vocab_hash = hashlib.sha256(
        paths.read_bytes(vocabulary.sentencepiece_model_file)).hexdigest()[:16]
    # The newest checkpoint that loads (a corrupt one is named and passed over).
    loaded = _load_params(model, args.checkpoint, config.seed, config.mesh_shape)
    if args.checkpoint is None:
        source = {"checkpoint": None, "step": 0, "init_seed": config.seed}
    else:
        source = {"checkpoint": paths.resolve(args.checkpoint), "step": loaded[2]}
    identity = {**source, "model": dataclasses.asdict(model_config),
                "vocabulary_sha256": vocab_hash}
    previous = load_previous(args.output, identity, args.force)

    results = {"identity": identity, "model": dataclasses.asdict(model_config), **source,
               "vocabulary": {"file": vocabulary.sentencepiece_model_file, "sha256": vocab_hash,
                              "size": vocabulary.vocab_size},
               "eval_config": dataclasses.asdict(config), "config": gin.operative_config_str(),
               # Results of this checkpoint already in the file are kept (tasks not run now
               # too); each is replaced when recomputed. A task that fails now keeps its old
               # result, listed under "failed" as stale.
               "tasks": dict(previous), "failed": {}}
    paths.makedirs(paths.dirname(paths.resolve(args.output)))
    with read_policy(config.read_policy()):
        for i, name in enumerate(config.tasks, start=1):
            split = splits[name]
            start = time.perf_counter()
            print(f"[{i}/{len(config.tasks)}] {name} ({split}) ...", flush=True)
            try:
                data = data_summary(name, split)
                key, inputs = fingerprint(identity, name, split, config, data["sha256"])
                done = previous.get(name)
                if done is not None and done.get("fingerprint") == key:
                    results["tasks"][name] = done
                    print("    done earlier with the same checkpoint, settings and data: kept "
                          "(--force recomputes)", flush=True)
                    continue
                import jax

                with jax.set_mesh(loaded[0]):
                    result = evaluate_task(name, split, model, loaded[1], config)
            except (CheckpointError, ConfigError, PartitioningError):
                raise  # the model itself: no task can run (cli.run reports it)
            except ValueError as err:  # DataFileError and other problems of this task's input
                results["failed"][name] = str(err)
                print(f"error: {name}: {err}", file=sys.stderr, flush=True)
                write_results(args.output, results)
                continue
            except Exception as err:  # noqa: BLE001 - our bug: show it, keep the other tasks
                traceback.print_exc()
                results["failed"][name] = f"{type(err).__name__}: {err}"
                print(f"error: {name}: internal error {type(err).__name__}: {err} (a bug: "
                      "please report it with the traceback above)", file=sys.stderr, flush=True)
                write_results(args.output, results)
                continue
            result.update(split=split, fingerprint=key, fingerprint_inputs=inputs,
                          data={k: data[k] for k in ("rows", "skipped", "skipped_at",
                                                     "filtered", "source", "sha256")})
            results["tasks"][name] = result
            write_results(args.output, results)
            summary = ", ".join(f"{k} {v:.2f}" for k, v in result["metrics"].items()
                                if isinstance(v, float))
            skipped = sum(data["skipped"].values())
            print(f"    n={result['n']}" + (f" (skipped {skipped})" if skipped else "")
                  + f": {summary} ({time.perf_counter() - start:.0f} s)", flush=True)
    write_results(args.output, results)
    print(f"wrote {args.output}")
    if results["failed"]:
        print(f"error: {len(results['failed'])} of {len(config.tasks)} tasks failed: "
              f"{sorted(results['failed'])}; rerun to retry them (finished tasks are kept).",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
