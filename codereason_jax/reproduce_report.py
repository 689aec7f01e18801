"""The mini reproduction's report: tables with 95% intervals and their panels, the paper's
published values beside ours, paired comparisons that say which differences are within noise,
the paper's claims marked reproduced / contradicted / not resolved, loss and code-share curves,
and the commands that were run; as README.md, a self-contained report.html and report.json."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from codereason_jax.reporting import claims, document, numbers, panels, significance
from codereason_jax.reproduce import (CODE_TASKS, LABELS, PRETRAIN_CELLS, SCALES, SFT_CELLS,
                                      format_seconds, plan, results_path, run_dir)

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

METRIC_NAMES = {"multiple_choice": "accuracy", "generation": "BLEU",
                "language_modelling": "loss (lower is better)"}


def compare(results: dict[str, dict], resamples: int) -> list[dict[str, Any]]:
    """Paired bootstrap differences (B - A, signed so that > 0 means B is better)."""
    out = []
    for a, b, question in COMPARISONS:
        for task in results[a]["tasks"]:
            d = significance.paired(results[a]["tasks"][task], results[b]["tasks"][task],
                                    resamples)
            if d is None:
                continue
            verdict = {1: f"{LABELS[b]} better", -1: f"{LABELS[a]} better",
                       0: "within noise"}[d["sign"]]
            out.append({"question": question, "a": LABELS[a], "b": LABELS[b], "task": task,
                        "metric": METRIC_NAMES[results[a]["tasks"][task]["kind"]],
                        "a_value": d["a_value"], "b_value": d["b_value"],
                        "improvement": d["improvement"], "ci_low": d["ci_low"],
                        "ci_high": d["ci_high"], "sign": d["sign"], "verdict": verdict})
    return out


def comparison_rows(comparisons: list[dict[str, Any]]) -> list[list[str]]:
    """Markdown cells of the comparisons, each number with its metric's decimals."""
    rows = []
    for c in comparisons:
        m = c["metric"]
        rows.append([c["question"], f"{c['task']} ({m})", numbers.fmt(c["a_value"], m),
                     numbers.fmt(c["b_value"], m),
                     f"{numbers.fmt(c['improvement'], m, signed=True)} "
                     + numbers.fmt_ci([c["ci_low"], c["ci_high"]], m, signed=True),
                     f"**{c['verdict']}**" if c["sign"] else c["verdict"]])
    return rows


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _running_mean(values: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    """Means over ``window`` consecutive values (one step's batch is a few rows: noisy)."""
    return np.convolve(values, np.ones(window) / window, mode="valid"), window


def _plot_curves(output_dir: str, report_dir: str) -> list[str]:
    """Training loss, one panel per stage, and the realised code share, one panel per cell
    that mixes code; a figure only where the runs logged its records."""
    plt = panels.pyplot()
    written = []
    stages = []
    for cells, title in ((PRETRAIN_CELLS, "pre-training"),
                         (tuple(SFT_CELLS), "instruction tuning")):
        logged = {c: _read_jsonl(os.path.join(run_dir(output_dir, c), "metrics.jsonl"))
                  for c in cells}
        logged = {c: r for c, r in logged.items() if r}
        if logged:
            stages.append((title, logged))
    if stages:
        fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
        for ax, (title, logged) in zip(axes[0], stages):
            for cell, records in logged.items():
                steps = np.array([r["step"] for r in records])
                loss = np.array([r["loss"] for r in records])
                # A batch is a few rows, so per-step losses are noisy: each step faintly, and
                # a running mean over a twentieth of the run on top.
                line, = ax.plot(steps, loss, linewidth=0.5, alpha=0.25)
                smooth, window = _running_mean(loss, max(1, len(loss) // 20))
                ax.plot(steps[window - 1:], smooth, color=line.get_color(), linewidth=1.5,
                        label=LABELS[cell])
            ax.set_title(f"training loss: {title} (running mean)", fontsize=10)
            ax.set_xlabel("step")
            ax.set_ylabel("loss (nats/token)")
            ax.legend(fontsize=8)
        written.append(panels.save(fig, os.path.join(report_dir, "loss_curves.png")))

    shares = []
    for cell in ("pretrain_code", "sft_cc", "sft_uniform", "sft_stepwise_increase",
                 "sft_stepwise_decrease"):
        records = _read_jsonl(os.path.join(run_dir(output_dir, cell), "metrics.jsonl"))
        keys = [k for k in (records[0] if records else {}) if k.startswith("share/")
                and "code" in k]
        if keys:
            shares.append((cell, records, keys[0]))
    if shares:
        fig, axes = plt.subplots(1, len(shares), figsize=(3.2 * len(shares), 3.2),
                                 squeeze=False, sharey=True)
        for ax, (cell, records, key) in zip(axes[0], shares):
            steps = np.array([r["step"] for r in records], np.float64)
            share = np.array([r[key] for r in records])
            smooth, window = _running_mean(share, max(1, len(share) // 20))
            ax.plot(steps, share, linewidth=0.5, alpha=0.25, color="C0")
            ax.plot(steps[window - 1:], smooth, linewidth=1.5, color="C0")
            ax.set_title(LABELS[cell], fontsize=10)
            ax.set_xlabel("step")
            ax.set_ylim(0, 1)
        axes[0][0].set_ylabel("code share of the batch rows")
        fig.suptitle("realised code share per step (running mean on top)", fontsize=10)
        written.append(panels.save(fig, os.path.join(report_dir, "code_share.png")))
    return written


def write_report(scale_name: str, output_dir: str, wall_seconds: float) -> str:
    """Tables, panels, the paper beside us, comparisons, claims and curves under
    OUTPUT_DIR/report (README.md, report.html, report.json); returns the summary's path."""
    from codereason_jax import report

    scale = SCALES[scale_name]
    report_dir = os.path.join(output_dir, "report")
    os.makedirs(report_dir, exist_ok=True)
    results = {}
    for cell in LABELS:
        with open(results_path(output_dir, cell)) as f:
            results[cell] = json.load(f)
    tasks = list(results["pretrain_nl"]["tasks"])
    blocks = [document.heading(f"Mini reproduction ({scale_name} scale)", 1),
              document.paragraph(f"Wall-clock time of all steps: {format_seconds(wall_seconds)} "
                                 f"({os.cpu_count()} CPU cores)."),
              document.paragraph(report.READING_GUIDE + " The embedded tasks stand in for the "
                                 "paper's: code QA for CosQA, code generation for MBPP; the "
                                 "paper's other rows have no counterpart at this scale.")]
    data: dict[str, Any] = {"scale": scale_name, "wall_seconds": wall_seconds, "tables": {}}
    tables = (("1", "Pre-training (paper Table 2)", PRETRAIN_CELLS, "2"),
              ("2", "Instruction tuning (paper Table 3; CN is the cell the paper skipped)",
               ("sft_nn", "sft_nc", "sft_cn", "sft_cc"), "3"),
              ("3", "Mixing strategies in instruction tuning, on CODE (paper Table 6)",
               ("sft_cc", "sft_uniform", "sft_stepwise_increase", "sft_stepwise_decrease"), "6"))
    for number, title, cells, paper_table in tables:
        section, data["tables"][number] = report.table_section(
            title, [results[c] for c in cells], [LABELS[c] for c in cells], tasks, report_dir,
            f"table_{number}", paper_table=paper_table, resamples=scale.bootstrap_resamples)
        if "sft_uniform" in cells:
            section.insert(2, document.paragraph(
                "CC mixes 5:3 statically and Uniform 5:3 in each of four phases: the mixing is "
                "exact, so their batches, and numbers, are identical."))
        blocks += section

    cut = sorted({(task, r["tasks"][task].get("truncated", 0)
                   + r["tasks"][task].get("truncated_prompts", 0))
                  for r in results.values() for task in r["tasks"]} - {(t, 0) for t in tasks})
    if cut:
        blocks.append(document.paragraph(
            "Inputs longer than the model's context were cut (prompts keep their end, an "
            "over-long scored answer its start; per example in the results JSON): " + "; ".join(
                f"{task}: {n} of each model's examples" for task, n in cut) + "."))

    comparisons = compare(results, scale.bootstrap_resamples)
    with open(os.path.join(report_dir, "comparisons.json"), "w") as f:
        json.dump(comparisons, f, indent=1)
    data["comparisons"] = comparisons
    blocks += [document.heading("Which differences are real"),
               document.paragraph(
                   "Paired bootstrap over the same examples (improvement > 0 means the second "
                   "model is better; for loss, lower). A difference whose 95% interval includes "
                   "0 (or that is below 0.01 BLEU / 0.001 nats) is within noise; significant "
                   "verdicts are bold."),
               document.table(["question", "task (metric)", "A", "B", "improvement [95% CI]",
                               "verdict"], comparison_rows(comparisons))]
    by_label = {LABELS[cell]: result for cell, result in results.items()}
    claim_comparisons = claims.claim_comparisons(by_label, scale.bootstrap_resamples)
    section, data["claims"] = report.claims_section(claim_comparisons)
    data["claim_comparisons"] = claim_comparisons
    blocks += section
    code_rows = [c for c in comparisons if c["question"].startswith("code in pre-training (")
                 and c["task"] in CODE_TASKS]
    agree = [c for c in code_rows if c["sign"] > 0]
    blocks.append(document.paragraph(
        f"On the code measures, CODE beats NL beyond noise on {len(agree)} of {len(code_rows)} "
        f"({', '.join(c['task'] for c in agree) or 'none'}). At this scale these are small "
        "models trained for minutes: the direction, not the size, is what carries over."))
    blocks.append(document.heading("Training curves"))
    for path in _plot_curves(output_dir, report_dir):
        name = os.path.basename(path)
        blocks.append(document.image(name, name))
    blocks += [document.heading("Commands"),
               document.paragraph("Each step, as run (from the repository root):"),
               document.code("\n".join(step.command() for step in plan(scale, output_dir)))]
    summary = os.path.join(report_dir, "README.md")
    with open(summary, "w") as f:
        f.write(document.to_markdown(blocks))
    with open(os.path.join(report_dir, "report.html"), "w") as f:
        f.write(document.to_html(blocks, report_dir, f"Mini reproduction ({scale_name})"))
    with open(os.path.join(report_dir, "report.json"), "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
    return summary
