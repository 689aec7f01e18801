"""Benchmark readers (original formats) and the paper's evaluation templates.

The fixtures under tests/fixtures/benchmarks/ are laid out like a data root, in each data set's
real format with invented content; the real MBPP files are read when ../shared is present.
"""

import json
import os

import pytest

from seqio_tasks import eval_templates as T
from seqio_tasks.sources import benchmarks as B
from seqio_tasks.sources.files import DataFileError
from seqio_tasks.sources.rows import ReadPolicy

STRICT = ReadPolicy(strict=True)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "benchmarks")
REAL_MBPP = os.path.join(HERE, "..", "..", "shared", "data", "mbpp")


@pytest.fixture
def fixture_root(monkeypatch):
    """Readers called with path=None resolve their default file under the fixtures."""
    monkeypatch.setenv("CODEREASON_DATA_DIR", FIXTURES)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(*objs):
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)


# ----------------------------------------------------------------------------- Logic

def test_logic_val_records_and_template(fixture_root):
    records = B.read_logic()
    assert isinstance(records, B.Records) and records.skipped == {}
    assert records[1] == {
        "id": "1", "question": "如果下雨，地面就湿。地面没湿，所以____",
        "choices": ["下雨了", "没有下雨", "地面湿了，也可能没下雨", "无法确定"],
        "label": 1, "explanation": ""}
    example = T.MULTIPLE_CHOICE_TEMPLATES["logic"](records[0])
    assert example["candidates"][1] == {"prompt": "该答案：企鹅不会飞，可以回答如下问题：",
                                        "scored": "所有的鸟都会飞，企鹅是鸟，由此可以推出____。"}
    assert (example["id"], example["label"], example["labels"]) == ("0", 0, [0])
    assert len(example["candidates"]) == 4


def test_logic_dev_explanation_and_hidden_test_labels(fixture_root):
    assert B.read_logic(split="dev")[0]["explanation"] == "1. 由传递性可知甲最高。"
    assert B.read_logic(split="test")[0]["label"] == -1


def test_logic_bad_answer_names_file_line_field(tmp_path):
    path = write(tmp_path, "logic_val.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,B\n"
                                            '1,"two\nlines",a,b,c,d,E\n')
    with pytest.raises(DataFileError, match=r"logic_val\.csv:3: field 'answer' is 'E', but "
                                            r"there are only 4 options.*strict mode"):
        B.read_logic(path, policy=STRICT)
    path = write(tmp_path, "short.csv", "id,question,A,B,C,D,answer\n0,q,a,b\n")
    with pytest.raises(DataFileError, match=r"short\.csv:2: field 'C' is missing"):
        B.read_logic(path, policy=STRICT)
    # Not strict: one bad row of two is over the 5% threshold; with a looser one it is counted.
    with pytest.raises(DataFileError, match=r"1 of 2 records \(50\.0%\) cannot be scored "
                                            r"\(answer not an option 1; answer not an option at "
                                            r"line 3\).*EvalConfig\.max_skipped_fraction"):
        B.read_logic(write(tmp_path, "l.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,B\n"
                                              '1,"two\nlines",a,b,c,d,E\n'))
    records = B.read_logic(write(tmp_path, "l2.csv", "id,question,A,B,C,D,answer\n"
                                                     "0,q,a,b,c,d,B\n1,q,a,b,c,d,E\n"),
                           policy=ReadPolicy(max_skipped_fraction=0.5))
    assert [r["id"] for r in records] == ["0"]
    assert (records.skipped, records.skipped_at) == ({"answer not an option": 1},
                                                     {"answer not an option": ["line 3"]})


def test_missing_file_names_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEREASON_DATA_DIR", str(tmp_path))
    expected = os.path.join(str(tmp_path), "ceval", "val", "logic_val.csv")
    with pytest.raises(DataFileError) as err:
        B.read_logic()
    assert f"Put the file at {expected}" in str(err.value)
    assert "ceval/ceval-exam" in str(err.value)
    with pytest.raises(DataFileError, match="sanitized-mbpp.json of the GitHub repository "
                                            "google-research/google-research"):
        B.read_mbpp()


# ----------------------------------------------------------------------------- JEC-QA

