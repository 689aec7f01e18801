"""Run the experiment matrix end to end at a small scale, and write its report.

    python -m codereason_jax.reproduce --scale=mini [--output_dir=runs/reproduce_mini]

Pre-trains NL (text) and CODE (text + code) models, instruction-tunes them into the cells NN,
NC, CN, CC and the three Table 5 strategies, evaluates all nine models, and writes
OUTPUT_DIR/report/ (tables with 95% intervals, paired comparisons that say which differences
are within noise, loss curves per cell and the realised code share over steps). Every step
runs the same entry points a user runs (``codereason_jax.train`` / ``codereason_jax.evaluate``
with the gin files under gin/cells and gin/eval; the exact command lines are in the report).
Interrupted, the same command resumes: finished steps are skipped, a training step resumes from
its last checkpoint. OUTPUT_DIR is local (the matrix runs on this one machine, its logs are this
process's redirected output): copy it to a bucket afterwards if needed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import contextlib
import dataclasses
import hashlib
import json
import shlex
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from codereason_jax import cli, paths
from codereason_jax.cli import UserError

PRETRAIN_CELLS = ("pretrain_nl", "pretrain_code")
# Tuning cell -> the pre-trained model it starts from.
SFT_CELLS = {"sft_nn": "pretrain_nl", "sft_nc": "pretrain_nl", "sft_cn": "pretrain_code",
             "sft_cc": "pretrain_code", "sft_uniform": "pretrain_code",
             "sft_stepwise_increase": "pretrain_code", "sft_stepwise_decrease": "pretrain_code"}
LABELS = {"pretrain_nl": "NL", "pretrain_code": "CODE", "sft_nn": "NN", "sft_nc": "NC",
          "sft_cn": "CN", "sft_cc": "CC", "sft_uniform": "Uniform",
          "sft_stepwise_increase": "Stepwise Inc.", "sft_stepwise_decrease": "Stepwise Dec."}
EVAL_GIN = "gin/eval/embedded.gin"
CODE_TASKS = ("eval_embedded_codeqa", "eval_embedded_codegen", "eval_embedded_codecomplete",
              "embedded_code")


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big each step of the matrix is. Learning rates are above the paper's (1e-4 / 2e-5)
    because these runs are thousands of times shorter; everything else is the cells' own."""
    model_gin: str
    sequence_length: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_learning_rate: float
    pretrain_warmup: int
    sft_steps: int
    sft_batch: int
    sft_learning_rate: float
    sft_warmup: int
    dropout_rate: float
    checkpoint_every: int
    log_every: int
    eval_max_examples: int
    eval_max_new_tokens: int
    eval_batch_size: int
    bootstrap_resamples: int = 1000
    # Gin bindings for the training steps that change speed, not results (BENCHMARKS.md).
    speed_bindings: tuple[str, ...] = ()


# On CPU a fusion boundary between blocks and the tied head's hand-written backward are 1.35x
# faster for the tiny model; the numbers are those of the plain model up to float rounding.
CPU_SPEED_BINDINGS = ("PanGuConfig.block_barrier=True", "PanGuConfig.head_vjp=True")

SCALES = {
    # The tiny PanGu-α on the embedded corpora; 34 minutes on 2 idle CPU cores.
    "mini": Scale(model_gin="gin/models/pangu_tiny.gin", sequence_length=256,
                  pretrain_steps=1000, pretrain_batch=8, pretrain_learning_rate=2e-3,
                  pretrain_warmup=60, sft_steps=150, sft_batch=8, sft_learning_rate=1e-3,
                  sft_warmup=15, dropout_rate=0.0, checkpoint_every=100, log_every=25,
                  eval_max_examples=100, eval_max_new_tokens=64, eval_batch_size=32,
                  speed_bindings=CPU_SPEED_BINDINGS),
    # Every step of the driver at toy size: for tests (minutes), not for conclusions.
    "micro": Scale(model_gin="gin/models/pangu_tiny.gin", sequence_length=64,
                   pretrain_steps=4, pretrain_batch=2, pretrain_learning_rate=1e-3,
                   pretrain_warmup=1, sft_steps=4, sft_batch=2, sft_learning_rate=1e-3,
                   sft_warmup=1, dropout_rate=0.0, checkpoint_every=2, log_every=2,
                   eval_max_examples=3, eval_max_new_tokens=4, eval_batch_size=8,
                   bootstrap_resamples=200, speed_bindings=CPU_SPEED_BINDINGS),
}


