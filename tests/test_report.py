"""The report builder on results files constructed here in evaluate's format: tables with
fixed decimals, bold only for a significant best, panels with chance lines, the paper's values
beside ours, claim marks, and the self-contained HTML."""

import csv
import json
import re

import numpy as np
import pytest

from codereason_jax import report
from codereason_jax.evaluation.eval_metrics.bleu import example_bleu_counts
from codereason_jax.reporting import claims, numbers, paper, panels


def _run(vocab, accuracy, n=100, bleu=1.5, mode="corrected"):
    return {"vocabulary": {"sha256": vocab, "file": "v.model", "size": 8192},
            "tasks": {
                "eval_embedded_codeqa": {"kind": "multiple_choice", "mode": mode, "n": n,
                                         "metrics": {"accuracy": accuracy,
                                                     "accuracy_ci95": [accuracy - 5,
                                                                       accuracy + 5]}},
                "eval_embedded_codegen": {"kind": "generation", "n": 40,
                                          "sampling": {"method": "greedy"},
                                          "metrics": {"bleu_paper": bleu, "bleu_corpus": 1.0}}}}


def test_report_labels_incomparable_runs_and_bolds_nothing_without_examples(tmp_path, capsys):
    paths = []
    for name, run in [("nl", _run("aaa", 51.0)), ("code", _run("aaa", 60.0, bleu=4.0)),
                      ("other", _run("bbb", 70.0, n=50))]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(run))
        paths.append(str(path))
    out_dir = tmp_path / "report"
    code = report.main(paths + ["--labels=NL,CODE,OTHER", "--tables=embedded",
                                f"--output_dir={out_dir}"])
    assert code == 0
    markdown = (out_dir / "table_embedded.md").read_text()
    assert "| task (metric) | NL | CODE | OTHER |" in markdown
    # Accuracy with one decimal. No per-example data: nothing can be shown significant, so
    # nothing is bold (the highest, OTHER, is not even comparable).
    assert "51.0 [46.0, 56.0] n=100" in markdown
    assert "70.0 [65.0, 75.0] n=50 †" in markdown and "**" not in markdown
    assert "† OTHER on eval_embedded_codeqa" in markdown and "not comparable" in markdown
    assert "4.00 n=40" in markdown  # BLEU with two decimals
    # On the generation task OTHER differs only in its vocabulary: that alone is incomparable.
    assert "| eval_embedded_codegen (bleu_paper) | 1.50 n=40 | 4.00 n=40 | 1.50 n=40 † |" in (
        markdown)
    assert "† OTHER on eval_embedded_codegen" in markdown
    rows = list(csv.DictReader(open(out_dir / "table_embedded.csv")))
    assert [(r["task"], r["run"], r["comparable"]) for r in rows] == [
        (task, run, str(run != "OTHER")) for task in ("eval_embedded_codeqa",
                                                       "eval_embedded_codegen")
        for run in ("NL", "CODE", "OTHER")]
    # Another scoring mode or another sampling is incomparable too, each on its own.
    other_mode = _run("aaa", 60.0, mode="paper")
    other_sampling = _run("aaa", 60.0)
    other_sampling["tasks"]["eval_embedded_codegen"]["sampling"] = {"method": "top_p"}
    cells, _, _ = report.build_table([_run("aaa", 51.0), other_mode, other_sampling],
                                     ["A", "B", "C"], ["eval_embedded_codeqa",
                                                       "eval_embedded_codegen"])
    assert [[c.endswith(" †") for c in row[1:]] for row in cells] == [
        [False, True, False], [False, False, True]]
    assert (out_dir / "table_embedded.png").stat().st_size > 5000
    for name in ("report.md", "report.html", "report.json"):
        assert (out_dir / name).exists(), name


def test_report_errors(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_run("aaa", 50.0)))
    out = f"--output_dir={tmp_path}/o"
    assert report.main([str(path), "--labels=A,B", out]) == 2
    assert "2 labels for 1 results files" in capsys.readouterr().err
    assert report.main([str(path), "--tables=9", out]) == 2
    assert "unknown tables ['9']" in capsys.readouterr().err
    assert report.main([str(path), "--tables=2", out]) == 2  # no task of Table 2 in the file
    assert "none of the chosen tables has a task present" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing.json"), out]) == 2
    assert "cannot read results file" in capsys.readouterr().err


def _jecqa(accuracy, low, high, skipped):
    return {"kind": "multiple_choice", "mode": "corrected", "n": 999, "split": "test",
            "chance": 49.1, "data": {"skipped": skipped},
            "metrics": {"accuracy": accuracy, "accuracy_ci95": [low, high]}}


