"""Pre-training corpora and instruction sets: real formats, exact values, errors that say where.

Fixtures in tests/fixtures/corpora are invented content in the data sets' real layouts
(make_fixtures.py there rewrites the gzipped ones).
"""

import gzip
import hashlib
import json
import math
import os
import re

import pytest

from seqio_tasks.sources import corpora
from seqio_tasks.sources.corpora import ReadStats, read_codeparrot, read_text_dir, \
    split_by_hash, split_paragraphs
from seqio_tasks.sources.benchmarks import mbpp_split
from seqio_tasks.sources.files import DataFileError
from seqio_tasks.sources.instructions import PROMPT_TEMPLATES, cosqa_instructions, \
    format_prompt, mbpp_instructions, read_alpaca_style, read_pclue, sample

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "corpora")
CODEPARROT = os.path.join(FIXTURES, "codeparrot")
TEXT = os.path.join(FIXTURES, "text")
MBPP_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mbpp")


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEREASON_DATA_DIR", str(tmp_path))
    return str(tmp_path)


def write_gz_lines(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------ CodeParrot


def test_codeparrot_reads_shards_in_sorted_order():
    docs = list(read_codeparrot(CODEPARROT))
    assert [d["path"] for d in docs] == [
        "alice/tinyutils/tinyutils/maths.py", "bob/copyleft-tools/tools/greet.py",
        "carol/geometry/geometry/area.py", "dave/strings/strings/shout.py"]
    assert docs[0] == {"text": "def double(x):\n    return 2 * x\n",
                       "path": "alice/tinyutils/tinyutils/maths.py", "license": "mit"}
    # A glob and an explicit list in reverse give the same sorted / given order.
    assert list(read_codeparrot(os.path.join(CODEPARROT, "file-*.json.gz"))) == docs
    shards = sorted(os.listdir(CODEPARROT))
    reverse = [os.path.join(CODEPARROT, s) for s in reversed(shards)]
    assert [d["path"] for d in read_codeparrot(reverse)] == [
        "dave/strings/strings/shout.py", "alice/tinyutils/tinyutils/maths.py",
        "bob/copyleft-tools/tools/greet.py", "carol/geometry/geometry/area.py"]


def test_codeparrot_license_filter_counts_what_it_drops(caplog):
    stats = ReadStats()
    with caplog.at_level("INFO"):
        docs = list(read_codeparrot(CODEPARROT, licenses=corpora.PERMISSIVE_LICENSES,
                                    stats=stats))
    # "Apache-2.0" matches case-insensitively; the GPL file is dropped and counted.
    assert [d["license"] for d in docs] == ["mit", "Apache-2.0", "bsd-3-clause"]
    assert (stats.files, stats.documents, dict(stats.skipped)) == (2, 3, {"license=gpl-3.0": 1})
    assert "CodeParrot-clean: 3 documents from 2 files; skipped license=gpl-3.0: 1" in caplog.text


def test_codeparrot_errors_name_file_line_field(tmp_path, data_root):
    shard = tmp_path / "file-000000000009.json.gz"
    good = json.dumps({"repo_name": "r", "path": "p.py", "content": "x = 1\n", "license": "mit"})
    bad = json.dumps({"repo_name": "r", "path": "q.py", "license": "mit"})
    write_gz_lines(shard, [good, bad])
    with pytest.raises(DataFileError, match=re.escape(f"{shard}:2: missing field 'content'")):
        list(read_codeparrot(str(shard)))
    with pytest.raises(DataFileError) as err:
        read_codeparrot()  # nothing under $CODEREASON_DATA_DIR/codeparrot-clean
    assert f"{os.path.join(data_root, 'codeparrot-clean')} does not exist" in str(err.value)
    assert "codeparrot/codeparrot-clean" in str(err.value)
    with pytest.raises(DataFileError, match="no files match"):
        read_codeparrot(str(tmp_path / "nothing-*.json.gz"))
    absent = str(tmp_path / "file-000000000010.json.gz")
    with pytest.raises(DataFileError, match=re.escape(f"{absent} does not exist")):
        read_codeparrot([str(shard), absent])


# -------------------------------------------------------------------------- text directory


def test_text_dir_whole_files_sorted_with_ids():
    stats = ReadStats()
    docs = list(read_text_dir(TEXT, stats=stats))
    assert docs == [
        {"text": "第一段第一行。\n第一段第二行。\n\n  \nSecond paragraph.\n\n\n"
                 "    indented third paragraph\n", "id": "a.txt"},
        {"text": "JSON lines document one.", "id": "sub/b.jsonl:1"},
        {"text": "Document three.\nWith a second line.", "id": "sub/b.jsonl:4"},
        {"text": "压缩文件里的一篇短文。", "id": "sub/c.jsonl.gz:1"},
    ]
    assert (stats.files, stats.documents, dict(stats.skipped)) == (3, 4, {"empty document": 1})


def test_text_dir_paragraphs_mode_splits_txt_on_blank_lines():
    docs = list(read_text_dir(TEXT, txt_documents="paragraphs", extensions=[".txt"]))
    assert docs == [{"text": "第一段第一行。\n第一段第二行。", "id": "a.txt#0"},
                    {"text": "Second paragraph.", "id": "a.txt#1"},
                    {"text": "    indented third paragraph\n", "id": "a.txt#2"}]
    assert split_paragraphs("a\n\n\n\nb\n \t\nc") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="txt_documents='lines'"):
        read_text_dir(TEXT, txt_documents="lines")


