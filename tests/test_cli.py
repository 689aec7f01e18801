"""Command-line entry points, run as a user runs them (subprocesses, real gin files)."""

import os
import subprocess
import sys

import pytest

from numpy_reference import PAPER_CONTEXT, PAPER_SHAPES, PAPER_VOCAB, param_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


# Runs a command and prints its exit code and peak RSS (KiB). Linux records a forked child's
# memory high-water mark from the image it was forked from, so measuring straight from pytest
# (gigabytes after the suite has run a while) would report pytest's size: this small launcher
# forks the command instead.
_MEASURE = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
print("MEASURED", os.waitstatus_to_exitcode(status), usage.ru_maxrss, flush=True)
"""


def run_measured(*args):
    """(exit code, output, peak resident memory in bytes) of one command's own process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", *args],
                          cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=1800)
    out, _, last = done.stdout.rstrip("\n").rpartition("\n")
    tag, code, peak_kib = last.split()
    assert tag == "MEASURED", done.stdout
    return int(code), out, int(peak_kib) * 1024  # Linux: KiB


def test_model_info_13b_is_abstract():
    code, out, peak = run_measured("codereason_jax.model_info",
                                   "--gin_file=gin/models/pangu_13b.gin")
    assert code == 0, out
    lines = out.splitlines()
    # The closed form of the architecture at the paper's 13B shape (tests/numpy_reference.py).
    layers, d, _ = PAPER_SHAPES["pangu_13b"]
    assert lines[0] == f"params: {param_count(PAPER_VOCAB, PAPER_CONTEXT, layers, d)}"
    assert lines[1].split() == ["name", "shape", "dtype", "logical", "axes", "params"]
    word = next(line for line in lines if line.startswith("word_embeddings "))
    assert word.split() == ["word_embeddings", "(40000,", "5120)", "float32", "(vocab,",
                            "embed)", "204,800,000"]
    # 39 blocks x 16 params + query layer 16 + ln_f 2 + 3 tables, + header and rule lines.
    assert len(lines) == 3 + 39 * 16 + 16 + 2 + 3
    # Abstract: the 13B fp32 weights would be 51 GB, and the word embeddings alone 819 MB; the
    # whole process never held even that one table (about 200 MB is the interpreter and jax).
    assert peak < 204_800_000 * 4, f"peak memory {peak / 2**20:.0f} MiB: weights were allocated"


def test_model_info_reports_bad_binding_and_exits_2():
    result = run("codereason_jax.model_info", "--gin_file=gin/models/pangu_2_6b.gin",
                 "--gin.PanGuConfig.num_heads=7")
    assert result.returncode == 2
    assert "PanGuConfig.d_model=2560 is not divisible by PanGuConfig.num_heads=7" in (
        result.stderr)
    assert result.stdout == ""


# One user mistake per command line: each must answer with one `error:` line and status 2.
USER_MISTAKES = [
    (("codereason_jax.train", "--gin_file=no_such.gin", "--run_dir=/tmp/never"),
     "gin file 'no_such.gin' does not exist"),
    (("codereason_jax.train", "--gin_file=gin/runs/demo_cpu.gin", "--run_dir=/tmp/never",
      "--gin.TrainConfig.num_steps='40'"), "write TrainConfig.num_steps = 40 without quotes"),
    (("codereason_jax.train", "--gin_file=gin/runs/demo_cpu.gin", "--run_dir=/tmp/never",
      "--gin.TrainConfig.num_steps=(40"), "an unclosed bracket or quote"),
    (("codereason_jax.evaluate", "--gin_file=gin/models/pangu_tiny.gin",
      "--checkpoint=/no/such/run", "--output=/tmp/never/results.json"),
     "No checkpoint directory at /no/such/run"),
    (("codereason_jax.report", "/no/such/results.json"), "cannot read results file"),
    (("codereason_jax.inspect_mixture", "--mixture=no_such_mixture"),
     "'no_such_mixture' is neither a registered schedule, a SeqIO mixture nor a task"),
    (("codereason_jax.convert_pangu", "--hf_checkpoint=/no/such/weights.bin",
      "--output=/tmp/never/converted"), "--hf_checkpoint /no/such/weights.bin does not exist"),
    (("codereason_jax.aot_check", "--mesh=2x8", "--gin_file=gin/models/pangu_tiny.gin"),
     "must be DATAxFSDPxMODEL"),
    (("codereason_jax.reproduce", "--output_dir=gs://bucket/reproduce"), "is a URL"),
    (("codereason_jax.bench", "--suite=no_such_suite"), "--suite='no_such_suite' is not one of"),
    (("codereason_jax.score", "--gin_file=gin/models/pangu_tiny.gin", "--checkpoint=/no/such",
      "--token_ids=1,2"), "No checkpoint directory at /no/such;"),
    (("codereason_jax.train_vocab", "--output=/tmp/never/v.model"),
     "the following arguments are required: --vocab_size"),
]


@pytest.mark.parametrize("argv,message", USER_MISTAKES, ids=[m[0][0].split(".")[1] + str(i)
                                                          for i, m in enumerate(USER_MISTAKES)])
def test_every_command_line_answers_a_mistake_with_one_error_line(argv, message):
    result = run(*argv)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not os.path.exists("/tmp/never")


def test_debug_shows_the_traceback_behind_an_error():
    result = run("codereason_jax.inspect_mixture", "--mixture=no_such_mixture", "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "error: " in result.stderr
