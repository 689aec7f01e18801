"""Multiple-choice benchmark tasks through the evaluate command, with hand-worked scores.

The fixtures (tests/fixtures/benchmarks_eval: C-Eval logic val and dev CSVs, an AGIEval JEC-QA
file, in the published formats) run through evaluate.main: reader, split mapping, template,
one SeqIO row per candidate, grouping, argmin and the multi-answer rule. Only the model is
replaced, by a scorer that gives each candidate a mean NLL chosen here by the option text it
reads back from the row's prompt. The expected predictions and accuracies below are worked by
hand from that table, so a wrong split mapping, a candidate expanded in the wrong order or to
the wrong text, a label taken from the wrong field, or the first gold answer used instead of
all of them changes a number.
"""

import json
import os
import re

import numpy as np
import pytest

from codereason_jax import evaluate
from codereason_jax.evaluation import scoring

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(HERE, "fixtures", "benchmarks_eval")
ARGV = ["--gin_file=gin/models/pangu_tiny.gin", "--gin_file=gin/eval/tables_2_3_6.gin",
        f"--data_dir={FIXTURES}", "--gin.EvalConfig.mode='corrected'"]

# The paper's templates (eval_templates.py), written out: the option sits in the prompt, the
# question is the scored span ("channel" direction).
LOGIC_PROMPT = re.compile(r"^该答案：(.+)，可以回答如下问题：$")
JECQA_PROMPT = re.compile(r"^该答案：(.+)，可以回答以下问题：$")

# Mean NLL per option text (lower wins). Per question, options A-D in file order.
NLL = {
    # logic_val.csv (the "validation" split, the paper's default)
    "咪咪怕水": 1.0, "咪咪不怕水": 2.0, "有的猫不怕水": 3.0, "无法判断": 4.0,      # A; gold A
    "天晴了": 2.5, "天没有晴": 3.5, "山很高": 1.5, "无法确定": 4.5,              # C; gold B
    "甲说假话": 3.0, "两人都说真话": 2.0, "无法判断真假": 4.0, "乙说假话": 1.0,  # D; gold D
    "所有学生都健康": 5.0, "没有学生健康": 0.5, "有些学生很健康": 0.5,          # tie B, C:
    "学生不是运动员": 2.0,                                                      # B; gold C
    # logic_dev.csv (the "train" split)
    "王五最高": 2.0, "张三最高": 1.0, "李四最高": 3.0, "一样高": 3.0,            # B; gold B
    "小明努力了": 1.0, "小明没努力": 2.0, "小明很幸运": 3.0, "无从得知": 4.0,    # A; gold A
    # jec-qa-kd.jsonl
    "行政拘留": 2.0, "行政处分": 3.0, "警告": 1.0, "记过": 4.0,                  # C; gold A, C
    "债权": 1.0, "所有权": 2.0, "著作权": 3.0, "抵押权": 4.0,                    # A; gold B, D
    "罪刑法定": 4.0, "适用刑法人人平等": 3.0, "罪责刑相适应": 2.0, "有罪推定": 1.0,  # D; gold D
    "订立遗嘱": 2.0, "签订买卖合同": 1.0, "自然降雨": 3.0, "赠与财产": 4.0,      # B; gold A,B,D
}


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("CODEREASON_DATA_DIR", raising=False)


@pytest.fixture
def scored(monkeypatch):
    """Replace the model's scorer; returns the (prompt, scored span) of every row it saw."""
    import seqio

    seen = []

    class TableScorer:
        def __init__(self, model, params, batch_size=32):
            self.max_length = model.config.max_seq_len

        def __call__(self, rows):
            vocabulary = seqio.get_mixture_or_task("eval_logic").output_features[
                "targets"].vocabulary
            sums = []
            for row in rows:
                start = int(np.argmax(row.weights > 0))  # corrected: the span's weights
                assert row.weights[start:].tolist() == [1.0] * (len(row.weights) - start)
                prompt = vocabulary.decode(row.tokens[:start + 1].tolist())
                span = vocabulary.decode(row.tokens[start + 1:].tolist())
                match = LOGIC_PROMPT.match(prompt) or JECQA_PROMPT.match(prompt)
                assert match, prompt
                seen.append((prompt, span))
                # A sum of per-token NLLs whose mean is the table's value.
                sums.append(NLL[match.group(1)] * float(row.weights.sum()))
            return np.array(sums)

    monkeypatch.setattr(scoring, "RowScorer", TableScorer)
    return seen


