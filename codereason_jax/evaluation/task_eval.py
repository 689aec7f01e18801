"""One task's numbers: multiple-choice accuracy, generation BLEU / EM-F1 / pass@k, or held-out
loss, each with a bootstrap interval, the chance level, contamination and every example."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from codereason_jax.evaluation.eval_config import EvalConfig
from codereason_jax.evaluation.eval_metrics.bleu import (bleu_from_counts, example_bleu_counts,
                                                         paper_bleu)
from codereason_jax.evaluation.eval_metrics.bootstrap import (accuracy_with_ci,
                                                              bootstrap_statistic_ci)
from codereason_jax.evaluation.eval_metrics.contamination import ngram_overlap
from codereason_jax.evaluation.eval_metrics.dureader import dureader_em_f1
from codereason_jax.evaluation.eval_metrics.pass_rate import mean_pass_at_k
from codereason_jax.model.config import ConfigError


def evaluate_task(name: str, split: str, model, params, config: EvalConfig) -> dict[str, Any]:
    """One task's result (its entry in the results file); the task's rows say its kind:
    scored candidates, prompts to complete, or documents (language modelling)."""
    import seqio

    from codereason_jax.evaluation import generation, scoring

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
        accuracy, low, high = accuracy_with_ci([r.correct for r in results],
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
    bleu_counts = example_bleu_counts(
        [[tokenize(r)] for r in references],
        [tokenize(p.strip()) for p in predictions])
    bleu, low, high = bootstrap_statistic_ci(
        bleu_counts, lambda t: 100 * bleu_from_counts(t).bleu, seed=config.seed)
    try:
        bleu_paper = paper_bleu(references, predictions, tokenize)
    except ValueError:  # every prediction empty: the paper's notebook divides by zero
        bleu_paper = None
    result = {"kind": "generation", "sampling": dataclasses.asdict(sampling), "n": len(rows),
              "chance": None,  # BLEU, EM/F1 and pass@k have no chance level of a random pick
              "num_samples": config.num_samples, "truncated_prompts": truncated,
              "contamination": _contamination(_example_texts(rows, "example_id"), config),
              "metrics": {"bleu_paper": bleu_paper, "bleu_corpus": bleu,
                          "bleu_corpus_ci95": [low, high]}}
    if "dureader" in name:
        scores = dureader_em_f1(predictions, [e["references"] for e in extras],
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
        accuracy, low, high = accuracy_with_ci(passed[0].tolist(), seed=config.seed)
        result["metrics"].update({"pass@1": 100 * accuracy, "pass@1_ci95": [100 * low,
                                                                           100 * high]})
        counts = [(config.num_samples, int(c)) for c in passed.sum(axis=0)]
        for k in (1, 5, 10):
            if 1 < config.num_samples and k <= config.num_samples:
                result["metrics"][f"pass@{k}_unbiased"] = 100 * mean_pass_at_k(counts, k)
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
    from codereason_jax.evaluation import scoring

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
    if not windows:
        raise ValueError(f"none of the {len(rows)} documents has 2 or more tokens: there is "
                         "nothing to predict; check the task's split.")
    nll = scoring.RowScorer(model, params, config.batch_size)(windows)
    per_document = np.zeros((len(rows), 2))
    for owner, value, window in zip(owners, nll, windows):
        per_document[owner] += (value, len(window.weights))
    # A document of 0 or 1 tokens predicts nothing: counted, and left out of the mean and of
    # the bootstrap (a resample of only such documents would divide 0 by 0).
    scored = per_document[per_document[:, 1] > 0]
    loss, low, high = bootstrap_statistic_ci(scored, lambda t: t[0] / t[1], seed=config.seed)
    return {"kind": "language_modelling", "n": len(scored),
            "unscored": {"fewer than 2 tokens": len(rows) - len(scored)},
            # The loss of a uniform prediction over the vocabulary.
            "chance": math.log(model.config.vocab_size),
            "metrics": {"loss": loss, "loss_ci95": [low, high],
                        "perplexity": float(np.exp(loss)),
                        "tokens": int(scored[:, 1].sum())},
            "examples": [{"nll_sum": float(a), "tokens": int(b)} for a, b in scored]}


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
    return {name: ngram_overlap(texts, _corpus_texts(name),
                                n=config.contamination_n)["fraction"]
            for name in config.contamination_corpora}