def test_text_dir_jsonl_field_and_unknown_extensions(tmp_path):
    (tmp_path / "doc.jsonl").write_text('{"body": "one"}\n{"text": "two"}\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=re.escape(
            f"{tmp_path / 'doc.jsonl'}:1: missing field 'text'")):
        list(read_text_dir(str(tmp_path)))
    with pytest.raises(DataFileError, match=re.escape(
            f"{tmp_path / 'doc.jsonl'}:2: missing field 'body'")):
        list(read_text_dir(str(tmp_path), text_field="body"))

    (tmp_path / "doc.jsonl").write_text('{"text": "two"}\n', encoding="utf-8")
    (tmp_path / "README.md").write_text("about\n", encoding="utf-8")
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"x"))
    with pytest.raises(DataFileError) as err:
        read_text_dir(str(tmp_path))
    assert ".gz: notes.txt.gz; .md: README.md" in str(err.value)
    assert "extensions=" in str(err.value)
    stats = ReadStats()
    assert list(read_text_dir(str(tmp_path), extensions=["jsonl"], stats=stats)) == [
        {"text": "two", "id": "doc.jsonl:1"}]
    assert dict(stats.skipped) == {"file .gz": 1, "file .md": 1}
    with pytest.raises(ValueError, match=r"extensions \['.md'\] cannot be read"):
        read_text_dir(str(tmp_path), extensions=[".md"])


def test_text_dir_empty_or_missing(tmp_path):
    with pytest.raises(DataFileError, match=re.escape(f"{tmp_path} contains no files")):
        read_text_dir(str(tmp_path))
    with pytest.raises(DataFileError, match="is not a directory"):
        read_text_dir(str(tmp_path / "absent"))


# ---------------------------------------------------------------------------- hash splits


