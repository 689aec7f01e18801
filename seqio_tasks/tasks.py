"""SeqIO task registrations: pre-training corpora, instruction sets and evaluation benchmarks.

Importing this module registers every task; none reads data until a dataset is requested.

Task families (features; how ``seqio_tasks.mixing`` packs them):
- pre-training (``targets`` = document + EOS; dense concat packing, loss on every token):
  ``embedded_text``, ``embedded_code``, ``codeparrot``, ``text_corpus``, ``c4_en``, and
  ``codeparrot_tfds``, ``text_corpus_tfds`` (the same corpora prepared as TFDS datasets);
- instruction tuning (``inputs`` = templated prompt, ``targets`` = response + EOS; one example
  per row, loss on the response and EOS only): ``embedded_text_instructions``,
  ``embedded_code_instructions``, ``alpaca_gpt4_en``, ``alpaca_gpt4_zh``, ``pclue``,
  ``code_alpaca``, ``cosqa_instructions``, ``mbpp_instructions`` and the paper's two pools
  ``paper_text_instructions`` and ``paper_code_instructions``;
- evaluation, multiple choice (one row per candidate: ``inputs`` = prompt, ``targets`` = the
  scored span, plus ``example_id``, ``candidate``, ``label``, ``labels``):
  ``eval_logic``, ``eval_jecqa_kd``, ``eval_jecqa_ca``, ``eval_scienceqa``,
  ``eval_scienceqa_cot``, ``eval_ekar``, ``eval_ekar_cot``, ``eval_cosqa``, ``eval_c3``,
  ``eval_ocnli``, ``eval_cmnli``, ``eval_embedded_codeqa``;
- evaluation, generation (``inputs`` = prompt, ``targets`` = reference, ``extra`` = JSON with
  tests or further references): ``eval_mbpp``, ``eval_mbpp_with_tests``, ``eval_dureader``,
  ``eval_embedded_codegen``, ``eval_embedded_codecomplete``.

Real datasets are read from local copies under $CODEREASON_DATA_DIR (see
``seqio_tasks.sources``); a missing file fails with the path to put it at.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Iterable, Iterator, Mapping

import seqio

from seqio_tasks import eval_templates, tfds_builders
from seqio_tasks.default_vocabulary import task_vocabulary, vocabulary_spec
from seqio_tasks.registry import RecordSource, add_task
from seqio_tasks.benchmark_tasks import Benchmark
from seqio_tasks.sources import benchmarks, corpora, embedded, instructions
from seqio_tasks.sources.files import data_root
from seqio_tasks.tfds_builders.seqio_source import PreparedTfdsSource

VOCABULARY = task_vocabulary()
# The spec the tasks were registered with (a process registers tasks once).
VOCABULARY_SPEC = vocabulary_spec()
PRETRAIN_FEATURES = {"targets": seqio.Feature(VOCABULARY, add_eos=True)}
INSTRUCTION_FEATURES = {"inputs": seqio.Feature(VOCABULARY, add_eos=False),
                        "targets": seqio.Feature(VOCABULARY, add_eos=True)}
SCORING_FEATURES = {"inputs": seqio.Feature(VOCABULARY, add_eos=False),
                    "targets": seqio.Feature(VOCABULARY, add_eos=False)}
GENERATION_FEATURES = {"inputs": seqio.Feature(VOCABULARY, add_eos=False),
                       "targets": seqio.Feature(VOCABULARY, add_eos=True)}

_TOKENIZE = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos]
_TEXT_TO_TARGETS = functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"})
EMBEDDED_SPLITS = embedded.SPLITS

# The instruction template used by the registered instruction tasks. The paper's code fed the
# raw `input` field verbatim: prompt = instruction (+ newline + input); see
# seqio_tasks.sources.instructions for the Alpaca-style alternatives.
INSTRUCTION_TEMPLATE = "paper"


def add_pretraining_task(name: str, documents: Callable[[str], Iterable[Mapping[str, Any]]],
                         splits: Iterable[str]) -> seqio.Task:
    return add_task(name, RecordSource(documents, {"text": str}, splits),
                    [_TEXT_TO_TARGETS, *_TOKENIZE], PRETRAIN_FEATURES)


def add_instruction_task(name: str, records: Callable[[str], Iterable[Mapping[str, Any]]],
                         splits: Iterable[str], template: str = INSTRUCTION_TEMPLATE
                         ) -> seqio.Task:
    """A task over {instruction, input, output} records, formatted with ``template``."""

    def formatted(split: str) -> Iterator[dict[str, str]]:
        for record in records(split):
            prompt, response = instructions.format_prompt(record, template)
            yield {"inputs": prompt, "targets": response}

    return add_task(name, RecordSource(formatted, {"inputs": str, "targets": str}, splits),
                    _TOKENIZE, INSTRUCTION_FEATURES)


def add_multiple_choice_task(name: str, examples: Callable[[str], Iterable[Mapping[str, Any]]],
                             splits: Iterable[str]) -> seqio.Task:
    """One row per candidate of each templated example; the scorer groups rows by
    ``example_id``."""

    def candidates(split: str) -> Iterator[dict[str, Any]]:
        for example in examples(split):
            for i, candidate in enumerate(example["candidates"]):
                yield {"inputs": candidate["prompt"], "targets": candidate["scored"],
                       "example_id": str(example["id"]), "candidate": i,
                       "label": int(example["label"]),
                       "labels": ",".join(str(x) for x in example["labels"])}

    fields = {"inputs": str, "targets": str, "example_id": str, "candidate": int, "label": int,
              "labels": str}
    return add_task(name, RecordSource(candidates, fields, splits),
                    [seqio.preprocessors.tokenize], SCORING_FEATURES, shuffle_buffer_size=None)


def add_generation_task(name: str, examples: Callable[[str], Iterable[Mapping[str, Any]]],
                        splits: Iterable[str]) -> seqio.Task:
    """Prompt and reference of each templated example; everything else the metric needs
    travels as JSON in ``extra``."""

    def prompts(split: str) -> Iterator[dict[str, Any]]:
        for example in examples(split):
            example = dict(example)
            references = example.pop("references", None)
            reference = example.pop("reference", None) or references[0]
            yield {"inputs": example.pop("prompt"), "targets": reference,
                   "example_id": str(example.pop("id")),
                   "extra": json.dumps({"references": references or [reference], **example},
                                       ensure_ascii=False)}

    fields = {"inputs": str, "targets": str, "example_id": str, "extra": str}
    return add_task(name, RecordSource(prompts, fields, splits), _TOKENIZE,
                    GENERATION_FEATURES, shuffle_buffer_size=None)


def _templated(records: Callable[[str], Iterable[Mapping[str, Any]]],
               template: Callable[[Mapping[str, Any]], Mapping[str, Any]]):
    return lambda split: (template(record) for record in records(split))


# --- the embedded default ------------------------------------------------------------------

add_pretraining_task("embedded_text", embedded.prose_documents, EMBEDDED_SPLITS)
add_pretraining_task("embedded_code", embedded.code_documents, EMBEDDED_SPLITS)
add_instruction_task("embedded_text_instructions", embedded.text_instructions, EMBEDDED_SPLITS)
add_instruction_task("embedded_code_instructions", embedded.code_instructions, EMBEDDED_SPLITS)
add_multiple_choice_task("eval_embedded_codeqa", _templated(embedded.code_qa_pairs,
                                                           eval_templates.cosqa_candidates),
                         EMBEDDED_SPLITS)


def _embedded_generation(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": record["source"], "prompt": record["instruction"] + "\n",
            "reference": record["output"]}


add_generation_task("eval_embedded_codegen",
                    _templated(embedded.code_instructions, _embedded_generation),
                    EMBEDDED_SPLITS)
add_generation_task("eval_embedded_codecomplete", embedded.code_completions, EMBEDDED_SPLITS)

# --- the paper's evaluation benchmarks (local copies of the original files) ---------------

_MC = eval_templates.MULTIPLE_CHOICE_TEMPLATES
_GEN = eval_templates.GENERATION_TEMPLATES
_MBPP_SPLITS = {"all": {"variant": "sanitized", "split": None},
                **{s: {"variant": "sanitized", "split": s}
                   for s in ("prompt", "train", "validation", "test")}}
BENCHMARKS: dict[str, Benchmark] = {
    "eval_logic": Benchmark(benchmarks.read_logic, _MC["logic"],
                            {"validation": {"split": "val"}, "train": {"split": "dev"}},
                            "validation"),
    "eval_jecqa_kd": Benchmark(benchmarks.read_jecqa, _MC["jecqa"], {"test": {"subset": "kd"}},
                               "test"),
    "eval_jecqa_ca": Benchmark(benchmarks.read_jecqa, _MC["jecqa"], {"test": {"subset": "ca"}},
                               "test"),
    "eval_scienceqa": Benchmark(benchmarks.read_scienceqa, _MC["scienceqa"],
                                {s: {"split": s if s != "validation" else "val"}
                                 for s in ("train", "validation", "test")}, "test"),
    "eval_scienceqa_cot": Benchmark(benchmarks.read_scienceqa, _MC["scienceqa_cot"],
                                    {"test": {"split": "test"}}, "test"),
    "eval_ekar": Benchmark(benchmarks.read_ekar, _MC["ekar"],
                           {s: {"split": s} for s in ("train", "validation", "test")}, "test"),
    "eval_ekar_cot": Benchmark(benchmarks.read_ekar, _MC["ekar_cot"], {"test": {"split": "test"}},
                               "test"),
    "eval_cosqa": Benchmark(benchmarks.read_cosqa, _MC["cosqa"],
                            {"validation": {"split": "dev"}}, "validation"),
    "eval_c3": Benchmark(benchmarks.read_c3, _MC["c3"],
                         {"validation": {"subset": "d", "split": "dev"}}, "validation"),
    "eval_ocnli": Benchmark(benchmarks.read_ocnli, _MC["ocnli"], {"validation": {"split": "dev"}},
                            "validation"),
    "eval_cmnli": Benchmark(benchmarks.read_cmnli, _MC["cmnli"], {"validation": {"split": "dev"}},
                            "validation"),
    # The paper scored all 427 sanitized problems ("all"); the other splits are the task-id
    # ranges of Austin et al. Pass@k defaults to the sanitized test split (257).
    "eval_mbpp": Benchmark(benchmarks.read_mbpp, _GEN["mbpp"], _MBPP_SPLITS, "all"),
    "eval_mbpp_with_tests": Benchmark(benchmarks.read_mbpp, _GEN["mbpp_with_tests"],
                                      _MBPP_SPLITS, "test"),
    "eval_dureader": Benchmark(benchmarks.read_dureader, _GEN["dureader"],
                               {"validation": {"split": "dev"}}, "validation"),
}

for _name, _benchmark in BENCHMARKS.items():
    if _benchmark.generation:
        add_generation_task(_name, _benchmark.examples, tuple(_benchmark.splits))
    else:
        add_multiple_choice_task(_name, _benchmark.examples, tuple(_benchmark.splits))

# Every other task is evaluated on its validation split unless EvalConfig.split says otherwise.
DEFAULT_EVAL_SPLIT = "validation"


def default_split(name: str) -> str:
    """The split a task is evaluated on by default: the one the paper evaluated."""
    return BENCHMARKS[name].default_split if name in BENCHMARKS else DEFAULT_EVAL_SPLIT


# --- the paper's pre-training corpora and instruction sets (local copies) ------------------
# Sets without a released split are split by a stable hash of each record's key.
HASH_VALIDATION_FRACTION = corpora.HASH_VALIDATION_FRACTION  # 0.005, shared with TFDS builders


def _hash_split(records: Callable[[], Iterable[Mapping[str, Any]]], key: str):
    def by_split(split: str) -> Iterator[Mapping[str, Any]]:
        for record in records():
            if corpora.split_by_hash(str(record[key]), HASH_VALIDATION_FRACTION) == split:
                yield record
    return by_split


def _chain(*readers: Callable[[str], Iterable[Mapping[str, Any]]]):
    def records(split: str) -> Iterator[Mapping[str, Any]]:
        for reader in readers:
            yield from reader(split)
    return records


def _cosqa_instruction_records(split: str) -> Iterator[Mapping[str, Any]]:
    raw = ({"idx": r["id"], "doc": r["query"], "code": r["code"], "label": r["label"]}
           for r in benchmarks.read_cosqa(split="train"))
    return _hash_split(lambda: instructions.cosqa_instructions(raw), "instruction")(split)


def _mbpp_instruction_records(split: str) -> Iterator[Mapping[str, Any]]:
    """The paper's code instructions include the MBPP *train* split (task ids 601-974)."""
    raw = ({"task_id": r["task_id"], "text": r["prompt"], "code": r["code"],
            "test_list": r["tests"]}
           for r in benchmarks.read_mbpp(variant="full", split="train"))
    return _hash_split(lambda: instructions.mbpp_instructions(raw), "instruction")(split)