@dataclasses.dataclass(frozen=True)
class Step:
    name: str                 # e.g. "train/sft_cc", "eval/sft_cc"
    module: str               # codereason_jax.train or codereason_jax.evaluate
    argv: tuple[str, ...]

    def command(self) -> str:
        return shlex.join(["python", "-m", self.module, *self.argv])


def run_dir(output_dir: str, cell: str) -> str:
    return os.path.join(output_dir, "runs", cell)


def results_path(output_dir: str, cell: str) -> str:
    return os.path.join(output_dir, "eval", f"{cell}.json")


def plan(scale: Scale, output_dir: str) -> list[Step]:
    """Every step of the matrix, in an order where each step's inputs exist."""
    common = [f"--gin.SEQUENCE_LENGTH={scale.sequence_length}",
              f"--gin.PanGuConfig.dropout_rate={scale.dropout_rate}"]
    train_common = common + [f"--gin.{binding}" for binding in scale.speed_bindings] + [
        '--gin.matrix_mixture.corpora="embedded"',
        f"--gin.PRETRAIN_STEPS={scale.pretrain_steps}",
        f"--gin.PRETRAIN_BATCH={scale.pretrain_batch}",
        f"--gin.SFT_STEPS={scale.sft_steps}", f"--gin.SFT_BATCH={scale.sft_batch}",
        f"--gin.NL_BASE={json.dumps(run_dir(output_dir, 'pretrain_nl'))}",
        f"--gin.CODE_BASE={json.dumps(run_dir(output_dir, 'pretrain_code'))}",
        f"--gin.CheckpointConfig.every_steps={scale.checkpoint_every}",
        f"--gin.TrainConfig.log_every={scale.log_every}"]
    steps = []
    for cell in (*PRETRAIN_CELLS, *SFT_CELLS):
        pretrain = cell in PRETRAIN_CELLS
        rate = scale.pretrain_learning_rate if pretrain else scale.sft_learning_rate
        warmup = scale.pretrain_warmup if pretrain else scale.sft_warmup
        steps.append(Step(f"train/{cell}", "codereason_jax.train", (
            f"--run_dir={run_dir(output_dir, cell)}", f"--gin_file={scale.model_gin}",
            f"--gin_file=gin/cells/{cell}.gin", *train_common,
            f"--gin.OptimizerConfig.peak_learning_rate={rate}",
            f"--gin.OptimizerConfig.warmup_steps={warmup}")))
    for cell in (*PRETRAIN_CELLS, *SFT_CELLS):
        steps.append(Step(f"eval/{cell}", "codereason_jax.evaluate", (
            f"--checkpoint={run_dir(output_dir, cell)}", f"--gin_file={scale.model_gin}",
            f"--gin_file={EVAL_GIN}", f"--output={results_path(output_dir, cell)}", *common,
            f"--gin.EvalConfig.max_examples={scale.eval_max_examples}",
            f"--gin.EvalConfig.max_new_tokens={scale.eval_max_new_tokens}",
            f"--gin.EvalConfig.batch_size={scale.eval_batch_size}")))
    return steps


# --------------------------------------------------------------------------------------------
# Running, resumably
# --------------------------------------------------------------------------------------------


class State:
    """OUTPUT_DIR/state.json: the scale it was made with and the finished steps."""

    def __init__(self, output_dir: str, scale_name: str, scale: Scale):
        self.path = os.path.join(output_dir, "state.json")
        fingerprint = hashlib.sha256(json.dumps(dataclasses.asdict(scale), sort_keys=True)
                                     .encode()).hexdigest()[:16]
        self.data = {"scale": scale_name, "fingerprint": fingerprint, "done": {}}
        if os.path.exists(self.path):
            with open(self.path) as f:
                previous = json.load(f)
            if previous["fingerprint"] != fingerprint:
                raise UserError(
                    f"{output_dir} holds a run of another scale or setting "
                    f"({previous['scale']}, {previous['fingerprint']}); pass another "
                    "--output_dir or delete that one.")
            self.data = previous

    def done(self, step: Step) -> bool:
        return step.name in self.data["done"]

    def mark(self, step: Step, seconds: float) -> None:
        self.data["done"][step.name] = {"seconds": round(seconds, 1), "command": step.command()}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)  # atomic: a kill leaves the old or the new state


def _entry_point(module: str) -> Callable[[Sequence[str]], int]:
    # Both are imported before either parses gin: gin locks its registry at the first parse.
    from codereason_jax import evaluate, train
    return {"codereason_jax.train": train.main, "codereason_jax.evaluate": evaluate.main}[module]


