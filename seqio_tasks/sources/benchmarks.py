"""Readers of the evaluation benchmarks in the formats their authors released.

One ``read_<name>`` per data set. Each returns a :class:`Records` (a plain ``list`` of
normalized dicts holding only str/int/list values) so that the prompt templates in
``seqio_tasks/eval_templates.py`` never see a file format. With ``path=None`` the file is looked
up under the data root (``$CODEREASON_DATA_DIR``, see ``files.py``); a missing file raises a
:class:`DataFileError` saying which file to fetch from where and where to put it.

Published files hold records that cannot be scored (an empty answer list, an answer that is
not an option, a wrong number of options, undecodable bytes, a repeated id, a missing field).
Every reader validates each record and, by ``ReadPolicy`` (``seqio_tasks.sources.rows``), skips
and counts it by reason (``Records.skipped``, with the first places in ``skipped_at``) or, in
strict mode, stops at it naming ``file:line`` and the field. A file with more skipped records
than ``max_skipped_fraction`` (5 %) is an error. What is wrong with the whole file (not JSON,
no header, the wrong top-level type) is always an error.

Records dropped by a rule of the paper's own loaders are counted apart in
``Records.filtered``: ScienceQA's ``text_only`` drops items with an image (``has image``) and
``require_lecture_and_solution`` those whose lecture or solution is empty
(``empty lecture or solution``); OCNLI / CMNLI items labelled ``-`` (no annotator majority)
have no gold answer and are filtered as ``no gold label``, as the paper's loader drops them.

Option letters are read as written in the files: full-width (``Ａ``), lower case and with
surrounding whitespace are the same letter. Ids are normalized to ``str`` (MBPP keeps its
integer ``task_id``).
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any

from seqio_tasks.sources.files import DataFileError, RowError, field, require_file
from seqio_tasks.sources.rows import (BAD_ID, EMPTY_ANSWER, NO_GOLD_LABEL, NO_TESTS,
                                      NOT_AN_OPTION, OPTION_COUNT, ReadPolicy,
                                      Records, RowLog, check_decodable, iter_lines, json_line,
                                      load_json_document, normalize_letter,
                                      option_index)

__all__ = ["Records", "ReadPolicy", "read_logic", "read_jecqa", "read_scienceqa", "read_ekar",
           "read_cosqa", "read_mbpp", "read_c3", "read_ocnli", "read_cmnli", "read_dureader"]

LETTERS = "ABCDEFGH"
NLI_LABELS = ("entailment", "neutral", "contradiction")  # index = label id
NO_MAJORITY = "-"  # OCNLI / CMNLI: the annotators did not agree; there is no gold label
MBPP_SPLITS = {  # task_id ranges (inclusive) of the splits of Austin et al. 2021
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}


def _as_id(record: dict[str, Any], name: str, where: str) -> str:
    return str(field(record, name, (str, int), where)).strip()


def _str_list(record: dict[str, Any], name: str, where: str) -> list[str]:
    values = field(record, name, list, where)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise RowError(f"{where}: field {name!r}[{i}] should be str, got "
                           f"{type(value).__name__} ({str(value)[:60]!r}).", "wrong field type")
    return list(values)


def _options(record: dict[str, Any], name: str, where: str, expected: int | None = None,
             at_least: int = 2) -> list[str]:
    """A list of option texts: exactly ``expected`` of them, or at least ``at_least``."""
    options = _str_list(record, name, where)
    if (expected is not None and len(options) != expected) or len(options) < at_least:
        want = expected if expected is not None else f"at least {at_least}"
        raise RowError(f"{where}: field {name!r} should have {want} options, got "
                       f"{len(options)}.", OPTION_COUNT)
    return options


def _json_array(path: str) -> list[Any]:
    data = load_json_document(path)
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON array, got {type(data).__name__}.")
    return data


def _json_object(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise RowError(f"{where}: expected a JSON object, got {type(obj).__name__}.",
                       "wrong field type")
    return obj


# ----------------------------------------------------------------------------- Logic (C-Eval)

CEVAL_COLUMNS = ("id", "question", "A", "B", "C", "D")


def read_logic(path: str | None = None, *, split: str = "val",
               policy: ReadPolicy | None = None) -> Records:
    """C-Eval ``logic`` subject, CSV ``logic_{split}.csv`` (the paper evaluated val, 22 items).

    Records: ``{id, question, choices: [A, B, C, D], label, explanation}``. ``explanation`` is
    the dev split's column ('' elsewhere). The test split's answers are hidden: with
    ``split="test"`` an empty or absent answer gives ``label = -1``; elsewhere it is a row
    that cannot be scored. A UTF-8 byte-order mark and CRLF line ends are read as written.
    """
    path = require_file(
        path, f"ceval/{split}/logic_{split}.csv", "C-Eval logic",
        f"Download ceval-exam.zip from the Hugging Face dataset ceval/ceval-exam (or the C-Eval "
        f"GitHub README's link) and take {split}/logic_{split}.csv.")
    log = RowLog(path, policy)
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        needed = CEVAL_COLUMNS + (() if split == "test" else ("answer",))
        missing = [c for c in needed if c not in columns]
        if missing:
            raise DataFileError(f"{path}:1: header lacks column(s) {missing}; expected "
                                f"{list(CEVAL_COLUMNS) + ['answer']} (got {columns}).")
        last_line = reader.line_num
        for row in reader:
            first_line, last_line = last_line + 1, reader.line_num
            with log.row(first_line) as where:
                _logic_row(row, columns, needed, split, where, log)
    return log.finish()


def _logic_row(row: dict[str, Any], columns: list[str], needed: tuple[str, ...], split: str,
               where: str, log: RowLog) -> None:
    if None in row:
        raise RowError(f"{where}: row has {len(columns) + len(row[None])} values but the "
                       f"header has {len(columns)} columns.", "wrong number of columns")
    for column in needed:
        if row.get(column) is None:
            raise RowError(f"{where}: field {column!r} is missing (row too short).",
                           "missing field")
    check_decodable(row, where)
    answer = row.get("answer") or ""
    label = -1 if split == "test" and not answer.strip() else option_index(answer, 4, "answer",
                                                                             where)
    record_id = row["id"].strip()
    log.keep({"id": record_id, "question": row["question"],
              "choices": [row[c] for c in "ABCD"], "label": label,
              "explanation": row.get("explanation") or ""}, record_id, where)


# ----------------------------------------------------------------------------- JEC-QA

_OPTION_PREFIX = re.compile(r"^\s*[(（]\s*([A-ZＡ-Ｚ])\s*[)）]\s*")


def read_jecqa(path: str | None = None, *, subset: str = "kd",
               policy: ReadPolicy | None = None) -> Records:
    """JEC-QA, either AGIEval's 1000-item ``jec-qa-{kd,ca}.jsonl`` or the original JSON lines.

    The format is detected per record: AGIEval has ``question``/``options``/``label``, the
    original has ``statement``/``option_list``/``answer``. Records:
    ``{id, question, choices: [4 option texts without the "(A)" prefix], labels: [int, ...]}``,
    ``labels`` sorted, one or more gold indices (JEC-QA questions may have several answers).
    AGIEval lines carry no id, so their id is ``"{file stem}-{0-based line index}"`` (counting
    every non-blank line, skipped or not, so ids do not move when a row is skipped).
    """
    path = require_file(
        path, f"jecqa/jec-qa-{subset}.jsonl", f"JEC-QA ({subset.upper()})",
        f"Download data/v1/jec-qa-{subset}.jsonl from the GitHub repository "
        "ruixiangcui/AGIEval (or a JSON-lines file of the original JEC-QA from "
        "jecqa.thunlp.org).")
    stem = os.path.basename(path).split(".")[0]
    log = RowLog(path, policy)
    for index, (lineno, raw) in enumerate(iter_lines(path)):
        with log.row(lineno) as where:
            obj = json_line(raw, where)
            check_decodable(obj, where)
            if "statement" in obj:
                record = _jecqa_original(obj, where)
            elif "options" in obj:
                record = _jecqa_agieval(obj, where, f"{stem}-{index}")
            else:
                raise RowError(f"{where}: neither a JEC-QA record (statement, option_list, "
                               "answer) nor an AGIEval record (question, options, label); "
                               f"fields present: {sorted(obj)}.", "missing field")
            log.keep(record, record["id"], where)
    return log.finish()


def _gold_letters(value: Any, name: str, where: str) -> list[int]:
    letters = [value] if isinstance(value, str) else value
    if not isinstance(letters, list):
        raise RowError(f"{where}: field {name!r} should be a letter or a list of letters, got "
                       f"{value!r}.", "wrong field type")
    if not letters:
        raise RowError(f"{where}: field {name!r} is an empty list.", EMPTY_ANSWER)
    return sorted({option_index(letter, 4, name, where) for letter in letters})


def _jecqa_original(obj: dict[str, Any], where: str) -> dict[str, Any]:
    options = field(obj, "option_list", dict, where)
    if sorted(k.strip() for k in options) != list("ABCD"):
        raise RowError(f"{where}: field 'option_list' should have keys A-D, got "
                       f"{sorted(options)}.", OPTION_COUNT)
    options = {k.strip(): v for k, v in options.items()}
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
                            f"{str(passage)[:60]!r}; is this another AGIEval task's file?")
    options = _options(obj, "options", where, expected=4)
    choices = []
    for i, option in enumerate(options):
        match = _OPTION_PREFIX.match(option)
        if not match or normalize_letter(match.group(1)) != LETTERS[i]:
            raise RowError(f"{where}: field 'options'[{i}] should start with "
                           f"'({LETTERS[i]})', got {option[:30]!r}.", "option without its letter")
        choices.append(option[match.end():].strip())
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
                   require_lecture_and_solution: bool = True,
                   policy: ReadPolicy | None = None) -> Records:
    """ScienceQA ``problems.json`` (id -> problem), one split, in file (or pid_splits) order.

    The split is taken from ``pid_splits.json`` when ``splits_path`` is given or the split is
    not one of train/val/test (e.g. minival, minitest), else from each problem's ``split``
    field; ``split=None`` keeps all problems. Then two counted filters (``Records.filtered``):
    ``text_only`` drops problems with an image (the paper ignores images),
    ``require_lecture_and_solution`` drops those with an empty lecture or solution (the paper's
    loader does; its templates need both). A problem hit by both is counted under
    ``has image`` only. Records: ``{id, question, choices, label, hint, lecture, solution,
    subject}``.
    """
    path = require_file(
        path, "scienceqa/problems.json", "ScienceQA",
        "Download data/scienceqa/problems.json of the GitHub repository lupantech/ScienceQA "
        "(its README links the Google Drive / Hugging Face copies).")
    problems = load_json_document(path)
    if not isinstance(problems, dict):
        raise DataFileError(f"{path}: expected a JSON object mapping problem id -> problem, got "
                            f"{type(problems).__name__}.")
    log = RowLog(path, policy)
    if split is None:
        pids = list(problems)
    elif splits_path is None and split in SCIENCEQA_FIELD_SPLITS:
        pids = [pid for pid, p in problems.items()
                if not isinstance(p, dict) or p.get("split", split) == split]
    else:
        splits_path = require_file(
            splits_path, "scienceqa/pid_splits.json", "ScienceQA splits",
            "Download data/scienceqa/pid_splits.json of the GitHub repository "
            "lupantech/ScienceQA.")
        splits = load_json_document(splits_path)
        if not isinstance(splits, dict) or split not in splits:
            names = sorted(splits) if isinstance(splits, dict) else type(splits).__name__
            raise DataFileError(f"{splits_path}: no split {split!r} (splits: {names}).")
        pids = [str(pid) for pid in splits[split]]
        unknown = [pid for pid in pids if pid not in problems]
        if unknown:
            raise DataFileError(f"{splits_path}: split {split!r} names {len(unknown)} problem "
                                f"id(s) absent from {path}, e.g. {unknown[:3]}; is "
                                f"{path} the complete problems.json?")
    for pid in pids:
        with log.row(f"problem {pid!r}") as where:
            problem = _json_object(problems[pid], where)
            check_decodable(problem, where)
            field(problem, "split", str, where)
            record = _scienceqa_record(pid, problem, where)
            image = problem.get("image")
            if image is not None and not isinstance(image, str):
                raise RowError(f"{where}: field 'image' should be a file name or null, got "
                               f"{image!r}.", "wrong field type")
            if text_only and image:
                log.filter("has image")
            elif require_lecture_and_solution and not (record["lecture"].strip()
                                                       and record["solution"].strip()):
                log.filter("empty lecture or solution")
            else:
                log.keep(record, record["id"], where)
    return log.finish()


def _scienceqa_record(pid: str, problem: dict[str, Any], where: str) -> dict[str, Any]:
    choices = _options(problem, "choices", where)
    answer = field(problem, "answer", int, where)
    if isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise RowError(f"{where}: field 'answer' should index 'choices' "
                       f"(0..{len(choices) - 1}), got {answer!r}.", NOT_AN_OPTION)
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

def read_ekar(path: str | None = None, *, split: str = "test",
              policy: ReadPolicy | None = None) -> Records:
    """Chinese E-KAR (HF ``jiangjiechen/ekar_chinese``), JSON lines ``{split}.json``.

    Records: ``{id, question, choices: [texts], label: index of answerKey, explanation}``;
    ``explanation`` is the list of strings (query first, then one per option) the CoT template
    uses. A blank ``answerKey`` (the old blind test file) is a row that cannot be scored.
    """
    path = require_file(
        path, f"ekar_chinese/{split}.json", "E-KAR (Chinese)",
        f"Download {split}.json of the Hugging Face dataset jiangjiechen/ekar_chinese "
        "(the version with test answers released).")
    log = RowLog(path, policy)
    for lineno, raw in iter_lines(path):
        with log.row(lineno) as where:
            obj = json_line(raw, where)
            check_decodable(obj, where)
            choices = field(obj, "choices", dict, where)
            letters = [normalize_letter(x) or x for x in
                       _str_list(choices, "label", f"{where} choices")]
            texts = _options(choices, "text", f"{where} choices")
            if len(letters) != len(texts):
                raise RowError(f"{where}: field 'choices' has {len(letters)} labels but "
                               f"{len(texts)} texts.", OPTION_COUNT)
            answer = field(obj, "answerKey", str, where)
            option_index(answer, len(texts), "answerKey", where)  # empty, not a letter
            if normalize_letter(answer) not in letters:
                raise RowError(f"{where}: field 'answerKey' {answer!r} is not among the labels "
                               f"{letters}.", NOT_AN_OPTION)
            record = {
                "id": _as_id(obj, "id", where),
                "question": field(obj, "question", str, where),
                "choices": texts,
                "label": letters.index(normalize_letter(answer)),
                "explanation": _str_list(obj, "explanation", where),
            }
            log.keep(record, record["id"], where)
    return log.finish()


# ----------------------------------------------------------------------------- CosQA

def read_cosqa(path: str | None = None, *, split: str = "dev",
               policy: ReadPolicy | None = None) -> Records:
    """CoSQA ``cosqa-{split}.json``, a JSON array of query/code pairs (the paper: dev, 604).

    Records: ``{id, query, code, label}``; label 1 = the code answers the query, 0 = it doesn't.
    """
    path = require_file(
        path, f"cosqa/cosqa-{split}.json", "CoSQA",
        f"Download data/qa/cosqa-{split}.json of the GitHub repository Jun-jie-Huang/CoCLR (also "
        "in microsoft/CodeXGLUE, Text-Code/NL-code-search-WebQuery).")
    log = RowLog(path, policy)
    for index, obj in enumerate(_json_array(path)):
        with log.row(f"record {index}") as where:
            obj = _json_object(obj, where)
            check_decodable(obj, where)
            label = obj.get("label")
            if label is None or label == "":
                raise RowError(f"{where}: field 'label' is empty.", EMPTY_ANSWER)
            if isinstance(label, str) and label.strip() in ("0", "1"):
                label = int(label.strip())
            if label not in (0, 1) or isinstance(label, bool):
                raise RowError(f"{where}: field 'label' should be 0 or 1, got {label!r}.",
                               NOT_AN_OPTION)
            record = {"id": _as_id(obj, "idx", where), "query": field(obj, "doc", str, where),
                      "code": field(obj, "code", str, where), "label": label}
            log.keep(record, record["id"], where)
    return log.finish()


# ----------------------------------------------------------------------------- MBPP

def mbpp_split(task_id: int) -> str:
    """The split of an MBPP task id (the same ranges hold for the full and sanitized files)."""
    for name, (low, high) in MBPP_SPLITS.items():
        if low <= task_id <= high:
            return name
    raise ValueError(f"MBPP task_id {task_id} is outside 1..974.")


def read_mbpp(path: str | None = None, *, variant: str | None = None,
              split: str | None = None, policy: ReadPolicy | None = None) -> Records:
    """MBPP, full (``mbpp.jsonl``, 974) or sanitized (``sanitized-mbpp.json``, 427; the paper's).

    ``variant`` is "full" or "sanitized"; None means sanitized for the default path, else from
    the file name (``*.jsonl`` = full). ``split`` (prompt/test/validation/train) selects by
    task_id range; None keeps all (the paper evaluated all 427 sanitized problems). Records:
    ``{task_id, split, prompt, code, tests, setup_code, test_imports, challenge_tests}``
    (full-only and sanitized-only fields are ''/[] in the other variant).
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
    log = RowLog(path, policy)
    if variant == "full":
        located = ((lineno, raw) for lineno, raw in iter_lines(path))
    else:
        located = ((f"record {i}", obj) for i, obj in enumerate(_json_array(path)))
    for location, obj in located:
        with log.row(location) as where:
            obj = json_line(obj, where) if isinstance(obj, bytes) else _json_object(obj, where)
            check_decodable(obj, where)
            record = _mbpp_record(obj, variant, where)
            log.keep(record, record["task_id"], where)
    records = log.finish()
    return records if split is None else records.select(lambda r: r["split"] == split)


def _mbpp_record(obj: dict[str, Any], variant: str, where: str) -> dict[str, Any]:
    task_id = field(obj, "task_id", int, where)
    try:
        split = mbpp_split(task_id)
    except ValueError as err:
        raise RowError(f"{where}: field 'task_id': {err}", BAD_ID) from None
    full = variant == "full"
    tests = [t for t in _str_list(obj, "test_list", where) if t.strip()]
    if not tests:
        raise RowError(f"{where}: field 'test_list' holds no test.", NO_TESTS)
    code = field(obj, "code", str, where)
    if not code.strip():
        raise RowError(f"{where}: field 'code' (the reference solution) is empty.",
                       EMPTY_ANSWER)
    return {
        "task_id": task_id,
        "split": split,
        "prompt": field(obj, "text" if full else "prompt", str, where),
        "code": code,
        "tests": tests,
        "setup_code": field(obj, "test_setup_code", str, where) if full else "",
        "test_imports": [] if full else _str_list(obj, "test_imports", where),
        "challenge_tests": _str_list(obj, "challenge_test_list", where) if full else [],
    }


# ----------------------------------------------------------------------------- C3

def read_c3(path: str | None = None, *, subset: str = "d", split: str = "dev",
            policy: ReadPolicy | None = None) -> Records:
    """C3 ``c3-{d,m}-{split}.json``: a JSON array of [dialogue lines, questions, document id].

    One record per question: ``{id: "{document id}#{question index}", context (lines joined
    with newlines), dialogue: [lines], question, choices, label}``. ``dialogue`` is kept because
    the paper's template joins the lines without a separator. A question whose answer is not
    among its choices cannot be scored; a malformed document skips all its questions (counted
    once).
    """
    path = require_file(
        path, f"c3/c3-{subset}-{split}.json", "C3",
        f"Download data/c3-{subset}-{split}.json of the GitHub repository nlpdata/c3.")
    log = RowLog(path, policy)
    for index, item in enumerate(_json_array(path)):
        questions = []
        with log.row(f"item {index}") as where:
            if not (isinstance(item, list) and len(item) == 3
                    and isinstance(item[2], (str, int))):
                raise RowError(f"{where}: expected [dialogue lines, questions, id], got "
                               f"{str(item)[:80]!r}.", "wrong field type")
            doc_id = str(item[2])
            where = f"{where} (id {doc_id!r})"
            check_decodable(item, where)
            dialogue = _str_list({"dialogue": item[0]}, "dialogue", where)
            if not isinstance(item[1], list) or not item[1] or not dialogue:
                raise RowError(f"{where}: expected a dialogue and a non-empty list of "
                               f"questions, got {str(item[1])[:60]!r}.", "missing field")
            questions = item[1]
        for q_index, question in enumerate(questions):
            with log.row(f"item {index} (id {doc_id!r}), question {q_index}") as q_where:
                question = _json_object(question, q_where)
                choices = _options(question, "choice", q_where)
                answer = field(question, "answer", str, q_where)
                if not answer.strip():
                    raise RowError(f"{q_where}: field 'answer' is empty.", EMPTY_ANSWER)
                stripped = [c.strip() for c in choices]
                if answer.strip() not in stripped:
                    raise RowError(f"{q_where}: field 'answer' {answer!r} is not among the "
                                   f"choices {choices}.", NOT_AN_OPTION)
                record = {
                    "id": f"{doc_id}#{q_index}",
                    "context": "\n".join(dialogue),
                    "dialogue": dialogue,
                    "question": field(question, "question", str, q_where),
                    "choices": choices,
                    "label": stripped.index(answer.strip()),
                }
                log.keep(record, record["id"], q_where)
    return log.finish()


# ----------------------------------------------------------------------------- OCNLI / CMNLI

def read_ocnli(path: str | None = None, *, split: str = "dev",
               policy: ReadPolicy | None = None) -> Records:
    """OCNLI (CLUE) JSON lines ``{split}.json``; see :func:`_read_nli` for records and skips."""
    path = require_file(
        path, f"ocnli/{split}.json", "OCNLI",
        f"Download data/ocnli/{split}.json of the GitHub repository CLUEbenchmark/OCNLI.")
    return _read_nli(path, policy)


def read_cmnli(path: str | None = None, *, split: str = "dev",
               policy: ReadPolicy | None = None) -> Records:
    """CMNLI (CLUE) JSON lines ``{split}.json``; see :func:`_read_nli` for records and skips."""
    path = require_file(
        path, f"cmnli/{split}.json", "CMNLI",
        f"Download cmnli_public.zip from the CLUE benchmark (GitHub CLUEbenchmark/CLUE, "
        f"dataset list) and take cmnli_public/{split}.json.")
    return _read_nli(path, policy)


def _read_nli(path: str, policy: ReadPolicy | None) -> Records:
    """Records ``{id, premise, hypothesis, label}``, label 0/1/2 = entailment/neutral/contra.

    Items labelled ``-`` (no annotator majority) have no gold answer: they are filtered as
    ``no gold label``, as the paper's loader drops them. A missing, empty or other label is a
    record that cannot be scored.
    Lines without an ``id`` (CMNLI) get ``"{file stem}-{line}"``.
    """
    stem = os.path.basename(path).split(".")[0]
    log = RowLog(path, policy)
    for lineno, raw in iter_lines(path):
        with log.row(lineno) as where:
            obj = json_line(raw, where)
            check_decodable(obj, where)
            premise = field(obj, "sentence1", str, where)
            hypothesis = field(obj, "sentence2", str, where)
            label = obj.get("label")
            label = label.strip() if isinstance(label, str) else label
            if label == NO_MAJORITY:
                log.filter(NO_GOLD_LABEL)
                continue
            if label is None or label == "":
                raise RowError(f"{where}: field 'label' is missing or empty.", EMPTY_ANSWER)
            if label not in NLI_LABELS:
                raise RowError(f"{where}: field 'label' is {label!r}, not one of "
                               f"{list(NLI_LABELS)} (or {NO_MAJORITY!r}).", NOT_AN_OPTION)
            record = {
                "id": _as_id(obj, "id", where) if "id" in obj else f"{stem}-{lineno}",
                "premise": premise,
                "hypothesis": hypothesis,
                "label": NLI_LABELS.index(label),
            }
            log.keep(record, record["id"], where)
    return log.finish()


# ----------------------------------------------------------------------------- DuReader

def read_dureader(path: str | None = None, *, split: str = "dev",
                  require_answers: bool = True, policy: ReadPolicy | None = None) -> Records:
    """DuReader-robust, SQuAD-style JSON ``{data: [{paragraphs: [{context, qas}]}]}``.

    All ``data`` entries are read (the paper's loader reads ``data[0]``, which in the released
    dev file holds every paragraph). Records: ``{id, context, question, answers: [texts]}``.
    A question without answers cannot be scored unless ``require_answers=False`` (the test
    file).
    """
    path = require_file(
        path, f"dureader_robust/{split}.json", "DuReader-robust",
        "Download dureader_robust-data.tar.gz (linked from DuReader-Robust in the GitHub "
        f"repository baidu/DuReader) and take {split}.json from it.")
    data = load_json_document(path)
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise DataFileError(f"{path}: expected a JSON object with a 'data' list, got "
                            f"{type(data).__name__}.")
    log = RowLog(path, policy)
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_list_or_skip(log, article, "paragraphs", f"data[{a}]")):
            p_at = f"data[{a}].paragraphs[{p}]"
            qas = _list_or_skip(log, paragraph, "qas", p_at)
            for q, qa in enumerate(qas):
                with log.row(f"{p_at}.qas[{q}]") as where:
                    context = field(paragraph, "context", str, log.where(p_at))
                    qa = _json_object(qa, where)
                    check_decodable([context, qa], where)
                    qid = _as_id(qa, "id", where)
                    where = f"{where} (id {qid!r})"
                    answers = []
                    for n, answer in enumerate(field(qa, "answers", list, where)):
                        answer = _json_object(answer, f"{where} answers[{n}]")
                        answers.append(field(answer, "text", str, f"{where} answers[{n}]"))
                    if require_answers and not any(a.strip() for a in answers):
                        raise RowError(f"{where}: field 'answers' is empty (pass "
                                       "require_answers=False for the test file).",
                                       EMPTY_ANSWER)
                    record = {"id": qid, "context": context,
                              "question": field(qa, "question", str, where),
                              "answers": answers}
                    log.keep(record, qid, where)
    return log.finish()


def _list_or_skip(log: RowLog, obj: Any, name: str, location: str) -> list[Any]:
    """``obj[name]`` as a list, or [] with the container counted as one skipped record."""
    with log.row(location) as where:
        return field(_json_object(obj, where), name, list, where)
    return []
