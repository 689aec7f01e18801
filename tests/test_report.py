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