PCLUE_SAMPLE_SIZE = 200_000  # the paper sampled 200K pCLUE examples at random
TRAIN_VALIDATION = ("train", "validation")

add_pretraining_task("codeparrot", _hash_split(corpora.read_codeparrot, "path"),
                     TRAIN_VALIDATION)
add_pretraining_task("text_corpus", _hash_split(
    lambda: corpora.read_text_dir(os.path.join(data_root(), "text_corpus")), "id"),
    TRAIN_VALIDATION)
add_pretraining_task("c4_en", lambda split: corpora.read_tfds_text("c4/en", split),
                     TRAIN_VALIDATION)


# The same two corpora prepared once into sharded TFDS datasets (seqio_tasks/tfds_builders,
# same documents and splits), read from $CODEREASON_TFDS_DIR or DATA_ROOT/tensorflow_datasets,
# local or gs://; with seqio.ShardInfo each host opens only its own files.
def add_prepared_pretraining_task(name: str, tfds_name: str, prepare_hint: str = ""
                                  ) -> seqio.Task:
    source = PreparedTfdsSource(tfds_name, TRAIN_VALIDATION, prepare_hint=prepare_hint)
    return add_task(name, source, [_TEXT_TO_TARGETS, *_TOKENIZE], PRETRAIN_FEATURES)