def test_jecqa_agieval_multi_answer_and_template(fixture_root):
    records = B.read_jecqa()
    assert [r["labels"] for r in records] == [[0], [0, 1, 3], [3]]
    assert records[1]["id"] == "jec-qa-kd-1"
    assert records[1]["choices"] == ["订立遗嘱", "签订买卖合同", "自然降雨", "赠与财产"]
    example = T.jecqa_candidates(records[1])
    assert example["candidates"][2] == {"prompt": "该答案：自然降雨，可以回答以下问题：",
                                        "scored": "下列哪些属于民事法律行为？"}
    assert (example["label"], example["labels"]) == (0, [0, 1, 3])
    assert T.is_correct(example, 3) and not T.is_correct(example, 2)
    assert [r["id"] for r in T.single_answer_only(records)] == ["jec-qa-kd-0", "jec-qa-kd-2"]


def test_jecqa_original_format():
    (record,) = B.read_jecqa(os.path.join(FIXTURES, "jecqa", "0_train.json"))
    assert record == {"id": "7_1024", "question": "下列哪些属于行政处罚？",
                      "choices": ["行政拘留", "罚款", "警告", "有期徒刑"], "labels": [1, 2]}


def test_jecqa_bad_option_prefix(tmp_path):
    path = write(tmp_path, "jec.jsonl", jsonl(
        {"passage": None, "question": "q", "options": ["(A)a", "(B)b", "c", "(D)d"],
         "label": ["A"], "answer": None, "other": None}))
    with pytest.raises(DataFileError, match=r"jec\.jsonl:1: field 'options'\[2\] should start "
                                            r"with '\(C\)'"):
        B.read_jecqa(path, policy=STRICT)


# ----------------------------------------------------------------------------- ScienceQA

def test_scienceqa_filters_are_counted(fixture_root):
    records = B.read_scienceqa()  # test split, text only, paper filter
    assert [r["id"] for r in records] == ["11"]
    assert records.filtered == {"has image": 1, "empty lecture or solution": 1}
    assert records.skipped == {}  # filtered by the paper's rule, not unscorable
    assert records[0]["hint"] == "Both move along the same road."
    assert records[0]["label"] == 1 and records[0]["subject"] == "natural science"
    loose = B.read_scienceqa(text_only=False, require_lecture_and_solution=False)
    assert [r["id"] for r in loose] == ["11", "12", "13"] and loose.filtered == {}


def test_scienceqa_pid_splits(fixture_root):
    assert [r["id"] for r in B.read_scienceqa(split="minitest",
                                              require_lecture_and_solution=False)] == ["13", "11"]
    assert [r["id"] for r in B.read_scienceqa(split="val")] == ["14"]


def test_scienceqa_templates(fixture_root):
    record = B.read_scienceqa()[0]
    example = T.scienceqa_candidates(record)
    assert example["candidates"][0] == {
        "prompt": "Lecture:Speed tells how far something moves in a unit of time.\n anwser：a "
                  "snail can answer the following question：",
        "scored": "Which object moves faster?"}
    assert example["labels"] == [1]
    cot = T.MULTIPLE_CHOICE_TEMPLATES["scienceqa_cot"](record)
    assert cot["candidates"][1] == {
        "prompt": "Lecture:Speed tells how far something moves in a unit of time.\n question："
                  "Which object moves faster?\n anwser：a bicycle\n This answer comes from the "
                  "following reasoning：",
        "scored": "The bicycle covers more distance each second, so it is faster."}


def test_scienceqa_bad_answer_names_problem(tmp_path):
    path = write(tmp_path, "problems.json", json.dumps({"7": {
        "question": "q", "choices": ["x", "y"], "answer": 2, "hint": "", "image": None,
        "lecture": "l", "solution": "s", "subject": "social science", "split": "test"}}))
    with pytest.raises(DataFileError, match=r"problems\.json: problem '7': field 'answer'"):
        B.read_scienceqa(path, policy=STRICT)


# ----------------------------------------------------------------------------- E-KAR

def test_ekar_records_and_templates(fixture_root):
    (record,) = B.read_ekar()
    assert record["label"] == 0 and record["choices"][3] == "汽车:轮胎"
    example = T.ekar_candidates(record)
    assert example["candidates"][1] == {"prompt": "根据推理关系:钢笔:书写\n可以得到类比推理关系为：",
                                        "scored": "雨伞:下雨"}
    cot = T.MULTIPLE_CHOICE_TEMPLATES["ekar_cot"](record)
    assert cot["candidates"][2] == {
        "prompt": "根据推理关系:钢笔:书写\n可以得到类比推理关系为：桌子:木头\n",
        "scored": "因为“钢笔”的功能是“书写”,所以“桌子”由“木头”制成"}
    with pytest.raises(ValueError, match="needs 5 explanations"):
        T.ekar_cot_candidates(dict(record, explanation=["only one"]))