def _split_from_the_docstring(key, fraction, seed=0):
    """split_by_hash's documented rule, written out: SHA-256 of the seed, a NUL and the key; its
    first 8 bytes read big-endian as a fraction of 2**64; validation below ``fraction``."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()
    return "validation" if int(digest[:8].hex(), 16) < fraction * 2**64 else "train"


def test_split_by_hash_is_stable_and_roughly_proportional():
    # Pinned values: changing the hash would silently move documents between splits.
    assert [split_by_hash(k, 0.5) for k in ["a.txt#0", "a.txt#1", "sub/b.jsonl:1", "doc-7"]] == [
        "validation", "train", "train", "validation"]
    assert [split_by_hash(k, 0.5, seed=1) for k in ["a.txt#0", "a.txt#1", "doc-7"]] == [
        "train", "validation", "train"]
    keys = [f"k{i}" for i in range(20000)]
    splits = [split_by_hash(k, 0.1) for k in keys]
    # Each key where the documented rule puts it (this also recomputes the pinned values).
    assert splits == [_split_from_the_docstring(k, 0.1) for k in keys]
    for seed in (0, 1):
        for key in ["a.txt#0", "a.txt#1", "sub/b.jsonl:1", "doc-7"]:
            assert split_by_hash(key, 0.5, seed) == _split_from_the_docstring(key, 0.5, seed)
    # About 10 %: 2,000 expected of 20,000, binomial standard deviation sqrt(20000·0.1·0.9) ≈ 42;
    # four of them either way.
    assert abs(splits.count("validation") - 2000) < 4 * math.sqrt(20000 * 0.1 * 0.9)
    assert {split_by_hash(k, 0.0) for k in keys[:200]} == {"train"}
    assert {split_by_hash(k, 1.0) for k in keys[:200]} == {"validation"}
    with pytest.raises(ValueError, match="not in"):
        split_by_hash("k", 1.5)


# ------------------------------------------------------------------------------------ TFDS


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    """A two-split text data set built offline with a builder defined here (no download)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import numpy as np

    class CodereasonTinyTexts(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(), "n": tfds.features.Scalar(dtype=np.int64)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(["第一篇", "second doc", "third"]),
                    "validation": self._generate_examples(["held out"])}

        def _generate_examples(self, texts):
            for i, text in enumerate(texts):
                yield i, {"text": text, "n": i}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    CodereasonTinyTexts(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_reads_prepared_data(tiny_tfds):
    from seqio_tasks.sources.corpora import read_tfds_text
    assert list(read_tfds_text("codereason_tiny_texts", "train", tiny_tfds)) == [
        {"text": "第一篇"}, {"text": "second doc"}, {"text": "third"}]
    assert list(read_tfds_text("codereason_tiny_texts", "validation+train[:1]", tiny_tfds)) == [
        {"text": "held out"}, {"text": "第一篇"}]
    with pytest.raises(DataFileError, match=r"no split 'test'.*\['train', 'validation'\]"):
        read_tfds_text("codereason_tiny_texts", "test", tiny_tfds)
    with pytest.raises(DataFileError, match=r"no feature 'body'; features: \['n', 'text'\]"):
        read_tfds_text("codereason_tiny_texts", "train", tiny_tfds, text_field="body")
    with pytest.raises(DataFileError, match="field 'n' should be text"):
        list(read_tfds_text("codereason_tiny_texts", "train", tiny_tfds, text_field="n"))


def test_tfds_missing_data_says_how_to_prepare(tiny_tfds, data_root):
    from seqio_tasks.sources.corpora import read_tfds_text
    expected_dir = os.path.join(data_root, "tensorflow_datasets")
    with pytest.raises(DataFileError) as err:
        read_tfds_text("codereason_tiny_texts", "train")  # registered, never prepared here
    message = str(err.value)
    assert f"not prepared under {expected_dir}" in message
    assert f"`tfds build codereason_tiny_texts --data_dir={expected_dir}`" in message
    assert f"--manual_dir={os.path.join(expected_dir, 'downloads', 'manual')}" in message
    assert not os.path.exists(os.path.join(expected_dir, "codereason_tiny_texts"))
    with pytest.raises(DataFileError, match="no such registered builder"):
        read_tfds_text("codereason_no_such_set", "train", data_root)


# ----------------------------------------------------------------------- instruction sets


def test_alpaca_style_records_and_errors(tmp_path, data_root):
    path = os.path.join(FIXTURES, "alpaca", "alpaca_data.json")
    records = list(read_alpaca_style("alpaca", path))
    assert records == [
        {"instruction": "Name three primary colours.", "input": "",
         "output": "Red, yellow and blue.", "source": "alpaca"},
        {"instruction": "Translate the sentence into French.", "input": "The cat sleeps.",
         "output": "Le chat dort.", "source": "alpaca"},
        {"instruction": "用一句话解释什么是递归。", "input": "",
         "output": "递归是函数调用自身来解决更小规模的同一问题。", "source": "alpaca"}]

    bad = tmp_path / "code_alpaca_20k.json"
    bad.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"},
                               {"instruction": "c", "input": None, "output": "d"}]))
    with pytest.raises(DataFileError, match=re.escape(
            f"{bad} record 1: field 'input' should be str, got NoneType")):
        list(read_alpaca_style("code_alpaca", str(bad)))
    bad.write_text('{"instruction": "a"}')
    with pytest.raises(DataFileError, match="expected a JSON array"):
        read_alpaca_style("code_alpaca", str(bad))
    with pytest.raises(DataFileError) as err:
        read_alpaca_style("alpaca_gpt4_zh")
    expected = os.path.join(data_root, "alpaca_gpt4", "alpaca_gpt4_data_zh.json")
    assert f"{expected} does not exist" in str(err.value)
    assert "GPT-4-LLM" in str(err.value)
    with pytest.raises(ValueError, match="choose one of"):
        read_alpaca_style("dolly")


