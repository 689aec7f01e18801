"""The evaluate command on benchmark files: --check_data, per-task splits, resumable results.

Runs in-process on the messy fixtures (tests/fixtures/benchmarks_messy, the published formats
with unscorable records) with the tiny model, freshly initialised.
"""

import json
import math
import os
import signal
import subprocess
import sys

import pytest

from codereason_jax import evaluate
from codereason_jax.evaluation import generation

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MESSY = os.path.join(HERE, "fixtures", "benchmarks_messy")
CLEAN = os.path.join(HERE, "fixtures", "benchmarks")
TABLES = ["--gin_file=gin/models/pangu_tiny.gin", "--gin_file=gin/eval/tables_2_3_6.gin",
          f"--data_dir={MESSY}"]
LOOSE = ["--gin.EvalConfig.max_skipped_fraction=0.7"]
FAST = ["--gin.EvalConfig.max_new_tokens=4", "--gin.EvalConfig.execute_tests=False"]
EVALUATE_TASK = evaluate.evaluate_task
SIX = ["eval_logic", "eval_jecqa_kd", "eval_scienceqa", "eval_ekar", "eval_cosqa", "eval_mbpp"]


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("CODEREASON_DATA_DIR", raising=False)


def test_check_data_lines(capsys):
    assert evaluate.main(["--check_data", *TABLES, *LOOSE]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "eval_logic: 3 rows, skipped 4 (answer not a letter 1, answer not an option 1, "
        "duplicate id 1, empty answer 1), split validation, chance 0.25",
        "eval_jecqa_kd: 5 rows, skipped 6 (answer not a letter 1, answer not an option 1, "
        "empty answer 1, not valid JSON 1, undecodable text 1, wrong number of options 1), "
        "split test, chance 0.30",
        "eval_scienceqa: 2 rows, skipped 2 (answer not an option 1, wrong number of options 1), "
        "split test, chance 0.42, filtered 2 (empty lecture or solution 1, has image 1)",
        "eval_ekar: 3 rows, skipped 3 (answer not an option 1, empty answer 1, wrong number of "
        "options 1), split test, chance 0.25",
        "eval_cosqa: 3 rows, skipped 4 (answer not an option 1, duplicate id 1, empty answer 1, "
        "missing field 1), split validation, chance 0.50",
        "eval_mbpp: 2 rows, skipped 4 (duplicate id 1, empty answer 1, id out of range 1, no "
        "tests 1), split all, chance n/a"]


def test_check_data_needs_no_model_gin_file(capsys):
    assert evaluate.main(["--check_data", "--gin_file=gin/eval/tables_2_3_6.gin",
                          f"--data_dir={MESSY}", *LOOSE, "--tasks=eval_logic"]) == 0
    assert capsys.readouterr().out.startswith("eval_logic: 3 rows, skipped 4 ")


