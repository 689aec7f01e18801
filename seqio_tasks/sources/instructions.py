"""Instruction-tuning sets, all normalized to one record schema.

Every reader and converter yields ``{"instruction": str, "input": str, "output": str,
"source": str}``. ``input`` is the optional context (``""`` when there is none), ``output`` the
response the loss is computed on, ``source`` the data set's short name (``alpaca``,
``alpaca_gpt4_en``, ``alpaca_gpt4_zh``, ``code_alpaca``, ``pclue``, ``cosqa``, ``mbpp``).

The paper (§1.3) used Alpaca-GPT-4, 200K records sampled from pCLUE, CodeAlpaca-20k, and its own
conversion of the CosQA and MBPP training sets into PromptCLUE's text-to-text format. That
conversion was not released, so ``cosqa_instructions`` / ``mbpp_instructions`` are OUR
construction; their wording is defined in this module.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Iterable, Iterator, Mapping, Sequence, TypeVar

from seqio_tasks.sources.corpora import resolve_data_files
from seqio_tasks.sources.files import DataFileError, field, iter_json_lines, load_json, \
    require_file

Instruction = dict[str, str]
T = TypeVar("T")

# Alpaca-format files (a JSON array of {instruction, input, output}): name -> (path under
# data_root(), where to get it).
ALPACA_STYLE_DATASETS: dict[str, tuple[str, str]] = {
    "alpaca": ("alpaca/alpaca_data.json",
               "Download alpaca_data.json from github.com/tatsu-lab/stanford_alpaca."),
    "alpaca_gpt4_en": ("alpaca_gpt4/alpaca_gpt4_data.json",
                       "Download data/alpaca_gpt4_data.json from "
                       "github.com/Instruction-Tuning-with-GPT-4/GPT-4-LLM."),
    "alpaca_gpt4_zh": ("alpaca_gpt4/alpaca_gpt4_data_zh.json",
                       "Download data/alpaca_gpt4_data_zh.json from "
                       "github.com/Instruction-Tuning-with-GPT-4/GPT-4-LLM."),
    "code_alpaca": ("code_alpaca/code_alpaca_20k.json",
                    "Download code_alpaca_20k.json from github.com/sahil280114/codealpaca "
                    "(also on the Hugging Face Hub as sahil2801/CodeAlpaca-20k)."),
}
PCLUE_HOW_TO_GET = ("Download the pCLUE JSON-lines files (pCLUE_train_*.json, pCLUE_dev.json, ...) "
                    "from github.com/CLUEbenchmark/pCLUE into one directory.")
PCLUE_TRAIN_PATTERN = "pCLUE_train_*.json"

def _record(instruction: str, input_: str, output: str, source: str) -> Instruction:
    return {"instruction": instruction, "input": input_, "output": output, "source": source}


# --------------------------------------------------------------------------- file readers


def read_alpaca_style(dataset: str, path: str | None = None) -> Iterator[Instruction]:
    """Records of an Alpaca-format JSON array (Alpaca, Alpaca-GPT-4 en/zh, CodeAlpaca-20k).

    ``dataset`` is a key of ``ALPACA_STYLE_DATASETS`` and becomes ``source``; ``path``
    defaults to that data set's file under ``data_root()``.
    """
    if dataset not in ALPACA_STYLE_DATASETS:
        raise ValueError(f"unknown Alpaca-format data set {dataset!r}; choose one of "
                         f"{sorted(ALPACA_STYLE_DATASETS)}.")
    relpath, how_to_get = ALPACA_STYLE_DATASETS[dataset]
    path = require_file(path, relpath, dataset, how_to_get)
    records = load_json(path)
    if not isinstance(records, list):
        raise DataFileError(f"{path}: expected a JSON array of {{instruction, input, output}} "
                            f"objects, got {type(records).__name__}.")
    return _iter_alpaca(records, path, dataset)


def _iter_alpaca(records: list[Any], path: str, source: str) -> Iterator[Instruction]:
    for index, record in enumerate(records):
        where = f"{path} record {index}"
        if not isinstance(record, dict):
            raise DataFileError(f"{where}: expected a JSON object, got {type(record).__name__}.")
        yield _record(field(record, "instruction", str, where), field(record, "input", str, where),
                      field(record, "output", str, where), source)


def read_pclue(paths: str | Sequence[str] | None = None, *, pattern: str = PCLUE_TRAIN_PATTERN,
               source: str = "pclue") -> Iterator[Instruction]:
    """PromptCLUE-format JSON lines (``{"input", "target", ...}``), e.g. pCLUE's train files.

    pCLUE's ``input`` already holds the task prompt, options and "答案：", so it becomes the
    ``instruction`` with an empty ``input``; ``target`` is the ``output``. ``answer_choices``
    and ``type`` are not needed and not required. ``paths``: a file, a directory (files named
    like ``pattern``, natural order: ``_2`` before ``_10``), a glob or a list; ``None`` means
    ``data_root()/pclue``.
    """
    files = resolve_data_files(paths, default_relpath="pclue", dataset="pCLUE",
                               how_to_get=PCLUE_HOW_TO_GET, dir_patterns=(pattern,))
    return _iter_pclue(files, source)


def _iter_pclue(files: list[str], source: str) -> Iterator[Instruction]:
    for path in files:
        for lineno, record in iter_json_lines(path):
            where = f"{path}:{lineno}"
            yield _record(field(record, "input", str, where), "",
                          field(record, "target", str, where), source)


def sample(records: Iterable[T], n: int, seed: int) -> list[T]:
    """``n`` records drawn uniformly without replacement, deterministic for a seed.

    Reservoir sampling, so a 1.2M-record stream needs memory for ``n`` records only, and a list
    or a generator of the same records gives the same sample. The sample keeps input order.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0.")
    rng = random.Random(seed)
    reservoir: list[tuple[int, T]] = []
    count = 0
    for index, record in enumerate(records):
        count += 1
        if index < n:
            reservoir.append((index, record))
        else:
            slot = rng.randrange(index + 1)
            if slot < n:
                reservoir[slot] = (index, record)
    if count < n:
        raise ValueError(f"asked for a sample of {n} records but there are only {count}.")
    reservoir.sort(key=lambda pair: pair[0])
    return [record for _, record in reservoir]


