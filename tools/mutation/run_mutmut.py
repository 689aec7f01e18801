"""Mutation testing of the modules where a silent error changes the science (issue 19 item 6).

Runs mutmut 3 on one module at a time in a scratch copy of the repository (never the checkout),
with the fast test selection that targets that module, then writes the survivors' diffs.

    pip install --target /tmp/mutmut_lib mutmut==3.8.1  # outside the project's pinned venv
    nice -n 15 .venv/bin/python tools/mutation/run_mutmut.py data schedules losses metrics
    nice -n 15 .venv/bin/python tools/mutation/run_mutmut.py --verify-kills data  # new tests
    .venv/bin/python tools/mutation/run_mutmut.py --summary data

Results land in ``<work>/<target>/report.txt`` (status of every mutant, survivors' diffs) and
``verify.txt`` (survivors run against tests/test_mutation_kills.py); see docs/mutation-testing.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COPIED = ("codereason_jax", "seqio_tasks", "tests", "gin", "pytest.ini", "setup.py")
# The fast tests of the data modules (seconds in all). Left out for time: the stream tests that
# read real tasks for many steps (resume, dropped rows, host count, row shuffle: 5-25 s each),
# the row-store fixtures (20 s) and the CLI (a subprocess, where mutmut cannot see the mutant).
DATA_TESTS = [
    "tests/test_data_pipeline.py", "tests/test_row_store.py", "-k",
    "packing or instruction_rows_mask or instruction_rows_decode or overlong or table5"
    " or stage_boundaries or interleaving or bad_schedules or unknown_mixture or fingerprint"
    " or pretraining_rows_are_dense or every_example_is_too_long or permutation"
    " or survive_the_token_record",
]
SCORER_TESTS = ["tests/test_multiple_choice.py", "tests/test_evaluation.py", "-k",
                "row or mode or ties or multiple_choice"]
METRICS = "codereason_jax/evaluation/eval_metrics/"
# target -> (files to mutate, pytest arguments selecting their tests). Files sharing a test
# selection are one target: mutmut's two full passes (coverage stats, clean run) run once.
MODULES = {
    "data": (["seqio_tasks/mixing.py", "seqio_tasks/packing.py"], DATA_TESTS),
    "schedules": (["seqio_tasks/schedules.py"], DATA_TESTS),
    "losses": (["codereason_jax/losses.py"],
               ["tests/test_loss_oracle.py", "tests/test_model.py", "-k", "loss"]),
    "metrics": ([METRICS + "bleu.py", METRICS + "pass_rate.py", METRICS + "dureader.py"],
                ["tests/test_eval_metrics.py"]),
    "scoring": (["codereason_jax/evaluation/scoring.py"], SCORER_TESTS),
    "optim": (["codereason_jax/optim.py"], ["tests/test_optim.py"]),
}
KILLS = "tests/test_mutation_kills.py"
# The tests --verify-kills runs on each mutant not killed: by default the kill tests; for the
# scorer and the optimizer, their own test files (also their selection: this re-checks mutants
# that timed out on a loaded machine and adds the tests written after the run).
VERIFY_TESTS = {"scoring": ["tests/test_multiple_choice.py"], "optim": ["tests/test_optim.py"]}
# JAX is not fork-safe once its backend is up (the conftest's jax.devices()): for targets whose
# tests run JAX, fork each mutant from a server that has only imported the heavy modules.
JAX_TARGETS = {"losses", "scoring", "optim"}
PRELOAD = "numpy\njax\njax.numpy\nflax.linen\noptax\n"


def setup_cfg(sources: list[str], tests: list[str], with_kills: bool, jax: bool) -> str:
    """The [mutmut] section for one module (mutmut reads it from the working directory)."""
    tests = list(tests)
    if with_kills:
        if "-k" in tests:  # -k filters every file: let the kill tests through
            i = tests.index("-k") + 1
            tests[i] = f"({tests[i]}) or mutation_kill"
        tests.insert(0, KILLS)
    lines = ["[mutmut]", "source_paths="] + [f"    {p}" for p in sources] + ["also_copy="]
    lines += [f"    {p}" for p in COPIED]
    if jax:
        lines += ["process_isolation=forkserver", "forkserver_warmup=import",
                  "preload_modules_file=preload.txt"]
    lines += ["timeout_multiplier=3.0",  # a survivor runs all its tests: do not wait 15x
              'pytest_add_cli_args=-p no:cacheprovider -m "not slow" -x -q',
              "pytest_add_cli_args_test_selection="]
    lines += [f"    {t}" for t in tests]
    return "\n".join(lines) + "\n"


def run(module: str, work: Path, children: int, with_kills: bool, mutmut_lib: str,
        report_only: bool = False) -> None:
    """Copy the repository into ``work/module``, run mutmut there, write report.txt."""
    sources, tests = MODULES[module]
    dest = work / module
    env = dict(os.environ, PYTHONPATH=mutmut_lib)
    mutmut = [sys.executable, "-m", "mutmut"]
    if not report_only:
        prepare(dest, sources, tests, with_kills, module in JAX_TARGETS)
        with open(dest / "run.log", "w") as log:
            subprocess.run(mutmut + ["run", "--max-children", str(children)], cwd=dest,
                           env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    write_report(module, dest, env, mutmut, with_kills)


def prepare(dest: Path, sources: list[str], tests: list[str], with_kills: bool,
            jax: bool) -> None:
    """A fresh copy of the repository with a setup.cfg for mutmut."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    (dest / "setup.cfg").write_text(setup_cfg(sources, tests, with_kills, jax))
    (dest / "preload.txt").write_text(PRELOAD)