def test_report_shows_chance_skipped_and_marks_results_at_chance():
    runs = [dict(_run("aaa", 50.0), tasks={"eval_jecqa_kd": _jecqa(50.5, 47.4, 53.6,
                                                                    {"empty answer": 1})}),
            dict(_run("aaa", 50.0), tasks={"eval_jecqa_kd": _jecqa(56.0, 52.9, 59.1, {})})]
    rows, notes, raw = report.build_table(runs, ["NL", "CODE"], ["eval_jecqa_kd"])
    assert rows == [["eval_jecqa_kd (accuracy; chance 49.1)",
                     "50.5 [47.4, 53.6] ≈ n=999 (1 skipped)", "56.0 [52.9, 59.1] n=999"]]
    assert notes == [report.AT_CHANCE_NOTE]
    assert [(r["covers_chance"], r["skipped"], r["chance"]) for r in raw] == [
        (True, 1, 49.1), (False, 0, 49.1)]


def test_run_summary_lists_split_skipped_chance_and_failures():
    run = {"checkpoint": "/runs/code", "step": 1000,
           "tasks": {"eval_jecqa_kd": _jecqa(50.5, 47.4, 53.6, {"empty answer": 1})},
           "failed": {"eval_ekar": "ekar_chinese/test.json does not exist"}}
    summary = report.run_summary(run)
    assert summary.startswith("# Evaluation of /runs/code, step 1000\n")
    assert ("| eval_jecqa_kd | test | accuracy | 50.5 [47.4, 53.6] | 999 | 1 (empty answer 1) "
            "| 49.10 | ≈ |") in summary
    assert "- **eval_ekar failed**: ekar_chinese/test.json does not exist" in summary
    # A failure of a task that still has a row marks that row as an earlier result.
    rerun = report.run_summary(dict(run, checkpoint=None, init_seed=7,
                                    failed={"eval_jecqa_kd": "out of memory"}))
    assert rerun.startswith("# Evaluation of fresh initialisation (seed 7), step 1000\n")
    assert ("- **eval_jecqa_kd failed** (the row above is an earlier result, computed with "
            "other settings): out of memory") in rerun


# --------------------------------------------------------------- results with per-example data

SCIENTIFIC = re.compile(r"\d\.?\d*[eE][-+]?\d")


def _mc(correct, choices=4):
    """A multiple-choice task result: ``correct`` is one bool per example."""
    examples = [{"example_id": f"q{i}", "prediction": 0 if ok else 1, "labels": [0],
                 "scores": [0.0, 0.0]} for i, ok in enumerate(correct)]
    accuracy = 100 * float(np.mean(correct))
    return {"kind": "multiple_choice", "mode": "corrected", "n": len(correct),
            "chance": 100 / choices, "metrics": {"accuracy": accuracy,
                                                 "accuracy_ci95": [accuracy - 6, accuracy + 6]},
            "examples": examples}


def _generation(hits, n=60):
    """A generation result whose first ``hits`` predictions copy the reference."""
    references = [f"def f{i}(x):\n    return x + {i}" for i in range(n)]
    predictions = [r if i < hits else "" for i, r in enumerate(references)]
    counts = example_bleu_counts([[r.split()] for r in references],
                                 [p.split() for p in predictions])
    return {"kind": "generation", "n": n, "chance": None, "sampling": {"method": "greedy"},
            "metrics": {"bleu_paper": 1e-12, "bleu_corpus": float(hits),
                        "bleu_corpus_ci95": [1.5e-35, hits + 2.0]},
            "examples": [{"example_id": f"g{i}", "prediction": p, "reference": r,
                          "bleu_counts": c.tolist()}
                         for i, (p, r, c) in enumerate(zip(predictions, references, counts))]}


def _lm(nll_per_token, n=40):
    examples = [{"nll_sum": nll_per_token * 100 + (i % 5), "tokens": 100} for i in range(n)]
    return {"kind": "language_modelling", "n": n, "chance": 9.010913347279288,
            "metrics": {"loss": nll_per_token, "loss_ci95": [nll_per_token - 0.1,
                                                            nll_per_token + 0.1]},
            "examples": examples}


def _results(tasks):
    return {"vocabulary": {"sha256": "aaa", "file": "v.model", "size": 8192}, "tasks": tasks}


def _write(tmp_path, name, run):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(run))
    return str(path)


