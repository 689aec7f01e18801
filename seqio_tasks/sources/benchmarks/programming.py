"""Readers of the code benchmarks: CoSQA (query/code matching) and MBPP (program synthesis)."""

from __future__ import annotations

import os
from typing import Any

from seqio_tasks.sources.benchmarks.fields import (id_field, json_array, json_object,
                                                   str_list_field)
from seqio_tasks.sources.files import RowError, field, require_file
from seqio_tasks.sources.rows import (BAD_ID, EMPTY_ANSWER, NO_TESTS, NOT_AN_OPTION, ReadPolicy,
                                      Records, RowLog, check_decodable, iter_lines, json_line)

MBPP_SPLITS = {  # task_id ranges (inclusive) of the splits of Austin et al. 2021
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}


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
    for index, obj in enumerate(json_array(path)):
        with log.row(f"record {index}") as where:
            obj = json_object(obj, where)
            check_decodable(obj, where)
            label = obj.get("label")
            if label is None or label == "":
                raise RowError(f"{where}: field 'label' is empty.", EMPTY_ANSWER)
            if isinstance(label, str) and label.strip() in ("0", "1"):
                label = int(label.strip())
            if label not in (0, 1) or isinstance(label, bool):
                raise RowError(f"{where}: field 'label' should be 0 or 1, got {label!r}.",
                               NOT_AN_OPTION)
            record = {"id": id_field(obj, "idx", where), "query": field(obj, "doc", str, where),
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
        located = ((f"record {i}", obj) for i, obj in enumerate(json_array(path)))
    for location, obj in located:
        with log.row(location) as where:
            obj = json_line(obj, where) if isinstance(obj, bytes) else json_object(obj, where)
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
    tests = [t for t in str_list_field(obj, "test_list", where) if t.strip()]
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
        "test_imports": [] if full else str_list_field(obj, "test_imports", where),
        "challenge_tests": str_list_field(obj, "challenge_test_list", where) if full else [],
    }

