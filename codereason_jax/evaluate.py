"""Evaluate a checkpoint (or a freshly initialised model) on reasoning tasks.

    python -m codereason_jax.evaluate --gin_file=gin/models/pangu_tiny.gin \\
        --checkpoint=runs/demo_cpu --tasks=eval_embedded_codeqa,eval_embedded_codegen \\
        --output=results.json [--gin.EvalConfig.mode="'corrected'"]
    python -m codereason_jax.evaluate --check_data --gin_file=gin/eval/tables_2_3_6.gin

Multiple-choice tasks are scored by ``codereason_jax.evaluation.scoring`` (mode ``paper``
reproduces the released scorer, quirk included); generation tasks decode with the KV cache and
report BLEU (the paper's one-segment computation and a proper corpus BLEU) and, where the task
carries tests (MBPP), pass@1 by sandboxed execution. One JSON file holds, per task, the metrics
with bootstrap 95% intervals, n, the chance level, the records skipped by reason, and every
example's prediction and scores, plus the model, checkpoint and vocabulary identity and the
operative config; a markdown summary is written beside it. ``--checkpoint`` and ``--output``
may be local paths or URLs (``gs://BUCKET/...``).

Each task is evaluated on the split the paper used unless ``EvalConfig.split`` (a mapping task
-> split) says otherwise. The results file is rewritten, atomically, after every task, with a
fingerprint of the checkpoint, the task settings and the data file; a rerun skips the tasks
whose fingerprint matches (``--force`` recomputes them). A task that fails does not stop the
others: each failure is one ``error:`` line, and the exit status is 1.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (under SeqIO) is only the reader

import dataclasses
import hashlib
import json
import sys
import time
import traceback
from typing import Any, Sequence

import gin

from codereason_jax import cli, gin_utils, paths
from codereason_jax.checkpoints import CheckpointError
from codereason_jax.evaluation.data_check import check_data, data_summary, resolve_splits
from codereason_jax.evaluation.eval_config import RESULT_SETTINGS, EvalConfig
from codereason_jax.evaluation.sandbox import SandboxUnavailable, check_isolation
from codereason_jax.evaluation.task_eval import evaluate_task
from codereason_jax.model.config import ConfigError
from codereason_jax.partitioning import PartitioningError


def _load_params(model, checkpoint: str | None, seed: int, mesh_shape,
                 step: int | None = None):
    """Params sharded over a (data, fsdp, model) mesh like training: restored straight into
    the shardings, or freshly initialised (a baseline)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from codereason_jax import partitioning
    from codereason_jax.checkpoints import abstract_like, restore_params
    mesh = partitioning.make_mesh(
        partitioning.resolve_mesh_shape(mesh_shape, jax.device_count()))
    example = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(seed), example))["params"]
    shardings = partitioning.param_shardings(boxed, mesh, partitioning.DEFAULT_RULES)
    if checkpoint is None:
        params = jax.jit(lambda key: nn.meta.unbox(model.init(key, example)["params"]),
                         out_shardings=shardings)(jax.random.key(seed))
        return mesh, params, 0
    step, params = restore_params(checkpoint, abstract_like(nn.meta.unbox(boxed), shardings),
                                  step)
    return mesh, params, step


# ----------------------------------------------------------------------------- results file

def fingerprint(identity: dict[str, Any], name: str, split: str, config: EvalConfig,
                data_sha256: str | None) -> tuple[str, dict[str, Any]]:
    """A hash of what a task's numbers depend on: the checkpoint (path, step, model, vocabulary)
    or initialisation, the task, its split and settings, and the data file's content."""
    inputs = {"model": identity, "task": name, "split": split, "data_sha256": data_sha256,
              "settings": {k: getattr(config, k) for k in RESULT_SETTINGS}}
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], inputs


def load_previous(output: str, identity: dict[str, Any], force: bool) -> dict[str, Any]:
    """Task results already in ``output`` for this model identity ({} with --force); results
    of another model or checkpoint are refused rather than overwritten."""
    if force or not paths.exists(output):
        return {}
    try:
        previous = json.loads(paths.read_text(output))
        tasks = previous["tasks"]
        other = previous.get("identity")
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{output} exists but is not a results file of this command ({err}); "
                          "pass another --output, or --force to replace it.") from None
    if other != identity:
        raise ConfigError(
            f"{output} holds results of another model or checkpoint ({json.dumps(other)[:300]}), "
            f"not of this one ({json.dumps(identity)[:300]}). Pass another --output to keep "
            "both, or --force to replace them.")
    return tasks