def test_pclue_natural_file_order_and_errors(tmp_path, data_root):
    records = list(read_pclue(os.path.join(FIXTURES, "pclue")))
    # pCLUE_train_2 before pCLUE_train_10; pCLUE_dev.json is not a train file.
    assert [r["output"] for r in records] == ["正面", "七点", "相同"]
    assert records[0] == {
        "instruction": "这句话表达的情感是正面还是负面？\n句子：这家店的面条很好吃。\n选项：正面，负面\n答案：",
        "input": "", "output": "正面", "source": "pclue"}
    dev = list(read_pclue(os.path.join(FIXTURES, "pclue"), pattern="pCLUE_dev.json"))
    assert [r["output"] for r in dev] == ["城市首次无人机表演"]

    bad = tmp_path / "pCLUE_train_1.json"
    bad.write_text('{"input": "q", "target": "a"}\n{"input": "q2", "target": 3}\n')
    with pytest.raises(DataFileError, match=re.escape(
            f"{bad}:2: field 'target' should be str, got int")):
        list(read_pclue(str(bad)))
    with pytest.raises(DataFileError, match=re.escape(
            f"{os.path.join(data_root, 'pclue')} does not exist")):
        read_pclue()


def test_sample_is_deterministic_uniform_size_and_order_preserving():
    population = list(range(100))
    first = sample(population, 10, seed=3)
    assert first == sample(iter(population), 10, seed=3)  # list or stream: same sample
    assert len(first) == 10 and len(set(first)) == 10 and first == sorted(first)
    assert first != sample(population, 10, seed=4)
    assert sample(population, 100, seed=0) == population
    assert sample(population, 0, seed=0) == []
    with pytest.raises(ValueError, match="only 100"):
        sample(population, 101, seed=0)
    # Roughly uniform: every item is picked about 10% of the time over many seeds.
    hits = [0] * 20
    for seed in range(500):
        for item in sample(range(20), 2, seed):
            hits[item] += 1
    assert min(hits) > 25 and max(hits) < 75


# -------------------------------------------------------------- our CosQA / MBPP conversion


def test_cosqa_conversion():
    with open(os.path.join(FIXTURES, "cosqa", "cosqa-train.json"), encoding="utf-8") as f:
        raw = json.load(f)
    en = list(cosqa_instructions(raw))
    assert en[0] == {
        "instruction": ("Does the following Python code answer the query?\n"
                        "Query: python reverse a list in place\nCode:\n"
                        "def reverse_in_place(items):\n    \"\"\"Reverse items without a copy.\"\"\"\n"
                        "    items.reverse()\n    return items\n"
                        "Options: correct, wrong\nAnswer:"),
        "input": "", "output": "correct", "source": "cosqa"}
    assert en[1]["output"] == "wrong"
    zh = list(cosqa_instructions(raw, language="zh"))
    assert [r["output"] for r in zh] == ["是", "否"]
    assert zh[0]["instruction"].startswith(
        "判断下面的 Python 代码是否回答了问题。\n问题：python reverse a list in place\n代码：\n")
    assert zh[0]["instruction"].endswith("\n选项：是，否\n答案：")
    with pytest.raises(DataFileError, match="cosqa-train.json record 1: field 'label' should be "
                                            "0 or 1, got 2"):
        list(cosqa_instructions([raw[0], dict(raw[1], label=2)], origin="cosqa-train.json"))
    with pytest.raises(DataFileError, match="record 0: missing field 'doc'"):
        list(cosqa_instructions([{"code": "x", "label": 1}]))


