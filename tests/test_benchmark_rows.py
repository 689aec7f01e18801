"""Records that cannot be scored: skipped and counted by reason, strict mode, the threshold.

tests/fixtures/benchmarks_messy/ holds each benchmark in its published format (JSON lines with
CRLF, CSV with a byte-order mark, JSON arrays) with the anomalies real files have; the expected
counts below were worked out by hand from make_fixtures.py. The published files themselves are
read when ../shared/data is present (the development workspace) and skipped otherwise.
"""

import hashlib
import json
import os

import pytest

from seqio_tasks.benchmark_tasks import Benchmark, chance
from seqio_tasks import eval_templates as T
from seqio_tasks.sources import benchmarks as B
from seqio_tasks.sources import rows as R
from seqio_tasks.sources.files import DataFileError

HERE = os.path.dirname(os.path.abspath(__file__))
MESSY = os.path.join(HERE, "fixtures", "benchmarks_messy")
REAL = os.path.join(HERE, "..", "..", "shared", "data")
LOOSE = R.ReadPolicy(max_skipped_fraction=1.0)
STRICT = R.ReadPolicy(strict=True)


@pytest.fixture
def messy_root(monkeypatch):
    monkeypatch.setenv("CODEREASON_DATA_DIR", MESSY)


@pytest.fixture
def real_root(monkeypatch):
    if not os.path.isdir(REAL):
        pytest.skip("../shared/data is absent (only in the development workspace)")
    monkeypatch.setenv("CODEREASON_DATA_DIR", REAL)
    return REAL


# ----------------------------------------------------------------------------- letters

@pytest.mark.parametrize("value,letter", [("A", "A"), (" b ", "B"), ("Ｄ", "D"), ("ｃ", "C"),
                                          ("。", None), ("AB", None), ("1", None), (3, None),
                                          ("", None)])
def test_normalize_letter(value, letter):
    assert R.normalize_letter(value) == letter


def test_option_index_reasons():
    assert R.option_index("Ｂ ", 4, "label", "f:1") == 1
    for value, reason in [("", R.EMPTY_ANSWER), (None, R.EMPTY_ANSWER), ("。", R.NOT_A_LETTER),
                          ("E", R.NOT_AN_OPTION)]:
        with pytest.raises(R.RowError) as err:
            R.option_index(value, 4, "label", "f:1")
        assert err.value.reason == reason and str(err.value).startswith("f:1: field 'label'")


# ----------------------------------------------------------------------------- messy fixtures

MESSY_EXPECTED = {
    # reader: (ids kept, gold, skipped by reason with places, filtered)
    "jecqa": (B.read_jecqa,
              ["jec-qa-kd-0", "jec-qa-kd-1", "jec-qa-kd-4", "jec-qa-kd-8", "jec-qa-kd-10"],
              [[1], [0, 2], [3], [1], [2]],
              {R.EMPTY_ANSWER: ["line 3"], R.NOT_A_LETTER: ["line 4"],
               R.NOT_AN_OPTION: ["line 6"], R.OPTION_COUNT: ["line 7"],
               R.UNDECODABLE: ["line 8"], R.NOT_JSON: ["line 11"]}, {}),
    "logic": (B.read_logic, ["0", "1", "5"], [0, 1, 2],
              {R.EMPTY_ANSWER: ["line 4"], R.NOT_AN_OPTION: ["line 5"],
               R.NOT_A_LETTER: ["line 7"], R.DUPLICATE_ID: ["line 8"]}, {}),
    "cosqa": (B.read_cosqa, ["cosqa-dev-0", "cosqa-dev-1", "cosqa-dev-6"], [1, 0, 1],
              {R.NOT_AN_OPTION: ["record 2"], R.MISSING_FIELD: ["record 3"],
               R.DUPLICATE_ID: ["record 4"], R.EMPTY_ANSWER: ["record 5"]}, {}),
    "scienceqa": (B.read_scienceqa, ["1", "2"], [1, 0],
                  {R.NOT_AN_OPTION: ["problem '3'"], R.OPTION_COUNT: ["problem '4'"]},
                  {"has image": 1, "empty lecture or solution": 1}),
    "ekar": (B.read_ekar, ["ekar-0", "ekar-1", "ekar-5"], [1, 2, 3],
             {R.EMPTY_ANSWER: ["line 3"], R.NOT_AN_OPTION: ["line 4"],
              R.OPTION_COUNT: ["line 5"]}, {}),
    "c3": (B.read_c3, ["9-1#0", "9-3#0"], [1, 1],
           {R.NOT_AN_OPTION: ["item 0 (id '9-1'), question 1"], R.MISSING_FIELD: ["item 1"]},
           {}),
    "ocnli": (B.read_ocnli, ["0", "1", "3", "6"], [0, 1, 2, 0],
              {R.MISSING_FIELD: ["line 5"], R.DUPLICATE_ID: ["line 6"]},
              {R.NO_GOLD_LABEL: 1}),
    "mbpp": (B.read_mbpp, [11, 700], ["test", "train"],
             {R.NO_TESTS: ["record 2"], R.BAD_ID: ["record 3"], R.DUPLICATE_ID: ["record 4"],
              R.EMPTY_ANSWER: ["record 5"]}, {}),
    "dureader": (B.read_dureader, ["q1", "q3"], [["每周一"], ["周二"]],
                 {R.EMPTY_ANSWER: ["data[0].paragraphs[0].qas[1]"],
                  R.DUPLICATE_ID: ["data[0].paragraphs[1].qas[1]"]}, {}),
}


