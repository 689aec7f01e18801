"""Readers of the Chinese reading benchmarks: C3, OCNLI / CMNLI (NLI) and DuReader-robust."""

from __future__ import annotations

import os
from typing import Any

from seqio_tasks.sources.benchmarks.fields import (id_field, json_array, json_object,
                                                   option_texts, str_list_field)
from seqio_tasks.sources.files import DataFileError, RowError, field, require_file
from seqio_tasks.sources.rows import (EMPTY_ANSWER, NO_GOLD_LABEL, NOT_AN_OPTION, ReadPolicy,
                                      Records, RowLog, check_decodable, iter_lines, json_line,
                                      load_json_document)

NLI_LABELS = ("entailment", "neutral", "contradiction")  # index = label id
NO_MAJORITY = "-"  # OCNLI / CMNLI: the annotators did not agree; there is no gold label


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
    for index, item in enumerate(json_array(path)):
        questions = []
        with log.row(f"item {index}") as where:
            if not (isinstance(item, list) and len(item) == 3
                    and isinstance(item[2], (str, int))):
                raise RowError(f"{where}: expected [dialogue lines, questions, id], got "
                               f"{str(item)[:80]!r}.", "wrong field type")
            doc_id = str(item[2])
            where = f"{where} (id {doc_id!r})"
            check_decodable(item, where)
            dialogue = str_list_field({"dialogue": item[0]}, "dialogue", where)
            if not isinstance(item[1], list) or not item[1] or not dialogue:
                raise RowError(f"{where}: expected a dialogue and a non-empty list of "
                               f"questions, got {str(item[1])[:60]!r}.", "missing field")
            questions = item[1]
        for q_index, question in enumerate(questions):
            with log.row(f"item {index} (id {doc_id!r}), question {q_index}") as q_where:
                question = json_object(question, q_where)
                choices = option_texts(question, "choice", q_where)
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
                "id": id_field(obj, "id", where) if "id" in obj else f"{stem}-{lineno}",
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
                    qa = json_object(qa, where)
                    check_decodable([context, qa], where)
                    qid = id_field(qa, "id", where)
                    where = f"{where} (id {qid!r})"
                    answers = []
                    for n, answer in enumerate(field(qa, "answers", list, where)):
                        answer = json_object(answer, f"{where} answers[{n}]")
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
        return field(json_object(obj, where), name, list, where)
    return []