def test_mbpp_conversion_full_and_sanitized_fields():
    full = {"task_id": 700, "text": "Write a function to add two numbers. ",
            "code": "def add(a, b):\r\n\treturn a + b\r", "test_list": [
                "assert add(1, 2) == 3", "assert add(0, 0) == 0"],
            "test_setup_code": "", "challenge_test_list": []}
    sanitized = {"source_file": "x.ipynb", "task_id": 701,
                 "prompt": "Write a function to negate.",
                 "code": "def neg(a):\n    return -a", "test_imports": [],
                 "test_list": ["assert neg(1) == -1"]}
    assert list(mbpp_instructions([full, sanitized])) == [
        {"instruction": ("Write a function to add two numbers.\nYour code should pass these "
                         "tests:\nassert add(1, 2) == 3\nassert add(0, 0) == 0"),
         "input": "", "output": "def add(a, b):\n\treturn a + b\n", "source": "mbpp"},
        {"instruction": "Write a function to negate.\nYour code should pass these tests:\n"
                        "assert neg(1) == -1",
         "input": "", "output": "def neg(a):\n    return -a", "source": "mbpp"}]
    assert next(mbpp_instructions([full], include_tests=False))["instruction"] == (
        "Write a function to add two numbers.")
    with pytest.raises(DataFileError, match="mbpp.jsonl record 0: missing field 'text'"):
        list(mbpp_instructions([{"task_id": 1, "code": "x"}], origin="mbpp.jsonl"))
    with pytest.raises(DataFileError, match="record 0: field 'test_list' item 1 should be str"):
        list(mbpp_instructions([dict(full, test_list=["assert 1", 2])]))
    assert [mbpp_split(i) for i in (1, 10, 11, 510, 511, 600, 601, 974)] == [
        "prompt", "prompt", "test", "test", "validation", "validation", "train", "train"]
    with pytest.raises(ValueError, match="outside 1..974"):
        mbpp_split(975)


def test_mbpp_train_split_of_the_real_file():
    path = os.path.join(MBPP_DIR, "mbpp.jsonl")
    if not os.path.exists(path):
        pytest.skip(f"{MBPP_DIR} is absent (the shared data directory is not checked out)")
    with open(path, encoding="utf-8") as f:
        raw = [json.loads(line) for line in f if line.strip()]
    train = [r for r in raw if mbpp_split(r["task_id"]) == "train"]
    records = list(mbpp_instructions(train, origin=path))
    assert len(records) == 374
    assert [r["task_id"] for r in train[:1] + train[-1:]] == [601, 974]
    assert all(r["output"] and "\r" not in r["output"] for r in records)
    first_tests = "\n".join(train[0]["test_list"])
    assert records[0]["instruction"] == (
        f"{train[0]['text'].strip()}\nYour code should pass these tests:\n{first_tests}")


# --------------------------------------------------------------------------- prompt templates


def test_prompt_templates_exact_strings():
    with_input = {"instruction": "Translate.", "input": "Hallo", "output": "Hello",
                  "source": "alpaca"}
    no_input = dict(with_input, input="")
    assert format_prompt(with_input, "paper") == ("Translate.\nHallo", "Hello")
    assert format_prompt(no_input, "paper") == ("Translate.", "Hello")
    assert format_prompt(with_input, "alpaca_en") == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate.\n\n### Input:\nHallo\n\n### Response:", "Hello")
    assert format_prompt(no_input, "alpaca_en") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nTranslate.\n\n### Response:", "Hello")
    assert format_prompt(with_input, "alpaca_zh")[0] == (
        "以下是一个描述任务的指令，并附有一个提供更多上下文的输入。请写出一个恰当完成该请求的响应。\n\n"
        "### 指令:\nTranslate.\n\n### 输入:\nHallo\n\n### 响应:")
    assert format_prompt(no_input, "alpaca_zh")[0] == (
        "以下是一个描述任务的指令。请写出一个恰当完成该请求的响应。\n\n### 指令:\nTranslate.\n\n### 响应:")
    # Braces in the data are not template fields.
    assert format_prompt(dict(no_input, instruction="f'{x}'"), "paper")[0] == "f'{x}'"
    assert sorted(PROMPT_TEMPLATES) == ["alpaca_en", "alpaca_zh", "paper"]
    with pytest.raises(ValueError, match=r"unknown prompt template 'vicuna'; choose one of "
                                         r"\['alpaca_en', 'alpaca_zh', 'paper'\]"):
        format_prompt(with_input, "vicuna")
    with pytest.raises(DataFileError, match="alpaca record: missing field 'output'"):
        format_prompt({"instruction": "a", "input": "", "source": "alpaca"}, "paper")