@pytest.mark.parametrize("name", sorted(MESSY_EXPECTED))
def test_messy_files_skip_and_count_by_reason(name, messy_root, caplog):
    reader, ids, gold, skipped_at, filtered = MESSY_EXPECTED[name]
    records = reader(policy=LOOSE)
    assert [r.get("id", r.get("task_id")) for r in records] == ids
    gold_field = {"jecqa": "labels", "mbpp": "split", "dureader": "answers"}.get(name, "label")
    assert [r[gold_field] for r in records] == gold
    assert records.skipped_at == skipped_at
    assert records.skipped == {reason: len(at) for reason, at in skipped_at.items()}
    assert records.filtered == filtered
    # One warning line names the file, the counts and the places.
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"{records.source}: skipped {records.num_skipped} of "
                              f"{records.num_skipped + len(records)} records")
    assert all(place in warning for at in skipped_at.values() for place in at)


def test_messy_records_are_normalized(messy_root):
    jecqa = B.read_jecqa(policy=LOOSE)
    # Unknown fields are dropped, option texts lose their "(A)" prefix and padding.
    assert jecqa[1] == {"id": "jec-qa-kd-1", "question": "下列哪些属于行政处罚？",
                        "choices": ["罚款", "警告", "拘留", "判刑"], "labels": [0, 2]}
    logic = B.read_logic(policy=LOOSE)
    assert logic[0]["choices"][1] == "企鹅不会飞" and "source" not in logic[0]
    c3 = B.read_c3(policy=LOOSE)
    assert c3[1]["choices"][c3[1]["label"]] == "八点 "  # matched despite the padding


@pytest.mark.parametrize("name,first", [
    ("jecqa", r"jec-qa-kd\.jsonl:3: field 'label' is an empty list"),
    ("logic", r"logic_val\.csv:4: field 'answer' is empty"),
    ("cosqa", r"cosqa-dev\.json: record 2: field 'label' should be 0 or 1, got 2"),
    ("ocnli", r"ocnli/dev\.json:5: missing field 'sentence2'"),
    ("mbpp", r"sanitized-mbpp\.json: record 2: field 'test_list' holds no test"),
])
def test_strict_mode_stops_at_the_first_bad_record(name, first, messy_root):
    with pytest.raises(DataFileError, match=first + r".*\[strict mode"):
        MESSY_EXPECTED[name][0](policy=STRICT)


