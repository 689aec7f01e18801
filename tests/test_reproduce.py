"""The mini reproduction's driver, end to end at the micro scale, and its resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from codereason_jax import reproduce
from codereason_jax.evaluation.eval_metrics import bootstrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(output_dir, *extra, timeout=1500):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    return subprocess.run([sys.executable, "-m", "codereason_jax.reproduce", "--scale=micro",
                           f"--output_dir={output_dir}", *extra], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_plan_covers_the_matrix_in_dependency_order(tmp_path):
    steps = reproduce.plan(reproduce.SCALES["mini"], str(tmp_path))
    names = [s.name for s in steps]
    assert len(names) == 18 and len(set(names)) == 18
    for cell, base in reproduce.SFT_CELLS.items():
        assert names.index(f"train/{base}") < names.index(f"train/{cell}")
        step = steps[names.index(f"train/{cell}")]
        assert f"--gin_file=gin/cells/{cell}.gin" in step.argv
    for cell in reproduce.LABELS:
        assert names.index(f"train/{cell}") < names.index(f"eval/{cell}")
    # The commands are the user's: real gin files, real entry points.
    for step in steps:
        for arg in step.argv:
            if arg.startswith("--gin_file="):
                assert os.path.exists(os.path.join(ROOT, arg.split("=", 1)[1])), arg


def test_paired_comparison_signs_and_noise():
    rng = np.random.default_rng(0)
    correct_a = rng.random(400) < 0.5
    correct_b = correct_a | (rng.random(400) < 0.4)  # B fixes many of A's errors
    rows = lambda c: np.stack([c.astype(float), np.ones_like(c, float)], axis=1)  # noqa: E731
    accuracy = lambda t: 100 * t[0] / t[1]  # noqa: E731
    d = bootstrap.paired_bootstrap_difference(rows(correct_a), rows(correct_b), accuracy)
    assert d["difference"] == pytest.approx(100 * (correct_b.mean() - correct_a.mean()))
    assert d["ci_low"] > 0 and d["p_not_positive"] == 0.0
    # The noise: a paired 95% interval is about +-1.96 standard errors of the per-example
    # differences (normal approximation, computed here without resampling). Resampling A and
    # B independently would widen it by ~60%; a 90% interval would narrow it by 16%.
    per_example = 100 * (correct_b.astype(float) - correct_a.astype(float))
    half_width = 1.96 * per_example.std() / np.sqrt(len(per_example))
    assert d["difference"] - d["ci_low"] == pytest.approx(half_width, rel=0.1)
    assert d["ci_high"] - d["difference"] == pytest.approx(half_width, rel=0.1)
    same = bootstrap.paired_bootstrap_difference(rows(correct_a), rows(correct_a), accuracy)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0
    assert same["p_not_positive"] == 1.0  # a tie never counts as B being better
    worse = bootstrap.paired_bootstrap_difference(rows(correct_b), rows(correct_a), accuracy)
    assert worse["ci_high"] < 0 and worse["p_not_positive"] == 1.0


@pytest.mark.slow  # 18 training and evaluation steps, then a resume; `make test-slow`
def test_micro_reproduction_runs_reports_and_resumes(tmp_path):
    out = tmp_path / "micro"
    first = run(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert len(state["done"]) == 18
    report_dir = out / "report"
    summary = (report_dir / "README.md").read_text()
    for label in ("| NL | CODE |", "| NN | NC | CN | CC |",
                  "| CC | Uniform | Stepwise Inc. | Stepwise Dec. |"):
        assert label in summary
    comparisons = json.loads((report_dir / "comparisons.json").read_text())
    # 7 questions x 5 measures, each with an interval and a verdict.
    assert len(comparisons) == 7 * 5
    for c in comparisons:
        assert c["ci_low"] <= c["improvement"] <= c["ci_high"]
        assert c["verdict"] in (f"{c['b']} better", f"{c['a']} better", "within noise")
    for name in ("loss_curves.png", "code_share.png", "table_1.png", "table_2.png",
                 "table_3.png"):
        assert (report_dir / name).stat().st_size > 5000, name
    results = json.loads((out / "eval" / "sft_cc.json").read_text())
    assert set(results["tasks"]) == {"eval_embedded_codeqa", "eval_embedded_codegen",
                                     "eval_embedded_codecomplete", "embedded_text",
                                     "embedded_code"}
    # CC: tuned from the CODE model on text and code instructions.
    config = (out / "runs" / "sft_cc" / "config.gin").read_text()
    assert "TrainConfig.init_from = %CODE_BASE" in config
    assert str(out / "runs" / "pretrain_code") in config.replace("\\\n    ", "")
    record = json.loads((out / "runs" / "sft_cc" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"share/embedded_text_instructions", "share/embedded_code_instructions"} <= set(record)

    # Interrupted after some steps: only what is missing runs again.
    del state["done"]["eval/sft_cc"]
    (out / "state.json").write_text(json.dumps(state))
    second = run(out)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("done earlier") == 17
    (rerun,) = [line for line in second.stdout.splitlines() if "eval/sft_cc" in line]
    assert "done earlier" not in rerun

    # Another scale in the same directory is refused before any work.
    other = subprocess.run([sys.executable, "-m", "codereason_jax.reproduce", "--scale=mini",
                            f"--output_dir={out}"], cwd=ROOT, text=True, capture_output=True,
                           timeout=1200)
    assert other.returncode != 0 and "another scale" in other.stderr