@contextlib.contextmanager
def _output_to(path: str):
    """Send this process's stdout and stderr to ``path``, native writes (XLA, TF) included."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_step(step: Step, log_path: str) -> int:
    """Run one entry point in this process, its output going to ``log_path``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with _output_to(log_path):
        print(f"$ {step.command()}", flush=True)
        try:
            return _entry_point(step.module)(list(step.argv))
        except SystemExit as exit_:  # argparse errors
            return int(exit_.code or 0)
        except Exception:  # noqa: BLE001 (a failed step is reported and the run stops)
            import traceback

            traceback.print_exc()
            return 1


def _format_seconds(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def run_all(scale_name: str, output_dir: str, only: Sequence[str] | None = None) -> float:
    """Run (or resume) every step; returns the wall-clock seconds of all finished steps."""
    scale = SCALES[scale_name]
    if paths.is_url(output_dir):
        raise UserError(f"--output_dir={output_dir} is a URL; the reproduction runs on "
                         "this machine and needs a local directory (copy it to the bucket "
                         "afterwards, e.g. with gcloud storage rsync --recursive).")
    os.makedirs(output_dir, exist_ok=True)
    state = State(output_dir, scale_name, scale)
    steps = [s for s in plan(scale, output_dir) if only is None or s.name in only]
    _use_compilation_cache(output_dir)
    _entry_point("codereason_jax.train")
    start = time.monotonic()
    for i, step in enumerate(steps, start=1):
        prefix = f"[{i:2d}/{len(steps)}] {step.name:<28}"
        if state.done(step):
            print(f"{prefix} done earlier ({state.data['done'][step.name]['seconds']:.0f} s)")
            continue
        print(f"{prefix} ...", end="", flush=True)
        log_path = os.path.join(output_dir, "logs", step.name.replace("/", "_") + ".log")
        step_start = time.monotonic()
        code = run_step(step, log_path)
        seconds = time.monotonic() - step_start
        if code != 0:
            print(f" failed (exit {code}) after {seconds:.0f} s; the end of {log_path}:")
            with open(log_path) as f:
                print("".join(f.readlines()[-25:]))
            raise SystemExit(f"error: step {step.name} failed; fix the cause and rerun the same "
                             "command to resume.")
        state.mark(step, seconds)
        print(f" {seconds:5.0f} s   (elapsed {_format_seconds(time.monotonic() - start)})",
              flush=True)
    return sum(v["seconds"] for v in state.data["done"].values())


def _use_compilation_cache(output_dir: str) -> None:
    """All tuning cells compile the same step: compile it once per machine."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(output_dir, "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _example_rows(task_result: dict[str, Any]) -> tuple[np.ndarray, Callable, bool]:
    """Per-example additive statistics, the statistic on their sums, and higher-is-better."""
    from codereason_jax.evaluation import metrics

    kind, examples = task_result["kind"], task_result["examples"]
    if kind == "multiple_choice":
        rows = np.array([[float(e["prediction"] in e["labels"]), 1.0] for e in examples])
        return rows, lambda t: 100 * t[0] / t[1], True
    if kind == "language_modelling":
        rows = np.array([[e["nll_sum"], e["tokens"]] for e in examples])
        return rows, lambda t: t[0] / t[1], False
    rows = np.array([e["bleu_counts"] for e in examples])
    return rows, lambda t: 100 * metrics.bleu_from_counts(t).bleu, True


# (A, B, question): is B better than A?
COMPARISONS = (
    ("pretrain_nl", "pretrain_code", "code in pre-training (CODE vs NL)"),
    ("sft_nn", "sft_nc", "code instructions on the NL model (NC vs NN)"),
    ("sft_cn", "sft_cc", "code instructions on the CODE model (CC vs CN)"),
    ("sft_nn", "sft_cn", "code in pre-training, text tuning (CN vs NN)"),
    ("sft_nc", "sft_cc", "code in pre-training, text+code tuning (CC vs NC)"),
    ("sft_uniform", "sft_stepwise_decrease", "Stepwise Decrease vs Uniform"),
    ("sft_uniform", "sft_stepwise_increase", "Stepwise Increase vs Uniform"),
)


# The smallest difference a verdict reports (accuracy points, BLEU points, nats per token).
MIN_DIFFERENCE = {"multiple_choice": 0.0, "generation": 0.01, "language_modelling": 0.001}


def compare(results: dict[str, dict], resamples: int) -> list[dict[str, Any]]:
    """Paired bootstrap differences (B - A, signed so that > 0 means B is better)."""
    from codereason_jax.evaluation import metrics

    out = []
    for a, b, question in COMPARISONS:
        for task in results[a]["tasks"]:
            rows_a, statistic, higher = _example_rows(results[a]["tasks"][task])
            rows_b, _, _ = _example_rows(results[b]["tasks"][task])
            sign = 1.0 if higher else -1.0
            d = metrics.paired_bootstrap_difference(
                rows_a, rows_b, lambda t: sign * statistic(t), n_resamples=resamples)
            # A difference must clear the metric's resolution as well as zero: corpus BLEU
            # of near-empty outputs differs by 1e-100 with a tight interval, meaning nothing.
            resolution = MIN_DIFFERENCE[results[a]["tasks"][task]["kind"]]
            if d["ci_low"] > 0 and d["difference"] >= resolution:
                verdict = f"{LABELS[b]} better"
            elif d["ci_high"] < 0 and d["difference"] <= -resolution:
                verdict = f"{LABELS[a]} better"
            else:
                verdict = "within noise"
            out.append({"question": question, "a": LABELS[a], "b": LABELS[b], "task": task,
                        "metric": {"multiple_choice": "accuracy", "generation": "BLEU",
                                   "language_modelling": "loss (lower is better)"}[
                                       results[a]["tasks"][task]["kind"]],
                        "a_value": statistic(rows_a.sum(axis=0)),
                        "b_value": statistic(rows_b.sum(axis=0)),
                        "improvement": d["difference"], "ci_low": d["ci_low"],
                        "ci_high": d["ci_high"], "verdict": verdict})
    return out


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _running_mean(values: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    """Means over ``window`` consecutive values (one step's batch is a few rows: noisy)."""
    return np.convolve(values, np.ones(window) / window, mode="valid"), window


def _plot_curves(output_dir: str, report_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, cells, title in ((axes[0], PRETRAIN_CELLS, "pre-training"),
                             (axes[1], tuple(SFT_CELLS), "instruction tuning")):
        for cell in cells:
            records = _read_jsonl(os.path.join(run_dir(output_dir, cell), "metrics.jsonl"))
            if records:
                steps = np.array([r["step"] for r in records])
                loss = np.array([r["loss"] for r in records])
                # A batch is a few rows, so per-step losses are noisy: each step faintly, and
                # a running mean over a twentieth of the run on top.
                line, = ax.plot(steps, loss, linewidth=0.5, alpha=0.25)
                smooth, window = _running_mean(loss, max(1, len(loss) // 20))
                ax.plot(steps[window - 1:], smooth, color=line.get_color(), linewidth=1.5,
                        label=LABELS[cell])
        ax.set_title(f"training loss: {title} (running mean)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(fontsize=8)
    written.append(_save(fig, os.path.join(report_dir, "loss_curves.png")))

    fig, ax = plt.subplots(figsize=(7, 4))
    for cell in ("pretrain_code", "sft_cc", "sft_uniform", "sft_stepwise_increase",
                 "sft_stepwise_decrease"):
        records = _read_jsonl(os.path.join(run_dir(output_dir, cell), "metrics.jsonl"))
        keys = [k for k in (records[0] if records else {}) if k.startswith("share/")
                and "code" in k]
        if not keys:
            continue
        steps = np.array([r["step"] for r in records], np.float64)
        share = np.array([r[keys[0]] for r in records])
        smooth, window = _running_mean(share, max(1, len(share) // 20))
        ax.plot(steps[window - 1:] / steps[-1], smooth, label=LABELS[cell], linewidth=1)
    ax.set_xlabel("fraction of the run")
    ax.set_ylabel("code share of the batch rows")
    ax.set_title("realised code share (running mean)")
    ax.legend(fontsize=8)
    written.append(_save(fig, os.path.join(report_dir, "code_share.png")))
    return written


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(scale_name: str, output_dir: str, wall_seconds: float) -> str:
    """Tables, comparisons and plots under OUTPUT_DIR/report; returns the summary's path."""
    from codereason_jax import report

    scale = SCALES[scale_name]
    report_dir = os.path.join(output_dir, "report")
    os.makedirs(report_dir, exist_ok=True)
    results = {}
    for cell in LABELS:
        with open(results_path(output_dir, cell)) as f:
            results[cell] = json.load(f)
    tasks = list(results["pretrain_nl"]["tasks"])
    lines = [f"# Mini reproduction ({scale_name} scale)", "",
             f"Wall-clock time of all steps: {_format_seconds(wall_seconds)} "
             f"({os.cpu_count()} CPU cores).", "",
             "Numbers: accuracy (%) and corpus BLEU with 95% bootstrap intervals over examples; "
             "held-out loss in nats/token (lower is better) with intervals over documents; "
             "n = examples (documents for loss). Bold: best in the row.", ""]
    tables = (("1", "Pre-training (paper Table 2)", PRETRAIN_CELLS),
              ("2", "Instruction tuning (paper Table 3; CN is the cell the paper skipped)",
               ("sft_nn", "sft_nc", "sft_cn", "sft_cc")),
              ("3", "Mixing strategies in instruction tuning, on CODE (paper Table 6)",
               ("sft_cc", "sft_uniform", "sft_stepwise_increase", "sft_stepwise_decrease")))
    for number, title, cells in tables:
        runs = [results[c] for c in cells]
        labels = [LABELS[c] for c in cells]
        rows, notes, raw = report.build_table(runs, labels, tasks)
        header = ["task (metric)"] + labels
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""] + notes
        if "sft_uniform" in cells:
            lines += ["CC mixes 5:3 statically and Uniform 5:3 in each of four phases: the "
                      "mixing is exact, so their batches, and numbers, are identical.", ""]
        report._plot(raw, labels, title, os.path.join(report_dir, f"table_{number}.png"))
        lines += [f"![{title}](table_{number}.png)", ""]

    cut = sorted({(task, r["tasks"][task].get("truncated", 0)
                   + r["tasks"][task].get("truncated_prompts", 0))
                  for r in results.values() for task in r["tasks"]} - {(t, 0) for t in tasks})
    if cut:
        lines += ["Inputs longer than the model's context were cut (prompts keep their end, "
                  "an over-long scored answer its start; per example in the results JSON): "
                  + "; ".join(
                      f"{task}: {n} of each model's examples" for task, n in cut) + ".", ""]

    comparisons = compare(results, scale.bootstrap_resamples)
    with open(os.path.join(report_dir, "comparisons.json"), "w") as f:
        json.dump(comparisons, f, indent=1)
    lines += ["## Which differences are real", "",
              "Paired bootstrap over the same examples (improvement > 0 means the second model "
              "is better; for loss, lower). A difference whose 95% interval includes 0 (or "
              "that is below 0.01 BLEU / 0.001 nats) is within noise.", "",
              "| question | task (metric) | A | B | improvement [95% CI] | verdict |",
              "|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['question']} | {c['task']} ({c['metric']}) | {c['a_value']:.3g} | "
                     f"{c['b_value']:.3g} | {c['improvement']:+.3g} [{c['ci_low']:+.3g}, "
                     f"{c['ci_high']:+.3g}] | {c['verdict']} |")
    code_rows = [c for c in comparisons if c["question"].startswith("code in pre-training (")
                 and c["task"] in CODE_TASKS]
    agree = [c for c in code_rows if c["verdict"] == "CODE better"]
    lines += ["", "## The paper's direction on code tasks", "",
              f"CODE beats NL beyond noise on {len(agree)} of {len(code_rows)} code measures "
              f"({', '.join(c['task'] for c in agree) or 'none'}); the others are "
              "within noise or reversed, as listed above. At this scale these are small models "
              "trained for minutes: the direction, not the size, is what carries over.", ""]
    for path in _plot_curves(output_dir, report_dir):
        name = os.path.basename(path)
        lines += [f"![{name}]({name})", ""]
    lines += ["## Commands", "", "Each step, as run (from the repository root):", "", "```"]
    lines += [step.command() for step in plan(scale, output_dir)] + ["```", ""]
    summary = os.path.join(report_dir, "README.md")
    with open(summary, "w") as f:
        f.write("\n".join(lines) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.reproduce",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="mini")
    parser.add_argument("--output_dir", help="default: runs/reproduce_SCALE")
    args = parser.parse_args(argv)
    output_dir = args.output_dir or os.path.join("runs", f"reproduce_{args.scale}")
    steps = plan(SCALES[args.scale], output_dir)
    print(f"{len(steps)} steps into {output_dir} (rerun the same command to resume)")
    wall = run_all(args.scale, output_dir)
    summary = write_report(args.scale, output_dir, wall)
    print(f"report: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