def test_threshold_refuses_a_file_scored_on_a_sliver(messy_root, caplog):
    with pytest.raises(DataFileError) as err:
        B.read_jecqa()  # 6 of 11 unscorable, default threshold 5%
    message = str(err.value)
    assert "6 of 11 records (54.5%) cannot be scored" in message
    assert "empty answer at line 3" in message and "EvalConfig.max_skipped_fraction" in message
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # the error says it all
    assert len(B.read_jecqa(policy=R.ReadPolicy(max_skipped_fraction=0.6))) == 5
    with pytest.raises(DataFileError, match="6 of 11"):
        B.read_jecqa(policy=R.ReadPolicy(max_skipped_fraction=0.5))
    with R.read_policy(R.ReadPolicy(max_skipped_fraction=0.6)):  # how the evaluator sets it
        assert len(B.read_jecqa()) == 5
    with pytest.raises(ValueError, match="max_skipped_fraction"):
        R.ReadPolicy(max_skipped_fraction=1.5)


def test_whole_file_problems_are_errors_even_when_not_strict(tmp_path):
    path = tmp_path / "cosqa-dev.json"
    path.write_text('{"idx": 0}')
    with pytest.raises(DataFileError, match="expected a JSON array, got dict"):
        B.read_cosqa(str(path), policy=LOOSE)
    path = tmp_path / "logic_val.csv"
    path.write_text("id,question,A,B\n0,q,a,b\n")
    with pytest.raises(DataFileError, match=r"logic_val\.csv:1: header lacks column"):
        B.read_logic(str(path), policy=LOOSE)


def test_undecodable_bytes_in_a_json_array_skip_only_their_record(tmp_path):
    good = {"idx": "a", "doc": "q", "code": "c", "label": 1}
    text = json.dumps([good, dict(good, idx="b", doc="@@")]).encode()
    path = tmp_path / "cosqa-dev.json"
    path.write_bytes(text.replace(b"@@", b"\xff\xfe"))
    records = B.read_cosqa(str(path), policy=LOOSE)
    assert [r["id"] for r in records] == ["a"] and records.skipped == {R.UNDECODABLE: 1}


# ----------------------------------------------------------------------------- tasks

def test_benchmark_examples_chance_and_template_failures(messy_root, monkeypatch):
    jecqa = Benchmark(B.read_jecqa, T.jecqa_candidates, {"test": {}}, "test")
    loaded = jecqa.load("test", LOOSE)
    # Gold sets [1], [0, 2], [3], [1], [2] of 4 options: (1 + 2 + 1 + 1 + 1) / 20.
    assert loaded.chance == pytest.approx(6 / 20)
    assert loaded.examples.skipped[R.EMPTY_ANSWER] == 1 and len(loaded.examples) == 5
    with open(os.path.join(MESSY, "jecqa", "jec-qa-kd.jsonl"), "rb") as f:
        assert loaded.data_sha256 == hashlib.sha256(f.read()).hexdigest()
    assert jecqa.load("test", LOOSE) is loaded  # read once per data root and policy
    assert len(jecqa.load("test", R.ReadPolicy(max_skipped_fraction=0.9)).examples) == 5
    assert jecqa.load("test", R.ReadPolicy(max_skipped_fraction=0.9)) is not loaded
    # The CoT template needs an explanation per option: an item without them is skipped.
    short = Benchmark(B.read_ekar, lambda r: T.ekar_cot_candidates(
        dict(r, explanation=r["explanation"][:2] if r["id"] == "ekar-1" else
             r["explanation"])), {"test": {}}, "test")
    examples = short.load("test", LOOSE).examples
    assert [e["id"] for e in examples] == ["ekar-0", "ekar-5"]
    assert examples.skipped["cannot fill the template"] == 1
    assert examples.skipped[R.EMPTY_ANSWER] == 1  # the reader's counts are kept
    with pytest.raises(ValueError, match="no split 'validation'; splits: \\['test'\\]"):
        short.load("validation")
    # Another data root is another file (tests/fixtures/benchmarks: three clean questions).
    monkeypatch.setenv("CODEREASON_DATA_DIR", os.path.join(HERE, "fixtures", "benchmarks"))
    clean = jecqa.load("test", LOOSE)
    assert len(clean.examples) == 3 and clean.examples.skipped == {}
    assert clean.chance == pytest.approx((1 + 3 + 1) / 12)  # gold [0], [0, 1, 3], [3]