def _run(tmp_path, *extra):
    output = tmp_path / "results.json"
    assert evaluate.main([*ARGV, f"--output={output}", *extra]) == 0
    return json.loads(output.read_text())["tasks"]


def _by_id(result):
    return {e["example_id"]: e for e in result["examples"]}


def test_logic_validation_split_reads_the_val_file(tmp_path, scored):
    result = _run(tmp_path, "--tasks=eval_logic")["eval_logic"]
    assert result["split"] == "validation" and result["n"] == 4
    assert result["kind"] == "multiple_choice" and result["mode"] == "corrected"
    examples = _by_id(result)
    assert sorted(examples) == ["0", "1", "2", "3"]
    # Candidates in option order A-D, each scored by its own option text.
    assert examples["0"]["scores"] == [1.0, 2.0, 3.0, 4.0]
    assert examples["1"]["scores"] == [2.5, 3.5, 1.5, 4.5]
    assert [(examples[i]["prediction"], examples[i]["label"]) for i in "0123"] == [
        (0, 0), (2, 1), (3, 3), (1, 2)]  # question 3: a tie goes to the first candidate
    assert result["metrics"]["accuracy"] == pytest.approx(50.0)
    assert result["chance"] == pytest.approx(25.0)
    # The channel direction: option in the prompt, the question (plus 。) scored.
    assert ("该答案：咪咪不怕水，可以回答如下问题：", "所有的猫都怕水，咪咪是猫，所以____。") in scored
    assert len(scored) == 16


def test_logic_train_split_reads_the_dev_file(tmp_path, scored):
    """EvalConfig.split maps 'train' to C-Eval's dev file: other questions, another result."""
    result = _run(tmp_path, "--tasks=eval_logic",
                  "--gin.EvalConfig.split={'eval_logic': 'train'}")["eval_logic"]
    assert result["split"] == "train" and result["n"] == 2
    examples = _by_id(result)
    assert examples["0"]["scores"] == [2.0, 1.0, 3.0, 3.0]
    assert [(examples[i]["prediction"], examples[i]["label"]) for i in "01"] == [(1, 1), (0, 0)]
    assert result["metrics"]["accuracy"] == pytest.approx(100.0)
    assert ("该答案：张三最高，可以回答如下问题：", "张三比李四高，李四比王五高，那么____。") in scored


def test_jecqa_multi_answer_questions_count_any_gold_option(tmp_path, scored):
    """Three of four right: question 0 picks C (gold A and C) and question 3 picks B (gold A,
    B, D); with only the first gold answer they would be wrong and the accuracy 25."""
    result = _run(tmp_path, "--tasks=eval_jecqa_kd")["eval_jecqa_kd"]
    assert result["split"] == "test" and result["n"] == 4
    examples = _by_id(result)
    # AGIEval lines have no id: the file stem and the line index.
    assert sorted(examples) == [f"jec-qa-kd-{i}" for i in range(4)]
    got = [(examples[f"jec-qa-kd-{i}"]["prediction"], examples[f"jec-qa-kd-{i}"]["labels"])
           for i in range(4)]
    assert got == [(2, [0, 2]), (0, [1, 3]), (3, [3]), (1, [0, 1, 3])]
    assert [examples[f"jec-qa-kd-{i}"]["label"] for i in range(4)] == [0, 1, 3, 0]
    assert examples["jec-qa-kd-0"]["scores"] == [2.0, 3.0, 1.0, 4.0]
    assert result["metrics"]["accuracy"] == pytest.approx(75.0)
    # Chance as scored: (2 + 2 + 1 + 3) gold of 4 options each, averaged.
    assert result["chance"] == pytest.approx(50.0)
    # The option's "(A)" prefix is stripped; JEC-QA's template says 以下, and scores the question.
    assert ("该答案：行政拘留，可以回答以下问题：", "下列哪些属于行政处罚？") in scored


def test_the_split_without_a_file_is_reported_not_scored(tmp_path, scored, capsys):
    """The val/dev mapping is what picks the file: JEC-QA has only a test split, and asking for
    validation is refused before any scoring."""
    output = tmp_path / "r.json"
    assert evaluate.main([*ARGV, f"--output={output}", "--tasks=eval_jecqa_kd",
                          "--gin.EvalConfig.split={'eval_jecqa_kd': 'validation'}"]) == 2
    assert "task eval_jecqa_kd has no split 'validation'" in capsys.readouterr().err
    assert scored == []