def test_numbers_have_fixed_decimals_per_metric_and_never_scientific_notation():
    assert numbers.fmt(6.11e-12, "bleu_corpus") == "0.00"
    assert numbers.fmt(1.51e-35, "BLEU") == "0.00"
    assert numbers.fmt(48.0, "accuracy") == "48.0"
    assert numbers.fmt(5.69378637, "loss") == "5.694"
    assert numbers.fmt(-1e-9, "loss", signed=True) == "+0.000"
    assert numbers.fmt(12.5, "pass@1") == "12.5"
    assert numbers.fmt_ci([2.2e-07, 0.0022], "bleu_corpus") == "[0.00, 0.00]"
    assert numbers.fmt(1e22, "bleu") == "1" + "0" * 22 + ".00"  # positional, however large
    assert numbers.fmt(-0.0004, "loss") == "0.000"  # a rounded zero carries no sign
    assert numbers.fmt(float("nan"), "accuracy") == "n/a"
    assert numbers.fmt(None, "loss") == "–"


def test_bold_only_for_a_significant_best_never_among_equals():
    strong = [i % 10 != 0 for i in range(200)]   # 90 %
    weak = [i % 2 == 0 for i in range(200)]      # 50 %
    near = [i % 10 not in (0, 1) for i in range(200)]  # 80 %: not surely below 90 %
    runs = [_results({"eval_cosqa": _mc(weak), "eval_logic": _mc(weak),
                      "eval_ekar": _mc(weak)}),
            _results({"eval_cosqa": _mc(strong), "eval_logic": _mc(weak),
                      "eval_ekar": _mc(strong)}),
            _results({"eval_cosqa": _mc(weak), "eval_logic": _mc(weak),
                      "eval_ekar": _mc(strong[:180] + near[180:])})]
    rows, notes, raw = report.build_table(runs, ["A", "B", "C"],
                                          ["eval_cosqa", "eval_logic", "eval_ekar"], 300)
    cosqa, logic, ekar = rows
    assert [c.startswith("**") for c in cosqa[1:]] == [False, True, False]
    assert not any("**" in c for c in logic[1:])  # three equal runs: no best
    assert not any("**" in c for c in ekar[1:])   # B ties C within noise: no bold
    assert report.BOLD_NOTE in notes
    by = {(r["task"], r["run"]): r for r in raw}
    assert by["eval_cosqa", "B"]["better_than"] == ["A", "C"]
    assert by["eval_cosqa", "B"]["significant_best"] and not by["eval_ekar", "B"][
        "significant_best"]


def test_panels_one_per_task_with_chance_lines_only_where_defined():
    runs = [_results({"eval_cosqa": _mc([i % 2 == 0 for i in range(100)]),
                      "eval_mbpp": _generation(5), "embedded_code": _lm(6.0)}),
            _results({"eval_cosqa": _mc([i % 10 != 0 for i in range(100)]),
                      "eval_mbpp": _generation(40), "embedded_code": _lm(5.0)})]
    _, _, raw = report.build_table(runs, ["NL", "CODE"],
                                   ["eval_cosqa", "eval_mbpp", "embedded_code"], 200)
    fig = panels.table_figure(raw, ["NL", "CODE"], "t")
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["cosqa (accuracy)", "mbpp (bleu_corpus)", "embedded_code (loss)"]
    chance = [[line for line in ax.get_lines() if line.get_label() == panels.CHANCE_LABEL]
              for ax in fig.axes]
    assert [len(c) for c in chance] == [1, 0, 1]
    assert chance[0][0].get_ydata()[0] == 25.0
    assert chance[2][0].get_ydata()[0] == pytest.approx(9.0109, abs=1e-4)
    units = [ax.get_ylabel() for ax in fig.axes]
    assert units == ["accuracy (%)", "BLEU (0–100)", "loss (nats/token, lower is better)"]
    # CODE is significantly better on all three: one bracket per panel.
    marks = [[line for line in ax.get_lines() if line.get_gid() == "significant"]
             for ax in fig.axes]
    assert [len(m) for m in marks] == [1, 1, 1]
    # The bracket starts at the winner: CODE, x = 1 (for the loss too: lower is better).
    assert [list(m[0].get_xdata()) for m in marks] == [[1, 1, 0, 0]] * 3
    assert [(r["task"], r["run"], r["better_than"]) for r in raw] == [
        (task, run, ["NL"] if run == "CODE" else []) for task in ("eval_cosqa", "eval_mbpp",
                                                                    "embedded_code")
        for run in ("NL", "CODE")]
    panels.save(fig, "/dev/null")