# ------------------------------------------------------------ our CosQA / MBPP conversion

# OUR wording (the paper's is unknown). "en" uses the paper's CosQA evaluation labels
# ("Answered code is correct/wrong"); "zh" follows PromptCLUE's Chinese prompt style.
COSQA_TEMPLATES: dict[str, tuple[str, str, str]] = {
    # language: (instruction template, output if label == 1, output if label == 0)
    "en": ("Does the following Python code answer the query?\nQuery: {doc}\nCode:\n{code}\n"
           "Options: correct, wrong\nAnswer:", "correct", "wrong"),
    "zh": ("判断下面的 Python 代码是否回答了问题。\n问题：{doc}\n代码：\n{code}\n选项：是，否\n答案：",
           "是", "否"),
}
# OUR wording: the task text, then (optionally) its assert statements, one a line.
MBPP_TESTS_HEADER = "Your code should pass these tests:"


def cosqa_instructions(records: Iterable[Mapping[str, Any]], *, language: str = "en",
                       origin: str = "cosqa") -> Iterator[Instruction]:
    """CosQA pairs (raw fields ``idx, doc, code, label``) as yes/no instruction records.

    ``origin`` (e.g. the file name) goes into error messages with the record index.
    """
    if language not in COSQA_TEMPLATES:
        raise ValueError(f"language={language!r}; choose one of {sorted(COSQA_TEMPLATES)}.")
    template, yes, no = COSQA_TEMPLATES[language]
    for index, record in enumerate(records):
        where = f"{origin} record {index}"
        doc = field(record, "doc", str, where)
        code = field(record, "code", str, where)
        label = field(record, "label", int, where)
        if label not in (0, 1):
            raise DataFileError(f"{where}: field 'label' should be 0 or 1, got {label!r}.")
        yield _record(template.format(doc=doc, code=code), "", yes if label == 1 else no, "cosqa")