def write_report(module: str, dest: Path, env: dict, mutmut: list[str], with_kills: bool) -> None:
    """Every mutant's status, counts per file and the diff of every mutant not killed."""
    results = subprocess.run(mutmut + ["results", "--all", "true"], cwd=dest, env=env,
                             capture_output=True, text=True, check=False).stdout
    statuses = [line.strip().rsplit(": ", 1) for line in results.splitlines() if ": " in line]
    counts: dict[str, dict[str, int]] = {}
    for name, status in statuses:
        per_file = counts.setdefault(name.split(".x")[0], {})
        per_file[status] = per_file.get(status, 0) + 1
    report = [f"target {module}, kill tests: {with_kills}"]
    report += [f"{f}: {c}" for f, c in counts.items()] + [""]
    report += [f"{name}: {status}" for name, status in statuses]
    for name, status in statuses:
        if status != "killed":
            diff = subprocess.run(mutmut + ["show", name], cwd=dest, env=env,
                                  capture_output=True, text=True, check=False).stdout
            report += ["", diff]
    (dest / "report.txt").write_text("\n".join(report) + "\n")
    print(module, counts, flush=True)


def verify_kills(module: str, work: Path, mutmut_lib: str) -> None:
    """Run the kill tests on each mutant not killed in ``work/module``, one at a time, through
    mutmut's own trampolines (``MUTANT_UNDER_TEST`` in the copy's ``mutants/``). Adding tests only
    kills more, so the new score is the old kills plus these. Writes verify.txt."""
    dest = work / module
    mutants = dest / "mutants"
    tests = VERIFY_TESTS.get(module, [KILLS])
    for test in tests:
        shutil.copy2(REPO / test, mutants / test)
    names = [line.split(": ")[0] for line in (dest / "report.txt").read_text().splitlines()
             if line.endswith((": survived", ": no tests", ": timeout"))
             and not line.startswith("#")]

    def fails(mutant: str) -> bool:
        env = dict(os.environ, PYTHONPATH=mutmut_lib, MUTANT_UNDER_TEST=mutant)
        try:
            test = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                                   "no:cacheprovider", "--noconftest", *tests], cwd=mutants,
                                  env=env, capture_output=True, text=True, check=False,
                                  timeout=180)
            return test.returncode != 0
        except subprocess.TimeoutExpired:  # the mutant hangs the tests: detected
            return True

    if fails(""):
        raise RuntimeError(f"{tests} fail on the unmutated copy in {mutants}")
    lines = []
    for name in names:
        lines.append(f"{name}: {'killed' if fails(name) else 'survived'}")
        print(lines[-1], flush=True)
    (dest / "verify.txt").write_text("\n".join(lines) + "\n")


def summarise(module: str, work: Path) -> None:
    """Per file: mutants by status before, and killed after the kill tests (verify.txt)."""
    dest = work / module
    status = {}
    for line in (dest / "report.txt").read_text().splitlines():
        name, _, state = line.partition(": ")
        if "__mutmut_" in name and " " not in name and not name.startswith("#"):
            status[name] = state
    verify = dest / "verify.txt"
    after = {}
    if verify.exists():
        after = dict(line.rsplit(": ", 1) for line in verify.read_text().splitlines() if line)
    files = sorted({name.split(".x")[0] for name in status})
    for f in files:
        names = [n for n in status if n.split(".x")[0] == f]
        counts = {s: sum(status[n] == s for n in names) for s in sorted(set(status.values()))}
        newly = [n for n in names if status[n] != "killed" and after.get(n) == "killed"]
        left = [n for n in names if status[n] in ("survived", "no tests", "timeout")
                and after.get(n) != "killed"]
        print(f"{f}: total {len(names)} {counts}; killed by the new tests {len(newly)}")
        for n in left:
            print(f"    left: {n} ({status[n]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="+", choices=sorted(MODULES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/mut_work"))
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--with-kills", action="store_true",
                        help=f"also run {KILLS} (the tests added to kill survivors)")
    parser.add_argument("--mutmut-lib", default="/tmp/mutmut_lib")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite report.txt from a finished run")
    parser.add_argument("--summary", action="store_true",
                        help="print the scores before and after the kill tests")
    parser.add_argument("--verify-kills", action="store_true",
                        help=f"apply each survivor of a finished run and run {KILLS} on it")
    args = parser.parse_args()
    for module in args.modules:
        if args.summary:
            summarise(module, args.work)
        elif args.verify_kills:
            verify_kills(module, args.work, args.mutmut_lib)
        else:
            run(module, args.work, args.children, args.with_kills, args.mutmut_lib,
                args.report_only)


if __name__ == "__main__":
    main()