def test_claim_marks_from_constructed_comparisons():
    def comparison(a, b, task, sign, metric="accuracy"):
        return {"a": a, "b": b, "task": task, "metric": metric, "sign": sign}

    marks = claims.claim_marks([
        comparison("NL", "CODE", "eval_cosqa", 1), comparison("NL", "CODE", "eval_logic", 0),
        comparison("NN", "NC", "eval_mbpp", -1, "BLEU"), comparison("CN", "CC", "eval_cosqa", 0),
        comparison("NN", "NC", "eval_logic", 1),  # not a code task: does not count
        comparison("Uniform", "Stepwise Dec.", "eval_cosqa", 1),
        comparison("Stepwise Inc.", "Stepwise Dec.", "eval_mbpp", -1, "BLEU"),
        comparison("NL", "CODE", "embedded_code", -1, "loss (lower is better)"),  # not counted
    ])
    assert [m["mark"] for m in marks] == [claims.REPRODUCED, claims.CONTRADICTED,
                                          claims.NOT_RESOLVED]
    assert "for: CODE > NL on eval_cosqa" in marks[0]["evidence"]
    assert "against: NN > NC on eval_mbpp" in marks[1]["evidence"]
    assert claims.claim_marks([])[0]["mark"] == claims.NOT_RESOLVED


def test_paper_values_beside_ours_with_consistency():
    tables = paper.load()
    assert "ICLR 2024" in tables["source"]
    assert {t: len(v["rows"]) for t, v in tables["tables"].items()} == {"2": 6, "3": 6, "6": 6}
    assert tables["tables"]["3"]["rows"][5]["values"]["CC (2.6B)"] == 24.88
    runs = [_results({"eval_logic": {**_mc([True] * 36 + [False] * 64),
                                     "metrics": {"accuracy": 36.0,
                                                 "accuracy_ci95": [27.0, 46.0]}}}),
            _results({"eval_logic": {**_mc([True] * 70 + [False] * 30),
                                     "metrics": {"accuracy": 70.0,
                                                 "accuracy_ci95": [61.0, 79.0]}},
                      "eval_embedded_codegen": _generation(10)})]
    records = paper.beside_paper("2", runs, ["NL", "CODE"])
    assert len(records) == 18  # every cell of the paper's Table 2
    by = {(r["dataset"], r["column"]): r for r in records}
    assert by["Logic∗", "NL (2.6B)"]["status"] == paper.CONSISTENT  # 36.36 in [27, 46]
    assert by["Logic∗", "CODE (2.6B)"]["status"] == "differs (ours higher)"  # 40.90 < 61
    assert by["Logic∗", "NL (13B)"]["status"] == paper.NOT_RUN
    assert by["MBPP†", "CODE (2.6B)"]["status"] == paper.ANALOGUE
    assert paper.column_of("6", "Stepwise Dec.") == "Stepwise Decrease"


def test_report_cli_paper_claims_panels_and_self_contained_html(tmp_path):
    tasks = ["eval_logic", "eval_jecqa_kd", "eval_scienceqa", "eval_ekar", "eval_cosqa"]
    nl = _results({**{t: _mc([i % 2 == 0 for i in range(120)]) for t in tasks},
                   "eval_mbpp": _generation(3)})
    code = _results({**{t: _mc([i % 2 == 0 for i in range(120)]) for t in tasks[:4]},
                     "eval_cosqa": _mc([i % 10 != 0 for i in range(120)]),
                     "eval_mbpp": _generation(30)})
    nl["tasks"]["eval_mbpp"]["metrics"]["bleu_corpus"] = 6.11e-12  # as near-empty outputs give
    out = tmp_path / "report"
    paths = [_write(tmp_path, "nl", nl), _write(tmp_path, "code", code)]
    assert report.main(paths + ["--labels=NL,CODE", "--tables=2", f"--output_dir={out}",
                                "--resamples=200"]) == 0
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    data = json.loads((out / "report.json").read_text())
    # Panels: one file per task, and the table's figure.
    assert sorted(p.name for p in out.glob("table_2_*.png")) == sorted(
        f"table_2_{t.removeprefix('eval_')}.png" for t in tasks + ["eval_mbpp"])
    assert data["tables"]["2"]["panels"][0] == "table_2.png"
    # The paper's number for every cell of Table 2, in the markdown and the HTML.
    for row in paper.load()["tables"]["2"]["rows"]:
        for column, value in row["values"].items():
            cell = f"| {row['dataset']} ({row['metric']}) | {column} | {value:.2f} |"
            assert cell in markdown, cell
            assert f"<td>{value:.2f}</td>" in page
    assert len(data["tables"]["2"]["paper"]) == 18
    # Formats: no scientific notation anywhere (the BLEU here is 6.11e-12 in the results).
    assert not SCIENTIFIC.search(markdown)
    assert not SCIENTIFIC.search(re.sub(r"base64,[A-Za-z0-9+/=]+", "", page))
    assert "| eval_mbpp (bleu_corpus) | 0.00 [0.00, 5.00] n=60 |" in markdown
    assert "**30.00 [0.00, 32.00] n=60**" in markdown  # significant best
    # Claims: CODE beats NL on CoSQA and MBPP -> reproduced; others have no runs here.
    marks = [c["mark"] for c in data["claims"]]
    assert marks == [claims.REPRODUCED, claims.NOT_RESOLVED, claims.NOT_RESOLVED]
    # Self-contained: plots inline, no network reference, our own sorting script.
    assert page.count("data:image/png;base64,") == 1
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "<script>" in page and "sortable" in page