def mbpp_instructions(records: Iterable[Mapping[str, Any]], *, include_tests: bool = True,
                      origin: str = "mbpp") -> Iterator[Instruction]:
    """MBPP problems (full: ``text``; sanitized: ``prompt``) as code-generation records.

    instruction = the task text, stripped (+ the asserts when ``include_tests``); output = the
    reference code with ``\\r\\n`` and lone ``\\r`` line ends (both occur in mbpp.jsonl) made
    ``\\n``, as Python itself reads them. Filter to the train split first with
    ``benchmarks.mbpp_split(task_id) == "train"``: the rest is evaluation data.
    """
    for index, record in enumerate(records):
        where = f"{origin} record {index}"
        text_field = "text" if "text" in record else "prompt"
        if text_field not in record:
            raise DataFileError(f"{where}: missing field 'text' (full MBPP) or 'prompt' "
                                f"(sanitized MBPP) (fields present: {sorted(record)}).")
        text = field(record, text_field, str, where).strip()
        code = field(record, "code", str, where).replace("\r\n", "\n").replace("\r", "\n")
        instruction = text
        if include_tests:
            tests = field(record, "test_list", list, where)
            for i, test in enumerate(tests):
                if not isinstance(test, str):
                    raise DataFileError(f"{where}: field 'test_list' item {i} should be str, "
                                        f"got {type(test).__name__}.")
            instruction = "\n".join([text, MBPP_TESTS_HEADER, *tests])
        yield _record(instruction, "", code, "mbpp")


# ------------------------------------------------------------------------ prompt templates


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """Prompt text for records with and without an ``input``; ``{instruction}``/``{input}``."""

    with_input: str
    without_input: str


PROMPT_TEMPLATES: dict[str, PromptTemplate] = {
    # What the paper's released preprocessing does: the record's text verbatim, no wrapper.
    "paper": PromptTemplate(with_input="{instruction}\n{input}", without_input="{instruction}"),
    # The standard Stanford Alpaca template.
    "alpaca_en": PromptTemplate(
        with_input=("Below is an instruction that describes a task, paired with an input that "
                    "provides further context. Write a response that appropriately completes "
                    "the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
                    "### Response:"),
        without_input=("Below is an instruction that describes a task. Write a response that "
                       "appropriately completes the request.\n\n### Instruction:\n{instruction}"
                       "\n\n### Response:")),
    # Our Chinese rendering of the same, with the section names of the paper's repo.
    "alpaca_zh": PromptTemplate(
        with_input=("以下是一个描述任务的指令，并附有一个提供更多上下文的输入。请写出一个恰当完成该请求的响应。"
                    "\n\n### 指令:\n{instruction}\n\n### 输入:\n{input}\n\n### 响应:"),
        without_input=("以下是一个描述任务的指令。请写出一个恰当完成该请求的响应。"
                       "\n\n### 指令:\n{instruction}\n\n### 响应:")),
}


def format_prompt(record: Mapping[str, Any], template: str) -> tuple[str, str]:
    """(prompt, response) of an instruction record; the loss goes on the response only."""
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; choose one of "
                         f"{sorted(PROMPT_TEMPLATES)}.")
    where = f"{record.get('source', 'instruction')} record"
    instruction = field(record, "instruction", str, where)
    input_ = field(record, "input", str, where)
    output = field(record, "output", str, where)
    chosen = PROMPT_TEMPLATES[template]
    if input_:
        return chosen.with_input.format(instruction=instruction, input=input_), output
    return chosen.without_input.format(instruction=instruction), output