def test_short_lived_benchmarks_never_get_each_others_examples(tmp_path):
    """The cache is keyed on the benchmark object: a new benchmark built where a freed one
    lived (CPython reuses addresses) must read its own reader, not the old one's examples."""
    source = tmp_path / "questions.jsonl"
    source.write_text("{}\n")
    for n in range(1, 30):
        def reader(policy, n=n):
            return R.Records([{"id": i} for i in range(n)], source=str(source))

        benchmark = Benchmark(reader, lambda r: dict(r, candidates=["a", "b"], labels=[0]),
                              {"test": {}}, "test")
        examples = benchmark.load("test", LOOSE).examples
        del benchmark
        assert [example["id"] for example in examples] == list(range(n))


def test_chance_counts_every_gold_answer():
    examples = [{"labels": [0], "candidates": [0] * 4}, {"labels": [0, 1, 3], "candidates": [0] * 4},
                {"labels": [1], "candidates": [0] * 2}]
    assert chance(examples) == pytest.approx((0.25 + 0.75 + 0.5) / 3)


def test_task_default_splits():
    from seqio_tasks import tasks
    assert {n: tasks.default_split(n) for n in (
        "eval_logic", "eval_jecqa_kd", "eval_scienceqa", "eval_ekar", "eval_cosqa", "eval_mbpp",
        "eval_mbpp_with_tests", "eval_embedded_codeqa")} == {
        "eval_logic": "validation", "eval_jecqa_kd": "test", "eval_scienceqa": "test",
        "eval_ekar": "test", "eval_cosqa": "validation", "eval_mbpp": "all",
        "eval_mbpp_with_tests": "test", "eval_embedded_codeqa": "validation"}


# ----------------------------------------------------------------------------- published files

def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("subset,line,reason", [("kd", 212, R.EMPTY_ANSWER),
                                                ("ca", 49, R.NOT_A_LETTER)])
def test_real_jecqa(subset, line, reason, real_root):
    from seqio_tasks import tasks
    loaded = tasks.BENCHMARKS[f"eval_jecqa_{subset}"].load("test", R.ReadPolicy())
    records = loaded.examples
    assert len(records) == 999 and records.skipped == {reason: 1}
    assert records.skipped_at == {reason: [f"line {line}"]}
    # Chance from the raw file, independently: each question adds |gold letters| / 4.
    raw = _jsonl(os.path.join(real_root, "jecqa", f"jec-qa-{subset}.jsonl"))
    kept = [r for i, r in enumerate(raw, start=1) if i != line]
    expected = sum(len(set(r["label"])) / 4 for r in kept) / len(kept)
    assert loaded.chance == pytest.approx(expected) and 0.44 < expected < 0.50
    with pytest.raises(DataFileError, match=f"jec-qa-{subset}\\.jsonl:{line}: "):
        B.read_jecqa(subset=subset, policy=STRICT)


def test_real_files_load_with_their_counts(real_root):
    from seqio_tasks import tasks
    counts = {}
    for name in ("eval_logic", "eval_cosqa", "eval_c3", "eval_ocnli", "eval_mbpp",
                 "eval_mbpp_with_tests", "eval_dureader", "eval_scienceqa"):
        benchmark = tasks.BENCHMARKS[name]
        examples = benchmark.load(benchmark.default_split, R.ReadPolicy()).examples
        counts[name] = (len(examples), examples.num_skipped, sum(examples.filtered.values()))
    assert counts == {"eval_logic": (22, 0, 0), "eval_cosqa": (604, 0, 0),
                      "eval_c3": (1825, 0, 0), "eval_ocnli": (2950, 0, 50),
                      "eval_mbpp": (427, 0, 0), "eval_mbpp_with_tests": (257, 0, 0),
                      "eval_dureader": (1417, 0, 0),
                      # the 50 test problems of the partial problems.json: 24 have an image,
                      # 2 an empty lecture or solution
                      "eval_scienceqa": (24, 0, 26)}
    # OCNLI's '-' items are no defect: strict mode reads the whole file.
    assert len(B.read_ocnli(policy=STRICT)) == 2950