def write_results(output: str, results: dict[str, Any]) -> None:
    """The JSON (atomically replaced) and its markdown summary beside it."""
    from codereason_jax import report

    paths.write_text(output, json.dumps(results, indent=1, ensure_ascii=False))
    base = output[:-len(".json")] if output.endswith(".json") else output
    paths.write_text(base + ".md", report.run_summary(results))


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.evaluate",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="run (or checkpoints/) directory, local or a URL "
                        "(gs://...); omit to evaluate a freshly initialised model")
    parser.add_argument("--tasks", help="comma-separated task names (overrides EvalConfig)")
    parser.add_argument("--output", help="results JSON to write (a local path or a URL); "
                        "a markdown summary goes beside it")
    parser.add_argument("--check_data", action="store_true",
                        help="load every task's data (no model), print one line per task with "
                        "rows, skipped records, split and chance; exit 1 if any fails")
    parser.add_argument("--data_dir", help="benchmark data root (overrides EvalConfig.data_dir "
                        "and $CODEREASON_DATA_DIR)")
    parser.add_argument("--strict", action="store_true",
                        help="a record that cannot be scored is an error (EvalConfig.strict)")
    parser.add_argument("--force", action="store_true",
                        help="recompute tasks already in --output")
    cli.add_debug_flag(parser)
    args = gin_utils.parse_command_line(parser, argv)
    # --check_data reads files only: no model gin file is needed for it.
    model_config = None if args.check_data else gin_utils.model_config()
    config = gin_utils.build(EvalConfig)
    if args.tasks:
        config = dataclasses.replace(config, tasks=tuple(args.tasks.split(",")))
    if args.strict:
        config = dataclasses.replace(config, strict=True)
    if args.data_dir:
        config = dataclasses.replace(config, data_dir=args.data_dir)
    if not args.check_data and not args.output:
        raise ConfigError("--output is required (the results JSON to write), unless "
                          "--check_data.")
    if config.data_dir:
        os.environ["CODEREASON_DATA_DIR"] = config.data_dir

    import seqio

    from codereason_jax.model import PanGuDecoder
    from codereason_jax.model.config import check_vocabulary_fits
    from seqio_tasks.default_vocabulary import use_vocabulary
    from seqio_tasks.sources.rows import read_policy
    try:
        use_vocabulary(config.vocabulary)
        from seqio_tasks import mixtures  # noqa: F401 (registers the tasks)
        splits = resolve_splits(config)
        if args.check_data:
            with read_policy(config.read_policy()):
                return check_data(splits)
        from seqio_tasks.tasks import VOCABULARY
        check_vocabulary_fits(VOCABULARY, model_config)
    except ValueError as err:  # a vocabulary or task the data cannot give
        raise ConfigError(str(err)) from err

    if config.execute_tests and any("mbpp" in name for name in config.tasks):
        # MBPP's tests run the model's code: refuse an unisolated sandbox (one error line, exit
        # 2, naming what is missing and the opt-out) before the model loads, not after decoding.
        check_isolation()
    model = PanGuDecoder(dataclasses.replace(model_config, dropout_rate=0.0))
    vocabulary = seqio.get_mixture_or_task(config.tasks[0]).output_features["targets"].vocabulary
    vocab_hash = hashlib.sha256(
        paths.read_bytes(vocabulary.sentencepiece_model_file)).hexdigest()[:16]
    # The newest checkpoint that loads (a corrupt one is named and passed over).
    loaded = _load_params(model, args.checkpoint, config.seed, config.mesh_shape)
    if args.checkpoint is None:
        source = {"checkpoint": None, "step": 0, "init_seed": config.seed}
    else:
        source = {"checkpoint": paths.resolve(args.checkpoint), "step": loaded[2]}
    identity = {**source, "model": dataclasses.asdict(model_config),
                "vocabulary_sha256": vocab_hash}
    previous = load_previous(args.output, identity, args.force)

    results = {"identity": identity, "model": dataclasses.asdict(model_config), **source,
               "vocabulary": {"file": vocabulary.sentencepiece_model_file, "sha256": vocab_hash,
                              "size": vocabulary.vocab_size},
               "eval_config": dataclasses.asdict(config), "config": gin.operative_config_str(),
               # Results of this checkpoint already in the file are kept (tasks not run now
               # too); each is replaced when recomputed. A task that fails now keeps its old
               # result, listed under "failed" as stale.
               "tasks": dict(previous), "failed": {}}
    paths.makedirs(paths.dirname(paths.resolve(args.output)))
    with read_policy(config.read_policy()):
        for i, name in enumerate(config.tasks, start=1):
            split = splits[name]
            start = time.perf_counter()
            print(f"[{i}/{len(config.tasks)}] {name} ({split}) ...", flush=True)
            try:
                data = data_summary(name, split)
                key, inputs = fingerprint(identity, name, split, config, data["sha256"])
                done = previous.get(name)
                if done is not None and done.get("fingerprint") == key:
                    results["tasks"][name] = done
                    print("    done earlier with the same checkpoint, settings and data: kept "
                          "(--force recomputes)", flush=True)
                    continue
                import jax

                with jax.set_mesh(loaded[0]):
                    result = evaluate_task(name, split, model, loaded[1], config)
            except (CheckpointError, ConfigError, PartitioningError, SandboxUnavailable):
                raise  # the model or the sandbox: no task can run (cli.run reports it)
            except ValueError as err:  # DataFileError and other problems of this task's input
                results["failed"][name] = str(err)
                print(f"error: {name}: {err}", file=sys.stderr, flush=True)
                write_results(args.output, results)
                continue
            except Exception as err:  # noqa: BLE001 - our bug: show it, keep the other tasks
                traceback.print_exc()
                results["failed"][name] = f"{type(err).__name__}: {err}"
                print(f"error: {name}: internal error {type(err).__name__}: {err} (a bug: "
                      "please report it with the traceback above)", file=sys.stderr, flush=True)
                write_results(args.output, results)
                continue
            result.update(split=split, fingerprint=key, fingerprint_inputs=inputs,
                          data={k: data[k] for k in ("rows", "skipped", "skipped_at",
                                                     "filtered", "source", "sha256")})
            results["tasks"][name] = result
            write_results(args.output, results)
            summary = ", ".join(f"{k} {v:.2f}" for k, v in result["metrics"].items()
                                if isinstance(v, float))
            skipped = sum(data["skipped"].values())
            print(f"    n={result['n']}" + (f" (skipped {skipped})" if skipped else "")
                  + f": {summary} ({time.perf_counter() - start:.0f} s)", flush=True)
    write_results(args.output, results)
    print(f"wrote {args.output}")
    if results["failed"]:
        print(f"error: {len(results['failed'])} of {len(config.tasks)} tasks failed: "
              f"{sorted(results['failed'])}; rerun to retry them (finished tasks are kept).",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