def test_check_data_fails_on_files_over_the_threshold_and_names_them(capsys):
    assert evaluate.main(["--check_data", *TABLES]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 7 and errors[-1] == "error: 6 of 6 tasks could not be loaded."
    assert errors[1].startswith("error: eval_jecqa_kd: ") and "6 of 11 records" in errors[1]
    assert captured.out == ""
    assert evaluate.main(["--check_data", *TABLES, *LOOSE, "--strict"]) == 1
    assert "jec-qa-kd.jsonl:3: field 'label' is an empty list" in capsys.readouterr().err


@pytest.mark.parametrize("binding,message", [
    ("--gin.EvalConfig.split='test'", "EvalConfig.split should map task names to splits"),
    ("--gin.EvalConfig.split={'eval_jecqa_kd': 'validation'}",
     "task eval_jecqa_kd has no split 'validation'; its splits: ['test']"),
    ("--gin.EvalConfig.split={'eval_nope': 'test'}", "EvalConfig.split names unknown tasks"),
])
def test_split_mistakes_are_refused_before_model_work(binding, message, capsys, tmp_path):
    assert evaluate.main([*TABLES, binding, f"--output={tmp_path / 'r.json'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_split_override_selects_the_mbpp_ranges(capsys):
    assert evaluate.main(["--check_data", *TABLES, "--tasks=eval_mbpp",
                          "--gin.EvalConfig.max_skipped_fraction=0.9",
                          "--gin.EvalConfig.split={'eval_mbpp': 'train'}"]) == 0
    assert capsys.readouterr().out.startswith("eval_mbpp: 1 rows, skipped 4 (duplicate id 1, ")


def _counting(monkeypatch, stop_at=None, fail=None):
    """Wrap evaluate_task: record the tasks it computes; raise KeyboardInterrupt (a kill) at
    ``stop_at``, a ValueError at ``fail``."""
    computed = []

    def spy(name, *args, **kwargs):
        if name == stop_at:
            raise KeyboardInterrupt
        if name == fail:
            raise ValueError(f"{name}: broken on purpose")
        computed.append(name)
        return EVALUATE_TASK(name, *args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_task", spy)
    return computed


def test_killed_run_resumes_with_finished_tasks_kept(tmp_path, monkeypatch, capsys):
    output = tmp_path / "results.json"
    argv = [*TABLES, *LOOSE, *FAST, f"--output={output}"]
    computed = _counting(monkeypatch, stop_at="eval_ekar")
    assert evaluate.main(argv) == 130  # interrupted: "error: interrupted.", status 130
    assert computed == SIX[:3]
    first = json.loads(output.read_text())
    assert list(first["tasks"]) == SIX[:3]  # each written as soon as it finished

    computed = _counting(monkeypatch)
    assert evaluate.main(argv) == 0
    assert computed == SIX[3:]  # the finished tasks were not recomputed
    results = json.loads(output.read_text())
    assert list(results["tasks"]) == SIX and results["failed"] == {}
    for name in SIX[:3]:
        assert results["tasks"][name] == first["tasks"][name]
    jecqa = results["tasks"]["eval_jecqa_kd"]
    assert jecqa["split"] == "test" and jecqa["n"] == 5
    assert jecqa["chance"] == pytest.approx(30.0)
    assert jecqa["data"]["skipped"]["empty answer"] == 1
    assert jecqa["data"]["skipped_at"]["empty answer"] == ["line 3"]
    assert results["tasks"]["eval_mbpp"]["split"] == "all"
    summary = (tmp_path / "results.md").read_text()
    assert "| eval_jecqa_kd | test | accuracy |" in summary and "| 30.00 |" in summary

    # A changed setting recomputes only what it changes; --force recomputes everything.
    computed = _counting(monkeypatch)
    assert evaluate.main([*argv, "--tasks=eval_logic,eval_cosqa",
                          "--gin.EvalConfig.mode='paper'"]) == 0
    assert computed == ["eval_logic", "eval_cosqa"]
    assert list(json.loads(output.read_text())["tasks"]) == SIX  # the others are kept
    computed = _counting(monkeypatch)
    assert evaluate.main([*argv, "--force"]) == 0
    assert computed == SIX


def test_a_failing_task_does_not_lose_the_others(tmp_path, monkeypatch, capsys):
    output = tmp_path / "results.json"
    argv = [*TABLES, *LOOSE, *FAST, f"--output={output}",
            "--tasks=eval_logic,eval_jecqa_kd,eval_cosqa"]
    computed = _counting(monkeypatch, fail="eval_jecqa_kd")
    assert evaluate.main(argv) == 1
    assert computed == ["eval_logic", "eval_cosqa"]
    err = capsys.readouterr().err
    assert "error: eval_jecqa_kd: eval_jecqa_kd: broken on purpose" in err
    results = json.loads(output.read_text())
    assert list(results["tasks"]) == ["eval_logic", "eval_cosqa"]
    assert results["failed"] == {"eval_jecqa_kd": "eval_jecqa_kd: broken on purpose"}
    computed = _counting(monkeypatch)
    assert evaluate.main(argv) == 0 and computed == ["eval_jecqa_kd"]  # only the failed one


def test_results_of_another_model_are_never_overwritten(tmp_path, monkeypatch, capsys):
    output = tmp_path / "results.json"
    argv = [*TABLES, *LOOSE, *FAST, f"--output={output}", "--tasks=eval_logic"]
    assert evaluate.main(argv) == 0
    before = output.read_text()
    assert evaluate.main([*argv, "--gin.EvalConfig.seed=1"]) == 2
    assert "holds results of another model or checkpoint" in capsys.readouterr().err
    assert output.read_text() == before
    assert evaluate.main([*argv, "--gin.EvalConfig.seed=1", "--force"]) == 0
    assert json.loads(output.read_text())["init_seed"] == 1



# --- pass@k with a known number of correct samples per problem ------------------------------

# The clean MBPP fixture (tests/fixtures/benchmarks/mbpp/sanitized-mbpp.json) holds problems 42
# (largest_of_three) and 520 (circle_area). Generation is replaced by programs chosen per
# (problem, sample seed): a correct solution for the seeds listed here, a wrong one otherwise.
NUM_SAMPLES = 7
CORRECT_SEEDS = {"42": {1, 4}, "520": {0, 2, 3, 6}}
PROGRAMS = {  # (right, wrong); one fails its asserts, the other raises while being defined
    "42": ("def largest_of_three(a, b, c):\n    return max(a, b, c)",
           "def largest_of_three(a, b, c):\n    return min(a, b, c)"),
    "520": ("import math\ndef circle_area(r):\n    return math.pi * r * r",
            "def circle_area(r):\n    return 3 * r * r\nundefined_name"),
}


def unbiased_pass_at_k(n, c, k):
    """Chen et al. (2021): 1 - C(n-c, k) / C(n, k), with exact binomials."""
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def _scripted_generation(monkeypatch, calls):
    """Replace generation.generate: each prompt is recognised by its text and answered with
    the right or wrong program of its problem, according to the sample's seed."""
    from seqio_tasks import mixtures  # noqa: F401 (registers the tasks)
    import seqio

    vocabulary = seqio.get_mixture_or_task("eval_mbpp").output_features["targets"].vocabulary

    def fake_generate(model, params, prompts, eos_id, config, batch_size=16):
        calls.append((config.method, config.seed))
        outputs = []
        for prompt in prompts:
            text = vocabulary.decode(list(prompt))
            problem = "42" if "largest of three" in text else "520"
            assert problem == "42" or "area of a circle" in text, text
            right, wrong = PROGRAMS[problem]
            outputs.append(vocabulary.encode(
                right if config.seed in CORRECT_SEEDS[problem] else wrong))
        return outputs

    monkeypatch.setattr(generation, "generate", fake_generate)


def test_pass_at_k_with_a_known_mix_of_correct_and_wrong_samples(tmp_path, monkeypatch):
    """pass@1 is the first sample's pass rate; pass@k_unbiased is the mean over problems of
    1 - C(n-c,k)/C(n,k), here with c = 2 and 4 correct of n = 7 (values written out below),
    through the whole evaluate command and the real sandbox."""
    calls = []
    _scripted_generation(monkeypatch, calls)
    output = tmp_path / "results.json"
    assert evaluate.main([
        "--gin_file=gin/models/pangu_tiny.gin", "--gin_file=gin/eval/tables_2_3_6.gin",
        f"--data_dir={CLEAN}", "--tasks=eval_mbpp", f"--output={output}",
        f"--gin.EvalConfig.num_samples={NUM_SAMPLES}", "--gin.EvalConfig.max_new_tokens=4"]) == 0
    assert calls == [("sample", seed) for seed in range(NUM_SAMPLES)]
    result = json.loads(output.read_text())["tasks"]["eval_mbpp"]
    assert result["n"] == 2 and result["num_samples"] == NUM_SAMPLES
    examples = {e["example_id"]: e for e in result["examples"]}
    for problem, seeds in CORRECT_SEEDS.items():
        assert [s == "passed" for s in examples[problem]["execution"]] == [
            seed in seeds for seed in range(NUM_SAMPLES)]
    metrics = result["metrics"]
    # Sample 0 fails on problem 42 and passes on 520.
    assert metrics["pass@1"] == pytest.approx(50.0)
    # c/n averaged: (2/7 + 4/7) / 2 = 3/7.
    assert metrics["pass@1_unbiased"] == pytest.approx(100 * 3 / 7)
    # pass@5: 1 - C(5,5)/C(7,5) = 20/21 for c = 2; 1 for c = 4 (fewer than 5 wrong samples).
    assert metrics["pass@5_unbiased"] == pytest.approx(100 * (20 / 21 + 1) / 2)
    counts = [(NUM_SAMPLES, len(s)) for s in CORRECT_SEEDS.values()]
    for k in (1, 5):
        expected = sum(unbiased_pass_at_k(n, c, k) for n, c in counts) / len(counts)
        assert metrics[f"pass@{k}_unbiased"] == pytest.approx(100 * expected, abs=1e-9)
    assert "pass@10_unbiased" not in metrics  # k > n is not reported


def test_unbiased_pass_at_k_oracle_values():
    """The oracle itself on values worked by hand."""
    assert unbiased_pass_at_k(7, 2, 5) == pytest.approx(20 / 21)
    assert unbiased_pass_at_k(7, 4, 5) == 1.0
    assert unbiased_pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert unbiased_pass_at_k(10, 0, 10) == 0.0


@pytest.mark.slow
def test_sigkilled_evaluation_resumes(tmp_path):
    """A real kill: SIGKILL once the results file holds a finished task, then rerun."""
    output = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "codereason_jax.evaluate", *TABLES, *LOOSE, *FAST,
           f"--output={output}"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    done = []
    for line in process.stdout:  # event-driven: kill right after the second task's line
        if line.startswith("    n="):
            done.append(line)
            if len(done) == 2:
                process.send_signal(signal.SIGKILL)
                break
    process.wait(timeout=600)
    finished = list(json.loads(output.read_text())["tasks"])
    assert finished[:2] == SIX[:2] and len(finished) < len(SIX)
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.count("done earlier") == len(finished)
    assert list(json.loads(output.read_text())["tasks"]) == SIX