def test_ekar_blind_answer_key_is_an_error(tmp_path):
    path = write(tmp_path, "test.json", jsonl(
        {"id": "x", "question": "a:b", "choices": {"label": list("ABCD"), "text": list("wxyz")},
         "answerKey": "", "explanation": [], "relation": []}))
    with pytest.raises(DataFileError, match=r"test\.json:1: field 'answerKey' is empty"):
        B.read_ekar(path, policy=STRICT)
    with pytest.raises(DataFileError, match=r"none of its 1 records can be scored"):
        B.read_ekar(path, policy=ReadPolicy(max_skipped_fraction=1.0))


# ----------------------------------------------------------------------------- CosQA

def test_cosqa_records_and_template(fixture_root):
    records = B.read_cosqa()
    assert records[1] == {"id": "cosqa-dev-1", "query": "python read csv header",
                          "code": "def add(a, b):\n    return a + b", "label": 0}
    correct, wrong = T.cosqa_candidates(records[0]), T.cosqa_candidates(records[1])
    assert correct["candidates"] == [
        {"prompt": "python reverse a list in place? Answered code is correct:",
         "scored": records[0]["code"]},
        {"prompt": "python reverse a list in place? Answered code is wrong:",
         "scored": records[0]["code"]}]
    assert (correct["label"], wrong["label"]) == (0, 1)


def test_cosqa_bad_label_names_record(tmp_path):
    path = write(tmp_path, "cosqa-dev.json", json.dumps(
        [{"idx": 0, "doc": "d", "code": "c", "label": 1},
         {"idx": 1, "doc": "d", "code": "c", "label": 2}]))
    with pytest.raises(DataFileError, match=r"cosqa-dev\.json: record 1: field 'label'"):
        B.read_cosqa(path, policy=STRICT)


# ----------------------------------------------------------------------------- MBPP

def test_mbpp_fixture_records_and_prompts(fixture_root):
    full = B.read_mbpp(os.path.join(FIXTURES, "mbpp", "mbpp.jsonl"))
    assert [(r["task_id"], r["split"]) for r in full] == [(3, "prompt"), (700, "train")]
    assert full[1]["setup_code"] == "import string"
    assert full[1]["challenge_tests"] == ["assert count_vowels('aaa') == 3"]
    sanitized = B.read_mbpp()  # default: sanitized
    assert [r["split"] for r in sanitized] == ["test", "validation"]
    assert sanitized[1]["test_imports"] == ["import math"] and sanitized[1]["setup_code"] == ""
    assert [r["task_id"] for r in B.read_mbpp(split="validation")] == [520]
    example = T.GENERATION_TEMPLATES["mbpp"](sanitized[0])
    assert example == {"id": "42", "prompt": "Write a function to return the largest of three "
                       "numbers.", "reference": sanitized[0]["code"],
                       "tests": sanitized[0]["tests"], "setup_code": "", "test_imports": []}
    with_tests = T.GENERATION_TEMPLATES["mbpp_with_tests"](sanitized[0])
    assert with_tests["prompt"] == ('"""\nWrite a function to return the largest of three '
                                    'numbers.\nassert largest_of_three(1, 5, 2) == 5\n"""\n')


def test_mbpp_bad_task_id_names_line(tmp_path):
    path = write(tmp_path, "mbpp.jsonl", jsonl(
        {"text": "t", "code": "c", "task_id": 975, "test_setup_code": "",
         "test_list": ["assert True"], "challenge_test_list": []}))
    with pytest.raises(DataFileError, match=r"mbpp\.jsonl:1: field 'task_id'.*975"):
        B.read_mbpp(path, policy=STRICT)


@pytest.fixture
def real_mbpp():
    if not os.path.isdir(REAL_MBPP):
        pytest.skip("../shared/data/mbpp is absent (only in the development workspace)")
    return REAL_MBPP


def test_real_mbpp_full(real_mbpp):
    records = B.read_mbpp(os.path.join(real_mbpp, "mbpp.jsonl"))
    assert len(records) == 974
    counts = {s: sum(r["split"] == s for r in records) for s in B.MBPP_SPLITS}
    assert counts == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    assert all(len(r["tests"]) == 3 for r in records)


def test_real_mbpp_sanitized(real_mbpp):
    records = B.read_mbpp(os.path.join(real_mbpp, "sanitized-mbpp.json"))
    assert len(records) == 427
    counts = {s: sum(r["split"] == s for r in records) for s in B.MBPP_SPLITS}
    assert counts == {"prompt": 7, "test": 257, "validation": 43, "train": 120}
    assert sum(bool(r["test_imports"]) for r in records) == 13
    assert len(B.read_mbpp(os.path.join(real_mbpp, "sanitized-mbpp.json"), split="test")) == 257


