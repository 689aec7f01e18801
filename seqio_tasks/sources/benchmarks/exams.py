"""Readers of the multiple-choice exams: C-Eval logic, JEC-QA, ScienceQA and E-KAR.

Each returns ``Records`` of ``{id, question, choices, label(s), ...}``; see the package
docstring (``seqio_tasks.sources.benchmarks``) for skipping, filtering and letter rules.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any

from seqio_tasks.sources.benchmarks.fields import (id_field, json_object, option_texts,
                                                   str_list_field)
from seqio_tasks.sources.files import DataFileError, RowError, field, require_file
from seqio_tasks.sources.rows import (EMPTY_ANSWER, NOT_AN_OPTION, OPTION_COUNT, ReadPolicy,
                                      Records, RowLog, check_decodable, iter_lines, json_line,
                                      load_json_document, normalize_letter, option_index)

LETTERS = "ABCDEFGH"


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
        "id": id_field(obj, "id", where),
        "question": field(obj, "statement", str, where),
        "choices": choices,
        "labels": _gold_letters(field(obj, "answer", (list, str), where), "answer", where),
    }


def _jecqa_agieval(obj: dict[str, Any], where: str, record_id: str) -> dict[str, Any]:
    passage = obj.get("passage")
    if passage:  # JEC-QA items in AGIEval have passage null; anything else is another task
        raise DataFileError(f"{where}: field 'passage' should be null for JEC-QA, got "
                            f"{str(passage)[:60]!r}; is this another AGIEval task's file?")
    options = option_texts(obj, "options", where, expected=4)
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
            problem = json_object(problems[pid], where)
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
    choices = option_texts(problem, "choices", where)
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
                       str_list_field(choices, "label", f"{where} choices")]
            texts = option_texts(choices, "text", f"{where} choices")
            if len(letters) != len(texts):
                raise RowError(f"{where}: field 'choices' has {len(letters)} labels but "
                               f"{len(texts)} texts.", OPTION_COUNT)
            answer = field(obj, "answerKey", str, where)
            option_index(answer, len(texts), "answerKey", where)  # empty, not a letter
            if normalize_letter(answer) not in letters:
                raise RowError(f"{where}: field 'answerKey' {answer!r} is not among the labels "
                               f"{letters}.", NOT_AN_OPTION)
            record = {
                "id": id_field(obj, "id", where),
                "question": field(obj, "question", str, where),
                "choices": texts,
                "label": letters.index(normalize_letter(answer)),
                "explanation": str_list_field(obj, "explanation", where),
            }
            log.keep(record, record["id"], where)
    return log.finish()

