"""The report builder on fixture results files."""

import csv
import json

from codereason_jax import report


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


def test_report_marks_best_and_labels_incomparable_runs(tmp_path, capsys):
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
    assert "| task | NL | CODE | OTHER |" in markdown
    assert "51.00 [46.0, 56.0] n=100" in markdown
    assert "**70.00 [65.0, 75.0] n=50** †" in markdown  # best, but not comparable
    assert "† OTHER on eval_embedded_codeqa" in markdown and "not comparable" in markdown
    assert "**4.00 n=40**" in markdown  # BLEU: CODE is best
    rows = list(csv.DictReader(open(out_dir / "table_embedded.csv")))
    assert len(rows) == 6 and {r["comparable"] for r in rows} == {"True", "False"}
    assert (out_dir / "table_embedded.png").stat().st_size > 5000


def test_report_errors(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_run("aaa", 50.0)))
    assert report.main([str(path), "--labels=A,B"]) == 2
    assert report.main([str(path), "--tables=9"]) == 2
    assert report.main([str(path), "--tables=2", f"--output_dir={tmp_path}/o"]) == 2
    assert report.main([str(tmp_path / "missing.json")]) == 2
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
                     "50.50 [47.4, 53.6] ≈ n=999 (1 skipped)", "**56.00 [52.9, 59.1] n=999**"]]
    assert notes == [report.AT_CHANCE_NOTE]
    assert [(r["covers_chance"], r["skipped"], r["chance"]) for r in raw] == [
        (True, 1, 49.1), (False, 0, 49.1)]


def test_run_summary_lists_split_skipped_chance_and_failures():
    run = {"checkpoint": "/runs/code", "step": 1000,
           "tasks": {"eval_jecqa_kd": _jecqa(50.5, 47.4, 53.6, {"empty answer": 1})},
           "failed": {"eval_ekar": "ekar_chinese/test.json does not exist"}}
    summary = report.run_summary(run)
    assert summary.startswith("# Evaluation of /runs/code, step 1000\n")
    assert ("| eval_jecqa_kd | test | accuracy | 50.50 [47.40, 53.60] | 999 | 1 (empty answer 1) "
            "| 49.10 | ≈ |") in summary
    assert "- **eval_ekar failed**: ekar_chinese/test.json does not exist" in summary