def test_report_rejects_files_that_are_not_results(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    assert report.main([str(path)]) == 2
    assert "not a results file" in capsys.readouterr().err
    good = _write(tmp_path, "r", _results({"eval_cosqa": _mc([True, False])}))
    assert report.main([good, good, "--labels=A,A", f"--output_dir={tmp_path}/o"]) == 2
    assert "labels must differ, got ['A', 'A']" in capsys.readouterr().err
    assert report.main([good, "--resamples=0", f"--output_dir={tmp_path}/o"]) == 2
    assert "--resamples must be >= 1, got 0" in capsys.readouterr().err


def test_mini_reproduction_report_shows_paper_claims_and_html(tmp_path):
    from codereason_jax import reproduce
    from codereason_jax.reproduce_report import write_report

    # Code QA: CODE-pretrained cells better; code generation: code-tuned cells better.
    good_qa = [i % 10 != 0 for i in range(100)]
    plain_qa = [i % 2 == 0 for i in range(100)]
    for cell in reproduce.LABELS:
        code_pt = reproduce.SFT_CELLS.get(cell, cell) == "pretrain_code"
        code_sft = cell in ("sft_nc", "sft_cc", "sft_uniform", "sft_stepwise_increase",
                            "sft_stepwise_decrease")
        run = _results({"eval_embedded_codeqa": _mc(good_qa if code_pt else plain_qa, 2),
                        "eval_embedded_codegen": _generation(30 if code_sft else 2),
                        "embedded_code": _lm(5.0 if code_pt else 6.0)})
        path = tmp_path / "eval" / f"{cell}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(run))
        if cell in ("pretrain_nl", "sft_cc"):  # curves for one cell of each stage
            logged = tmp_path / "runs" / cell / "metrics.jsonl"
            logged.parent.mkdir(parents=True)
            logged.write_text("".join(json.dumps({"step": s, "loss": 6.0 - s / 50,
                                                  "share/embedded_code_instructions": 0.4})
                                      + "\n" for s in range(40)))
    summary = write_report("micro", str(tmp_path), 61.0)
    markdown = open(summary).read()
    page = (tmp_path / "report" / "report.html").read_text()
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    for label in ("| NL | CODE |", "| NN | NC | CN | CC |",
                  "| CC | Uniform | Stepwise Inc. | Stepwise Dec. |"):
        assert label in markdown
    assert [len(data["tables"][t]["paper"]) for t in ("1", "2", "3")] == [18, 30, 18]
    assert "| CosQA† (ACC) | CODE (2.6B) | 50.50 | 90.0 [84.0, 96.0] (CODE, " in markdown
    assert [c["mark"] for c in data["claims"]] == [claims.REPRODUCED, claims.REPRODUCED,
                                                   claims.NOT_RESOLVED]
    assert not SCIENTIFIC.search(markdown)
    assert page.count("data:image/png;base64,") == 5  # three tables, loss, code share
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert len(json.loads((tmp_path / "report" / "comparisons.json").read_text())) == 7 * 3


def test_unscored_examples_count_as_skipped_beside_the_readers_skips():
    result = {"data": {"skipped": {"empty answer": 2}},
              "unscored": {"fewer than 2 tokens": 3, "nothing": 0}}
    assert report.skipped_by_reason(result) == {"empty answer": 2, "fewer than 2 tokens": 3}
    assert report.skipped_count(result) == 5
    assert report.skipped_count({"unscored": {"fewer than 2 tokens": 1}}) == 1