# ----------------------------------------------------------------------------- C3

def test_c3_records_and_template(fixture_root):
    records = B.read_c3()
    assert [r["id"] for r in records] == ["9-101#0", "9-101#1"]
    assert records[0]["context"] == "男：明天我们去爬山吧？\n女：好啊，不过听说明天可能下雨。"
    assert records[0]["label"] == 1 and records[1]["label"] == 0
    example = T.c3_candidates(records[0])
    assert example["candidates"][1] == {
        "prompt": "问：女的担心什么？\n答：可能下雨\n该答案来自对话：",
        "scored": "男：明天我们去爬山吧？女：好啊，不过听说明天可能下雨。"}


def test_c3_answer_not_among_choices_names_item(tmp_path):
    path = write(tmp_path, "c3-d-dev.json", json.dumps(
        [[["男：你好"], [{"question": "q", "choice": ["a", "b"], "answer": "c"}], "5-2"]],
        ensure_ascii=False))
    with pytest.raises(DataFileError, match=r"c3-d-dev\.json: item 0 \(id '5-2'\), question 0: "
                                            r"field 'answer' 'c' is not among the choices"):
        B.read_c3(path, policy=STRICT)


# ----------------------------------------------------------------------------- OCNLI / CMNLI

def test_ocnli_skips_labels_outside_three_classes(fixture_root):
    records = B.read_ocnli(policy=STRICT)  # '-' is no defect: strict mode reads the file
    assert [(r["id"], r["label"]) for r in records] == [("0", 0), ("2", 2)]
    assert records.filtered == {"no gold label": 1} and records.skipped == {}
    example = T.MULTIPLE_CHOICE_TEMPLATES["ocnli"](records[0])
    assert [c["prompt"] for c in example["candidates"]] == [
        "他每天早上六点起床跑步？对，", "他每天早上六点起床跑步？或，", "他每天早上六点起床跑步？错，"]
    assert {c["scored"] for c in example["candidates"]} == {"他有晨跑的习惯"}


def test_cmnli_missing_label_skipped_and_ids_from_lines(fixture_root):
    records = B.read_cmnli(policy=ReadPolicy(max_skipped_fraction=0.5))
    assert records == [{"id": "dev-1", "premise": "孩子们在公园里放风筝", "hypothesis": "天气很好",
                        "label": 1}]
    assert records.skipped == {"empty answer": 1}
    assert T.MULTIPLE_CHOICE_TEMPLATES["cmnli"](records[0])["label"] == 1


def test_nli_missing_sentence_names_line(tmp_path):
    path = write(tmp_path, "dev.json", jsonl({"sentence1": "a", "sentence2": "b", "label": "-"},
                                             {"sentence1": "a", "label": "neutral"}))
    with pytest.raises(DataFileError, match=r"dev\.json:2: missing field 'sentence2'"):
        B.read_ocnli(path, policy=STRICT)


# ----------------------------------------------------------------------------- DuReader

def test_dureader_records_and_prompt(fixture_root):
    (record,) = B.read_dureader()
    assert record["answers"] == ["每周一", "周一"] and record["id"] == "a1b2c3"
    example = T.GENERATION_TEMPLATES["dureader"](record)
    assert example == {"id": "a1b2c3",
                       "prompt": "阅读文章:某市图书馆每周一闭馆，其余时间上午九点开放。\n问：图书馆哪天闭馆\n答：",
                       "references": ["每周一", "周一"]}


def test_dureader_empty_answers(tmp_path):
    data = {"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "q9", "question": "q", "answers": []}]}]}]}
    path = write(tmp_path, "dev.json", json.dumps(data))
    with pytest.raises(DataFileError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id 'q9'\): "
                                            "field 'answers' is empty"):
        B.read_dureader(path, policy=STRICT)
    assert B.read_dureader(path, require_answers=False)[0]["answers"] == []


# ----------------------------------------------------------------------------- registries

def test_registries_cover_every_task():
    assert set(T.MULTIPLE_CHOICE_TEMPLATES) == {
        "logic", "jecqa", "scienceqa", "scienceqa_cot", "ekar", "ekar_cot", "cosqa", "c3",
        "ocnli", "cmnli"}
    assert set(T.GENERATION_TEMPLATES) == {"mbpp", "mbpp_with_tests", "dureader"}
