"""Evaluate a checkpoint (or a freshly initialised model) on reasoning tasks.

    python -m codereason_jax.evaluate --gin_file=gin/models/pangu_tiny.gin \\
        --checkpoint=runs/demo_cpu --tasks=eval_embedded_codeqa,eval_embedded_codegen \\
        --output=results.json [--gin.EvalConfig.mode="'corrected'"]

Multiple-choice tasks are scored by ``codereason_jax.evaluation.scoring`` (mode ``paper``
reproduces the released scorer, quirk included); generation tasks decode with the KV cache and
report BLEU (the paper's one-segment computation and a proper corpus BLEU) and, where the task
carries tests (MBPP), pass@1 by sandboxed execution. One JSON file holds, per task, the metrics
with bootstrap 95% intervals, n, and every example's prediction and scores, plus the model,
checkpoint and vocabulary identity and the operative config. ``--checkpoint`` and ``--output``
may be local paths or URLs (``gs://BUCKET/...``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (under SeqIO) is only the reader

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from typing import Any, Sequence

import gin
import numpy as np

from codereason_jax import gin_utils, paths
from codereason_jax.checkpoints import CheckpointError
from codereason_jax.model.config import ConfigError
from codereason_jax.partitioning import PartitioningError


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Which tasks, how to score them, and how much to decode."""
    tasks: tuple[str, ...] = ("eval_embedded_codeqa", "eval_embedded_codegen")
    split: str = "validation"
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


gin_utils.register(EvalConfig)


def _load_params(model, checkpoint: str | None, seed: int, mesh_shape):
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
        return mesh, params, {"checkpoint": None, "step": 0, "init_seed": seed}
    step, params = restore_params(checkpoint, abstract_like(nn.meta.unbox(boxed), shardings))
    return mesh, params, {"checkpoint": paths.resolve(checkpoint), "step": step}


def evaluate_task(name: str, model, params, config: EvalConfig) -> dict[str, Any]:
    import seqio

    from codereason_jax.evaluation import generation, metrics, scoring

    task = seqio.get_mixture_or_task(name)
    vocabulary = task.output_features["targets"].vocabulary
    dataset = task.get_dataset(None, split=config.split, shuffle=False,
                               trim_output_features=False)
    rows = list(dataset.as_numpy_iterator())
    if not rows:
        raise ValueError(f"task {name} has no {config.split} examples")
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
        return {"kind": "multiple_choice", "mode": config.mode, "n": len(results),
                "contamination": _contamination(texts, config),
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m codereason_jax.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="run (or checkpoints/) directory, local or a URL "
                        "(gs://...); omit to evaluate a freshly initialised model")
    parser.add_argument("--tasks", help="comma-separated task names (overrides EvalConfig)")
    parser.add_argument("--output", required=True,
                        help="results JSON to write (a local path or a URL)")
    try:
        args = gin_utils.parse_command_line(parser, argv)
        model_config = gin_utils.model_config()
        config = gin_utils.build(EvalConfig)
        if args.tasks:
            config = dataclasses.replace(config, tasks=tuple(args.tasks.split(",")))
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.data_dir:
        os.environ["CODEREASON_DATA_DIR"] = config.data_dir

    import seqio

    from codereason_jax.model import PanGuDecoder
    from codereason_jax.model.config import check_vocabulary_fits
    from seqio_tasks.default_vocabulary import use_vocabulary
    try:
        use_vocabulary(config.vocabulary)
        from seqio_tasks import mixtures  # noqa: F401 (registers the tasks)
        from seqio_tasks.tasks import VOCABULARY
        check_vocabulary_fits(VOCABULARY, model_config)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    unknown = [t for t in config.tasks if t not in seqio.TaskRegistry.names()]
    if unknown:
        print(f"error: unknown tasks {unknown}; evaluation tasks: "
              f"{sorted(n for n in seqio.TaskRegistry.names() if n.startswith('eval_'))}",
              file=sys.stderr)
        return 2
    model = PanGuDecoder(dataclasses.replace(model_config, dropout_rate=0.0))
    try:
        mesh, params, identity = _load_params(model, args.checkpoint, config.seed,
                                              config.mesh_shape)
    except (CheckpointError, ConfigError, PartitioningError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    vocabulary = seqio.get_mixture_or_task(config.tasks[0]).output_features["targets"].vocabulary
    vocab_hash = hashlib.sha256(
        paths.read_bytes(vocabulary.sentencepiece_model_file)).hexdigest()[:16]
    results = {"model": dataclasses.asdict(model_config), **identity,
               "vocabulary": {"file": vocabulary.sentencepiece_model_file, "sha256": vocab_hash,
                              "size": vocabulary.vocab_size},
               "eval_config": dataclasses.asdict(config), "config": gin.operative_config_str(),
               "tasks": {}}
    import jax

    for i, name in enumerate(config.tasks, start=1):
        start = time.perf_counter()
        print(f"[{i}/{len(config.tasks)}] {name} ...", flush=True)
        with jax.set_mesh(mesh):
            results["tasks"][name] = evaluate_task(name, model, params, config)
        summary = ", ".join(f"{k} {v:.2f}" for k, v in results["tasks"][name]["metrics"].items()
                            if isinstance(v, float))
        print(f"    n={results['tasks'][name]['n']}: {summary} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    paths.makedirs(paths.dirname(paths.resolve(args.output)))
    paths.write_text(args.output, json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