add_prepared_pretraining_task("codeparrot_tfds", tfds_builders.tfds_name("codeparrot"),
                              "--dataset=codeparrot --manual_dir=DIR_OF_JSON_GZ_SHARDS ")
add_prepared_pretraining_task("text_corpus_tfds", tfds_builders.tfds_name("text_corpus", "file"),
                              "--dataset=text_corpus --manual_dir=TEXT_CORPUS_DIR ")

_ALPACA = {name: _hash_split(functools.partial(instructions.read_alpaca_style, name),
                             "instruction")
           for name in ("alpaca_gpt4_en", "alpaca_gpt4_zh", "code_alpaca")}
for _name, _records in _ALPACA.items():
    add_instruction_task(_name, _records, TRAIN_VALIDATION)
_PCLUE = _hash_split(lambda: instructions.sample(instructions.read_pclue(), PCLUE_SAMPLE_SIZE,
                                                 seed=0), "instruction")
add_instruction_task("pclue", _PCLUE, TRAIN_VALIDATION)
add_instruction_task("cosqa_instructions", _cosqa_instruction_records, TRAIN_VALIDATION)
add_instruction_task("mbpp_instructions", _mbpp_instruction_records, TRAIN_VALIDATION)
# The paper's two pools: text instructions (Alpaca-GPT-4 en+zh, 200K of pCLUE) and code
# instructions (CodeAlpaca, CoSQA train and MBPP train as instructions).
add_instruction_task("paper_text_instructions",
                     _chain(_ALPACA["alpaca_gpt4_en"], _ALPACA["alpaca_gpt4_zh"], _PCLUE),
                     TRAIN_VALIDATION)
add_instruction_task("paper_code_instructions",
                     _chain(_ALPACA["code_alpaca"], _cosqa_instruction_records,
                            _mbpp_instruction_records), TRAIN_VALIDATION)
