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
from typing import Callable, Sequence

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


def format_seconds(seconds: float) -> str:
    """HH:MM:SS, as the progress lines and the report show elapsed time."""
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
        print(f" {seconds:5.0f} s   (elapsed {format_seconds(time.monotonic() - start)})",
              flush=True)
    return sum(v["seconds"] for v in state.data["done"].values())


def _use_compilation_cache(output_dir: str) -> None:
    """All tuning cells compile the same step: compile it once per machine."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(output_dir, "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    from codereason_jax.reproduce_report import write_report  # it imports this module

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
