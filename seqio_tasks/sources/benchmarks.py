"""Readers of the evaluation benchmarks in the formats their authors released.

One ``read_<name>`` per data set. Each returns a :class:`Records` (a plain ``list`` of
normalized dicts holding only str/int/list values) so that the prompt templates in
``seqio_tasks/eval_templates.py`` never see a file format. With ``path=None`` the file is looked
up under the data root (``$CODEREASON_DATA_DIR``, see ``files.py``); a missing file raises a
:class:`DataFileError` saying which file to fetch from where and where to put it.

Malformed records raise :class:`DataFileError` naming the file, the line (JSON lines / CSV) or
the record index or id (JSON arrays), and the field. Nothing is dropped silently. The only
records that are dropped are those the paper's own loaders drop by rule, and each rule is an
explicit option whose drops are counted in ``Records.skipped`` (reason -> count) and logged:

- ScienceQA: ``text_only`` drops items with an image (``"has_image"``);
  ``require_lecture_and_solution`` drops items whose ``lecture`` or ``solution`` is empty, as
  the paper's loader does (``"empty_lecture_or_solution"``).
- OCNLI / CMNLI: items whose label is not entailment/neutral/contradiction (``"-"``, missing,
  null) are dropped, as the paper's loader does (``"label_outside_3_classes"``).

Ids are normalized to ``str`` (MBPP keeps its integer ``task_id``).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from typing import Any, Iterable

from seqio_tasks.sources.files import (DataFileError, field, iter_json_lines, load_json,
                                       require_file)

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGH"
NLI_LABELS = ("entailment", "neutral", "contradiction")  # index = label id
MBPP_SPLITS = {  # task_id ranges (inclusive) of the splits of Austin et al. 2021
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}


class Records(list):
    """A list of normalized records plus ``skipped``: reason -> number of items dropped by rule.

    A subclass of ``list`` so callers that only want the records need not unpack anything, while
    the counts stay attached to the result they describe.
    """

    def __init__(self, items: Iterable[dict[str, Any]] = (),
                 skipped: dict[str, int] | None = None):
        super().__init__(items)
        self.skipped: dict[str, int] = dict(skipped or {})


def _finish(records: list[dict[str, Any]], skipped: dict[str, int], path: str) -> Records:
    kept = {k: v for k, v in skipped.items() if v}
    if kept:
        logger.info("%s: kept %d records, skipped by rule: %s", path, len(records), kept)
    return Records(records, kept)


def _as_id(record: dict[str, Any], name: str, where: str) -> str:
    return str(field(record, name, (str, int), where))


def _str_list(record: dict[str, Any], name: str, where: str, min_len: int = 0) -> list[str]:
    values = field(record, name, list, where)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise DataFileError(f"{where}: field {name!r}[{i}] should be str, got "
                                f"{type(value).__name__} ({str(value)[:60]!r}).")
    if len(values) < min_len:
        raise DataFileError(f"{where}: field {name!r} should have at least {min_len} entries, "
                            f"got {len(values)}.")
    return list(values)


def _letter_index(letter: Any, n_choices: int, name: str, where: str) -> int:
    letters = LETTERS[:n_choices]
    if not isinstance(letter, str) or len(letter.strip()) != 1 or letter.strip() not in letters:
        raise DataFileError(f"{where}: field {name!r} should be one of {list(letters)}, got "
                            f"{letter!r}.")
    return letters.index(letter.strip())


# ----------------------------------------------------------------------------- Logic (C-Eval)

CEVAL_COLUMNS = ("id", "question", "A", "B", "C", "D")


def read_logic(path: str | None = None, *, split: str = "val") -> Records:
    """C-Eval ``logic`` subject, CSV ``logic_{split}.csv`` (the paper evaluated val, 22 items).

    Records: ``{id, question, choices: [A, B, C, D], label, explanation}``. ``explanation`` is
    the dev split's column ('' elsewhere). The test split's answers are hidden: with
    ``split="test"`` an empty or absent answer gives ``label = -1``; elsewhere it is an error.
    """
    path = require_file(
        path, f"ceval/{split}/logic_{split}.csv", "C-Eval logic",
        f"Download ceval-exam.zip from the Hugging Face dataset ceval/ceval-exam (or the C-Eval "
        f"GitHub README's link) and take {split}/logic_{split}.csv.")
    records = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        needed = CEVAL_COLUMNS + (() if split == "test" else ("answer",))
        missing = [c for c in needed if c not in columns]
        if missing:
            raise DataFileError(f"{path}:1: header lacks column(s) {missing}; expected "
                                f"{list(CEVAL_COLUMNS) + ['answer']} (got {columns}).")
        last_line = reader.line_num
        for row in reader:
            where = f"{path}:{last_line + 1}"
            last_line = reader.line_num
            if None in row:
                raise DataFileError(f"{where}: row has {len(columns) + len(row[None])} values "
                                    f"but the header has {len(columns)} columns.")
            for column in needed:
                if row.get(column) is None:
                    raise DataFileError(f"{where}: field {column!r} is missing (row too short).")
            answer = (row.get("answer") or "").strip()
            if split == "test" and not answer:
                label = -1
            else:
                label = _letter_index(answer, 4, "answer", where)
            records.append({
                "id": row["id"].strip(),
                "question": row["question"],
                "choices": [row[c] for c in "ABCD"],
                "label": label,
                "explanation": row.get("explanation") or "",
            })
    return _finish(records, {}, path)


# ----------------------------------------------------------------------------- JEC-QA

_OPTION_PREFIX = re.compile(r"^\s*[(（]\s*([A-Z])\s*[)）]\s*")


def read_jecqa(path: str | None = None, *, subset: str = "kd") -> Records:
    """JEC-QA, either AGIEval's 1000-item ``jec-qa-{kd,ca}.jsonl`` or the original JSON lines.

    The format is detected per record: AGIEval has ``question``/``options``/``label``, the
    original has ``statement``/``option_list``/``answer``. Records:
    ``{id, question, choices: [4 option texts without the "(A)" prefix], labels: [int, ...]}``,
    ``labels`` sorted, one or more gold indices (JEC-QA questions may have several answers).
    AGIEval lines carry no id, so their id is ``"{file stem}-{0-based record index}"``.
    """
    path = require_file(
        path, f"jecqa/jec-qa-{subset}.jsonl", f"JEC-QA ({subset.upper()})",
        f"Download data/v1/jec-qa-{subset}.jsonl from the GitHub repository "
        "ruixiangcui/AGIEval (or a JSON-lines file of the original JEC-QA from "
        "jecqa.thunlp.org).")
    stem = os.path.basename(path).split(".")[0]
    records = []
    for index, (lineno, obj) in enumerate(iter_json_lines(path)):
        where = f"{path}:{lineno}"
        if "statement" in obj:
            records.append(_jecqa_original(obj, where))
        elif "options" in obj:
            records.append(_jecqa_agieval(obj, where, f"{stem}-{index}"))
        else:
            raise DataFileError(f"{where}: neither a JEC-QA record (statement, option_list, "
                                "answer) nor an AGIEval record (question, options, label); "
                                f"fields present: {sorted(obj)}.")
    return _finish(records, {}, path)


def _gold_letters(value: Any, name: str, where: str) -> list[int]:
    letters = [value] if isinstance(value, str) else value
    if not isinstance(letters, list) or not letters:
        raise DataFileError(f"{where}: field {name!r} should be a letter or a non-empty list of "
                            f"letters, got {value!r}.")
    return sorted({_letter_index(letter, 4, name, where) for letter in letters})


def _jecqa_original(obj: dict[str, Any], where: str) -> dict[str, Any]:
    options = field(obj, "option_list", dict, where)
    if sorted(options) != list("ABCD"):
        raise DataFileError(f"{where}: field 'option_list' should have keys A-D, got "
                            f"{sorted(options)}.")
    choices = [field(options, k, str, f"{where} option_list") for k in "ABCD"]
    return {
        "id": _as_id(obj, "id", where),
        "question": field(obj, "statement", str, where),
        "choices": choices,
        "labels": _gold_letters(field(obj, "answer", (list, str), where), "answer", where),
    }


def _jecqa_agieval(obj: dict[str, Any], where: str, record_id: str) -> dict[str, Any]:
    passage = obj.get("passage")
    if passage:  # JEC-QA items in AGIEval have passage null; anything else is another task
        raise DataFileError(f"{where}: field 'passage' should be null for JEC-QA, got "
                            f"{str(passage)[:60]!r}.")
    options = _str_list(obj, "options", where)
    if len(options) != 4:
        raise DataFileError(f"{where}: field 'options' should have 4 entries, got "
                            f"{len(options)}.")
    choices = []
    for i, option in enumerate(options):
        match = _OPTION_PREFIX.match(option)
        if not match or match.group(1) != LETTERS[i]:
            raise DataFileError(f"{where}: field 'options'[{i}] should start with "
                                f"'({LETTERS[i]})', got {option[:30]!r}.")
        choices.append(option[match.end():])
    return {
        "id": record_id,
        "question": field(obj, "question", str, where),
        "choices": choices,
        "labels": _gold_letters(field(obj, "label", (list, str), where), "label", where),
    }


# ----------------------------------------------------------------------------- ScienceQA

SCIENCEQA_FIELD_SPLITS = ("train", "val", "test")  # values of each problem's "split" field


def read_scienceqa(path: str | None = None, *, split: str | None = "test",
                   splits_path: str | None = None, text_only: bool = True,
                   require_lecture_and_solution: bool = True) -> Records:
    """ScienceQA ``problems.json`` (id -> problem), one split, in file (or pid_splits) order.

    The split is taken from ``pid_splits.json`` when ``splits_path`` is given or the split is
    not one of train/val/test (e.g. minival, minitest), else from each problem's ``split``
    field; ``split=None`` keeps all problems. Then two counted filters: ``text_only`` drops
    problems with an image (the paper ignores images), ``require_lecture_and_solution`` drops
    those with an empty lecture or solution (the paper's loader does; its templates need both).
    A problem hit by both is counted under ``has_image`` only.
    Records: ``{id, question, choices, label, hint, lecture, solution, subject}``.
    """
    path = require_file(
        path, "scienceqa/problems.json", "ScienceQA",
        "Download data/scienceqa/problems.json of the GitHub repository lupantech/ScienceQA "
        "(its README links the Google Drive / Hugging Face copies).")
    problems = load_json(path)
    if not isinstance(problems, dict):
        raise DataFileError(f"{path}: expected a JSON object mapping problem id -> problem, got "
                            f"{type(problems).__name__}.")
    if split is None:
        pids = list(problems)
    elif splits_path is None and split in SCIENCEQA_FIELD_SPLITS:
        pids = [pid for pid, p in problems.items()
                if field(p, "split", str, f"{path}: problem {pid!r}") == split]
    else:
        splits_path = require_file(
            splits_path, "scienceqa/pid_splits.json", "ScienceQA splits",
            "Download data/scienceqa/pid_splits.json of the GitHub repository "
            "lupantech/ScienceQA.")
        splits = load_json(splits_path)
        if not isinstance(splits, dict) or split not in splits:
            names = sorted(splits) if isinstance(splits, dict) else type(splits).__name__
            raise DataFileError(f"{splits_path}: no split {split!r} (splits: {names}).")
        pids = [str(pid) for pid in splits[split]]
        unknown = [pid for pid in pids if pid not in problems]
        if unknown:
            raise DataFileError(f"{splits_path}: split {split!r} names {len(unknown)} problem "
                                f"id(s) absent from {path}, e.g. {unknown[:3]}.")
    records, skipped = [], {"has_image": 0, "empty_lecture_or_solution": 0}
    for pid in pids:
        where = f"{path}: problem {pid!r}"
        problem = problems[pid]
        if not isinstance(problem, dict):
            raise DataFileError(f"{where}: expected an object, got {type(problem).__name__}.")
        record = _scienceqa_record(pid, problem, where)
        image = problem.get("image")
        if image is not None and not isinstance(image, str):
            raise DataFileError(f"{where}: field 'image' should be a file name or null, got "
                                f"{image!r}.")
        if text_only and image:
            skipped["has_image"] += 1
        elif require_lecture_and_solution and not (record["lecture"] and record["solution"]):
            skipped["empty_lecture_or_solution"] += 1
        else:
            records.append(record)
    return _finish(records, skipped, path)


def _scienceqa_record(pid: str, problem: dict[str, Any], where: str) -> dict[str, Any]:
    choices = _str_list(problem, "choices", where, min_len=2)
    answer = field(problem, "answer", int, where)
    if isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise DataFileError(f"{where}: field 'answer' should index 'choices' "
                            f"(0..{len(choices) - 1}), got {answer!r}.")
    return {
        "id": str(pid),
        "question": field(problem, "question", str, where),
        "choices": choices,
        "label": answer,
        "hint": field(problem, "hint", str, where),
        "lecture": field(problem, "lecture", str, where),
        "solution": field(problem, "solution", str, where),
        "subject": field(problem, "subject", str, where),
    }


# ----------------------------------------------------------------------------- E-KAR

def read_ekar(path: str | None = None, *, split: str = "test") -> Records:
    """Chinese E-KAR (HF ``jiangjiechen/ekar_chinese``), JSON lines ``{split}.json``.

    Records: ``{id, question, choices: [texts], label: index of answerKey, explanation}``;
    ``explanation`` is the list of strings (query first, then one per option) the CoT template
    uses. A blank ``answerKey`` (the old blind test file) is an error.
    """
    path = require_file(
        path, f"ekar_chinese/{split}.json", "E-KAR (Chinese)",
        f"Download {split}.json of the Hugging Face dataset jiangjiechen/ekar_chinese "
        "(the version with test answers released).")
    records = []
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        choices = field(obj, "choices", dict, where)
        letters = _str_list(choices, "label", f"{where} choices")
        texts = _str_list(choices, "text", f"{where} choices", min_len=2)
        if len(letters) != len(texts):
            raise DataFileError(f"{where}: field 'choices' has {len(letters)} labels but "
                                f"{len(texts)} texts.")
        answer = field(obj, "answerKey", str, where)
        if answer not in letters:
            raise DataFileError(f"{where}: field 'answerKey' should be one of {letters}, got "
                                f"{answer!r}.")
        records.append({
            "id": _as_id(obj, "id", where),
            "question": field(obj, "question", str, where),
            "choices": texts,
            "label": letters.index(answer),
            "explanation": _str_list(obj, "explanation", where),
        })
    return _finish(records, {}, path)


# ----------------------------------------------------------------------------- CosQA

def read_cosqa(path: str | None = None, *, split: str = "dev") -> Records:
    """CoSQA ``cosqa-{split}.json``, a JSON array of query/code pairs (the paper: dev, 604).

    Records: ``{id, query, code, label}``; label 1 = the code answers the query, 0 = it doesn't.
    """
    path = require_file(
        path, f"cosqa/cosqa-{split}.json", "CoSQA",
        f"Download data/qa/cosqa-{split}.json of the GitHub repository Jun-jie-Huang/CoCLR (also "
        "in microsoft/CodeXGLUE, Text-Code/NL-code-search-WebQuery).")
    items = _json_array(path)
    records = []
    for index, obj in enumerate(items):
        where = f"{path}: record {index}"
        obj = _json_object(obj, where)
        label = field(obj, "label", int, where)
        if label not in (0, 1) or isinstance(label, bool):
            raise DataFileError(f"{where}: field 'label' should be 0 or 1, got {label!r}.")
        records.append({
            "id": _as_id(obj, "idx", where),
            "query": field(obj, "doc", str, where),
            "code": field(obj, "code", str, where),
            "label": label,
        })
    return _finish(records, {}, path)


def _json_array(path: str) -> list[Any]:
    data = load_json(path)
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON array, got {type(data).__name__}.")
    return data


def _json_object(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataFileError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
    return obj


# ----------------------------------------------------------------------------- MBPP

def mbpp_split(task_id: int) -> str:
    """The split of an MBPP task id (the same ranges hold for the full and sanitized files)."""
    for name, (low, high) in MBPP_SPLITS.items():
        if low <= task_id <= high:
            return name
    raise ValueError(f"MBPP task_id {task_id} is outside 1..974.")


def read_mbpp(path: str | None = None, *, variant: str | None = None,
              split: str | None = None) -> Records:
    """MBPP, full (``mbpp.jsonl``, 974) or sanitized (``sanitized-mbpp.json``, 427; the paper's).

    ``variant`` is "full" or "sanitized"; None means sanitized for the default path, else from
    the file name (``*.jsonl`` = full). ``split`` (prompt/test/validation/train) selects by
    task_id range; None keeps all. Records: ``{task_id, split, prompt, code, tests,
    setup_code, test_imports, challenge_tests}`` (full-only and sanitized-only fields are
    ''/[] in the other variant).
    """
    if variant is None:
        variant = "full" if path and ".jsonl" in os.path.basename(path) else "sanitized"
    if variant not in ("full", "sanitized"):
        raise ValueError(f"MBPP variant should be 'full' or 'sanitized', got {variant!r}.")
    if split is not None and split not in MBPP_SPLITS:
        raise ValueError(f"MBPP split should be one of {list(MBPP_SPLITS)} or None, got "
                         f"{split!r}.")
    name = "mbpp.jsonl" if variant == "full" else "sanitized-mbpp.json"
    path = require_file(
        path, f"mbpp/{name}", f"MBPP ({variant})",
        f"Download mbpp/{name} of the GitHub repository google-research/google-research.")
    if variant == "full":
        located = ((f"{path}:{lineno}", obj) for lineno, obj in iter_json_lines(path))
    else:
        located = ((f"{path}: record {i}", obj) for i, obj in enumerate(_json_array(path)))
    records = []
    for where, obj in located:
        record = _mbpp_record(_json_object(obj, where), variant, where)
        if split is None or record["split"] == split:
            records.append(record)
    return _finish(records, {}, path)


def _mbpp_record(obj: dict[str, Any], variant: str, where: str) -> dict[str, Any]:
    task_id = field(obj, "task_id", int, where)
    try:
        split = mbpp_split(task_id)
    except ValueError as err:
        raise DataFileError(f"{where}: field 'task_id': {err}") from None
    full = variant == "full"
    return {
        "task_id": task_id,
        "split": split,
        "prompt": field(obj, "text" if full else "prompt", str, where),
        "code": field(obj, "code", str, where),
        "tests": _str_list(obj, "test_list", where, min_len=1),
        "setup_code": field(obj, "test_setup_code", str, where) if full else "",
        "test_imports": [] if full else _str_list(obj, "test_imports", where),
        "challenge_tests": _str_list(obj, "challenge_test_list", where) if full else [],
    }


# ----------------------------------------------------------------------------- C3

def read_c3(path: str | None = None, *, subset: str = "d", split: str = "dev") -> Records:
    """C3 ``c3-{d,m}-{split}.json``: a JSON array of [dialogue lines, questions, document id].

    One record per question: ``{id: "{document id}#{question index}", context (lines joined
    with newlines), dialogue: [lines], question, choices, label}``. ``dialogue`` is kept because
    the paper's template joins the lines without a separator. An answer that is not among the
    choices is an error.
    """
    path = require_file(
        path, f"c3/c3-{subset}-{split}.json", "C3",
        f"Download data/c3-{subset}-{split}.json of the GitHub repository nlpdata/c3.")
    records = []
    for index, item in enumerate(_json_array(path)):
        where = f"{path}: item {index}"
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], (str, int))):
            raise DataFileError(f"{where}: expected [dialogue lines, questions, id], got "
                                f"{str(item)[:80]!r}.")
        doc_id = str(item[2])
        where = f"{where} (id {doc_id!r})"
        dialogue = _str_list({"dialogue": item[0]}, "dialogue", where, min_len=1)
        if not isinstance(item[1], list) or not item[1]:
            raise DataFileError(f"{where}: expected a non-empty list of questions, got "
                                f"{str(item[1])[:60]!r}.")
        for q_index, question in enumerate(item[1]):
            q_where = f"{where}, question {q_index}"
            question = _json_object(question, q_where)
            choices = _str_list(question, "choice", q_where, min_len=2)
            answer = field(question, "answer", str, q_where)
            if answer not in choices:
                raise DataFileError(f"{q_where}: field 'answer' {answer!r} is not among the "
                                    f"choices {choices}.")
            records.append({
                "id": f"{doc_id}#{q_index}",
                "context": "\n".join(dialogue),
                "dialogue": dialogue,
                "question": field(question, "question", str, q_where),
                "choices": choices,
                "label": choices.index(answer),
            })
    return _finish(records, {}, path)


# ----------------------------------------------------------------------------- OCNLI / CMNLI

def read_ocnli(path: str | None = None, *, split: str = "dev") -> Records:
    """OCNLI (CLUE) JSON lines ``{split}.json``; see :func:`_read_nli` for records and skips."""
    path = require_file(
        path, f"ocnli/{split}.json", "OCNLI",
        f"Download data/ocnli/{split}.json of the GitHub repository CLUEbenchmark/OCNLI.")
    return _read_nli(path)


def read_cmnli(path: str | None = None, *, split: str = "dev") -> Records:
    """CMNLI (CLUE) JSON lines ``{split}.json``; see :func:`_read_nli` for records and skips."""
    path = require_file(
        path, f"cmnli/{split}.json", "CMNLI",
        f"Download cmnli_public.zip from the CLUE benchmark (GitHub CLUEbenchmark/CLUE, "
        f"dataset list) and take cmnli_public/{split}.json.")
    return _read_nli(path)


def _read_nli(path: str) -> Records:
    """Records ``{id, premise, hypothesis, label}``, label 0/1/2 = entailment/neutral/contra.

    Items whose label is not one of those three ('-' = no annotator majority, missing, null) are
    skipped and counted under ``label_outside_3_classes``, as in the paper's loader. Lines
    without an ``id`` (CMNLI) get ``"{file stem}-{line}"``.
    """
    stem = os.path.basename(path).split(".")[0]
    records, skipped, other_labels = [], {"label_outside_3_classes": 0}, set()
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        premise = field(obj, "sentence1", str, where)
        hypothesis = field(obj, "sentence2", str, where)
        label = obj.get("label")
        if label not in NLI_LABELS:
            if label is not None and not isinstance(label, str):
                raise DataFileError(f"{where}: field 'label' should be a string, got "
                                    f"{label!r}.")
            skipped["label_outside_3_classes"] += 1
            other_labels.add(label)
            continue
        records.append({
            "id": _as_id(obj, "id", where) if "id" in obj else f"{stem}-{lineno}",
            "premise": premise,
            "hypothesis": hypothesis,
            "label": NLI_LABELS.index(label),
        })
    if other_labels:
        logger.info("%s: skipped labels %s", path, sorted(map(repr, other_labels)))
    return _finish(records, skipped, path)


# ----------------------------------------------------------------------------- DuReader

def read_dureader(path: str | None = None, *, split: str = "dev",
                  require_answers: bool = True) -> Records:
    """DuReader-robust, SQuAD-style JSON ``{data: [{paragraphs: [{context, qas}]}]}``.

    All ``data`` entries are read (the paper's loader reads ``data[0]``, which in the released
    dev file holds every paragraph). Records: ``{id, context, question, answers: [texts]}``.
    A question without answers is an error unless ``require_answers=False`` (the test file).
    """
    path = require_file(
        path, f"dureader_robust/{split}.json", "DuReader-robust",
        "Download dureader_robust-data.tar.gz (linked from DuReader-Robust in the GitHub "
        f"repository baidu/DuReader) and take {split}.json from it.")
    data = load_json(path)
    articles = field(data, "data", list, path) if isinstance(data, dict) else None
    if articles is None:
        raise DataFileError(f"{path}: expected a JSON object with a 'data' list, got "
                            f"{type(data).__name__}.")
    records = []
    for a, article in enumerate(articles):
        a_where = f"{path}: data[{a}]"
        paragraphs = field(_json_object(article, a_where), "paragraphs", list, a_where)
        for p, paragraph in enumerate(paragraphs):
            p_where = f"{a_where}.paragraphs[{p}]"
            paragraph = _json_object(paragraph, p_where)
            context = field(paragraph, "context", str, p_where)
            for q, qa in enumerate(field(paragraph, "qas", list, p_where)):
                where = f"{p_where}.qas[{q}]"
                qa = _json_object(qa, where)
                qid = _as_id(qa, "id", where)
                where = f"{where} (id {qid!r})"
                answers = []
                for n, answer in enumerate(field(qa, "answers", list, where)):
                    answer = _json_object(answer, f"{where} answers[{n}]")
                    answers.append(field(answer, "text", str, f"{where} answers[{n}]"))
                if require_answers and not answers:
                    raise DataFileError(f"{where}: field 'answers' is empty (pass "
                                        "require_answers=False for the test file).")
                records.append({
                    "id": qid,
                    "context": context,
                    "question": field(qa, "question", str, where),
                    "answers": answers,
                })
    return _finish(records, {}, path)
