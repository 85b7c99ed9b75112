"""The comparison's results: every run read back from the files it wrote, then results.md, results.json and the
three plots."""

from pathlib import Path

from ..files import read_json, write_json
from ..training.checkpoints import HISTORY_FILE
from .baseline import SVM_LABEL
from .plan import PRETRAINED, Plan, pretrained_cell, row_label, truncation_note
from .report import HEADLINE, MLM_SUFFIX, Row, markdown_table, plot_final_scores, plot_validation_curves, summarize
from .resume import RUN_FILE

PLOTS = {
    "steps": "validation_accuracy_vs_steps.png",
    "seconds": "validation_accuracy_vs_seconds.png",
    "scores": "final_scores.png",
}


def neural_run(run_dir: Path, seed: int, pretrain_dir: Path | None) -> dict:
    """One run's numbers, read back from the files it wrote. For a '+MLM' run, the training and wall seconds add
    the pre-training's, and the seconds axis of its curve starts where pre-training ended."""
    run_info = read_json(run_dir / "run_info.json", "a finished run's record")
    pretrain_train, pretrain_wall = 0.0, 0.0
    if pretrain_dir is not None:
        pretrain_train = read_json(pretrain_dir / "mlm_metrics.json", "a pre-training's record")["train_seconds"]
        pretrain_wall = read_json(pretrain_dir / RUN_FILE, "a pre-training's wall time")["wall_seconds"]
    history = read_json(run_dir / HISTORY_FILE, "a run's validation history")
    for entry in history:
        entry["total_train_seconds"] = entry["train_seconds"] + pretrain_train
    return {
        "seed": seed,
        "folder": str(run_dir),
        "metrics": read_json(run_dir / "metrics.json", "a finished run's scores"),
        "history": history,
        "num_parameters": run_info["num_parameters"],
        "train_tokens_per_second": run_info["train_tokens_per_second"],
        "train_seconds": run_info["train_seconds"] + pretrain_train,
        "wall_seconds": read_json(run_dir / RUN_FILE, "a run's wall time")["wall_seconds"] + pretrain_wall,
        "global_step": run_info["global_step"],
        "train_cpu_share": run_info.get("train_cpu_share"),  # None: off the CPU, or a run from before it was counted
        "stopped_by": run_info["stopped_by"],
        # The texts' length limit this run trained and was scored with (a preset's positions may cut it).
        "max_length": read_json(run_dir / "train_args.json", "a run's arguments")["model"]["max_length"],
    }


def svm_row(folder: Path) -> Row:
    metrics, info = read_json(folder / "metrics.json", "the baseline's scores"), read_json(folder / RUN_FILE, "")
    run = {
        "seed": None,
        "folder": str(folder),
        "metrics": metrics,
        "history": None,
        "validation_accuracy": metrics["best_validation"]["accuracy"],
        "train_tokens_per_second": None,
        "train_seconds": None,
        "wall_seconds": info["wall_seconds"],
    }
    return Row(SVM_LABEL, info["num_parameters"], runs=[run])


def collect_rows(compare_args, plan: Plan, counts: dict[str, int], outside: list[str]) -> list[Row]:
    """The table's rows, each preset followed by its '+MLM' row, the classical baseline last."""
    rows = []
    for preset in plan.presets:
        for with_mlm in [False] + ([True] if preset in plan.pretrain_presets else []):
            label = row_label(plan, preset, with_mlm)
            row = Row(label, counts[preset], parameter_warning=preset in outside)
            for seed in plan.seeds:
                run_dir = plan.output_dir / "runs" / label / f"seed-{seed}"
                pretrain_dir = plan.output_dir / "pretrain" / plan.labels[preset] / f"seed-{seed}" if with_mlm else None
                row.runs.append(neural_run(run_dir, seed, pretrain_dir))
            rows.append(row)
    if compare_args.svm_baseline:
        rows.append(svm_row(plan.output_dir / "svm"))
    return rows


CONTENDED_SHARE = 0.8  # under this share of its threads' CPU time, a run's time budget bought visibly less work


def contention_note(rows: list[Row], time_budget: bool = True) -> str | None:
    """A warning naming the runs that got under CONTENDED_SHARE of the CPU their threads asked for while training
    (other processes on the same cores): under a time budget they did less work than their seconds say; under a
    step budget only their seconds and tokens/s are those of a shared machine."""
    contended = [
        f"{row.label} seed {run['seed']} ({100 * run['train_cpu_share']:.0f} %)"
        for row in rows
        for run in row.runs
        if run.get("train_cpu_share") is not None and run["train_cpu_share"] < CONTENDED_SHARE
    ]
    if not contended:
        return None
    found = (
        f"CPU contention: {', '.join(contended)} got under {100 * CONTENDED_SHARE:.0f} % of the CPU time their "
        "threads asked for while training (run_info.json's train_cpu_share), so "
    )
    if not time_budget:
        return found + (
            "their seconds and tokens/s understate their speed; their scores stand (the budget is in steps)."
        )
    return found + (
        "their time budget bought less work; to compare at equal work, delete their run folders and rerun with "
        "--resume on free cores."
    )


SLOW_SHARE = 0.8  # under this share of its row's fastest seed's tokens/s, with its CPU to itself: a slower machine


def speed_note(rows: list[Row], time_budget: bool = True) -> str | None:
    """A warning naming the runs that trained under SLOW_SHARE of the tokens/s of their row's fastest seed although
    they had their CPU to themselves: the seeds of one model differ in speed by a few percent (their batches
    differ), so such a run ran on a slower machine (a `--resume` in another session lands on another machine). Under
    a time budget it did less work than the others; under a step budget only its seconds differ. Runs already named
    by `contention_note` are left to it."""
    slow = []
    for row in rows:
        speeds = [run["train_tokens_per_second"] for run in row.runs if run.get("train_tokens_per_second")]
        if len(speeds) < 2:
            continue
        for run in row.runs:
            share, speed = run.get("train_cpu_share"), run.get("train_tokens_per_second")
            if speed and speed < SLOW_SHARE * max(speeds) and (share is None or share >= CONTENDED_SHARE):
                slow.append(f"{row.label} seed {run['seed']} ({speed:,.0f} against {max(speeds):,.0f})")
    if not slow:
        return None
    found = (
        f"Machine speed: {', '.join(slow)} trained under {100 * SLOW_SHARE:.0f} % of the tokens/s of their model's "
        "fastest seed with their CPU to themselves: a slower machine (run_info.json's cpu and finished say where "
        "and when), or other work slowing the caches and memory they shared, so "
    )
    if not time_budget:
        return found + "their seconds and tokens/s are that machine's; their scores stand (the budget is in steps)."
    return found + (
        "their time budget bought less work; to compare at equal work, rerun every run of the comparison on one "
        "machine."
    )


def notes(rows: list[Row], plan: Plan, data, train_args, compare_args, counts, outside) -> list[str]:
    """The lines under the table: what the numbers are and what every run shared."""
    split = rows[0].runs[0]["metrics"]["split"]
    from_scratch = [preset for preset in plan.presets if pretrained_cell(preset) is None]
    first = (from_scratch or plan.presets)[0]
    reference = plan.labels[first]
    sizes = ", ".join(f"{name} {len(part):,}" for name, part in data.splits.items())
    budget = (
        f"max_steps {train_args.max_steps}" if train_args.max_steps > 0 else f"{train_args.num_train_epochs} epochs"
    )
    if train_args.max_train_seconds > 0:
        budget += f", at most {train_args.max_train_seconds:g} s of training per run"
        if train_args.lr_schedule_by == "seconds":
            budget += f" ({train_args.lr_scheduler_type} learning-rate decay over those seconds)"
    tolerance = f"{100 * compare_args.parameter_tolerance:g} %"
    lines = [
        f"Scores in % on the {split} split ({sizes} rows; validation cut from train with split seed "
        f"{plan.split_seed}), mean ± sample std over seeds {plan.seeds}; checkpoints chosen on validation by "
        f"{train_args.metric_for_best_model}.",
        f"Budget per run: {budget}, batch {train_args.per_device_train_batch_size}, learning rate "
        f"{train_args.learning_rate:g}. Parameters as sequence classifiers with this tokenizer "
        f"({counts[first]:,} for {reference}, the reference; tolerance {tolerance}).",
        "train tokens/s: real (non-padding) training tokens per second of training steps; train s: seconds of "
        "training steps (validation excluded); wall s: the whole run (data, tokenization, validation, test, saving).",
    ]
    if len(from_scratch) < len(plan.presets):
        lines.append(
            f"{plan.labels[PRETRAINED] if PRETRAINED in plan.labels else Path(plan.pretrained_model).name} rows start "
            f"from the pretrained checkpoint {plan.pretrained_model} (converted, with its tokenizer); '+<cell>' rows "
            f"add recurrent sub-layers in layers '{plan.pretrained_layers}', gated to zero at the start. Their "
            "parameter counts are outside the tolerance check."
        )
    if plan.pretrain_presets:
        lines.append(
            f"{MLM_SUFFIX}: pre-trained as a masked LM for {compare_args.pretrain_steps} steps on the training text, "
            "then fine-tuned with the same budget; its train s and wall s include the pre-training."
        )
    if compare_args.svm_baseline:
        lines.append(
            f"{SVM_LABEL}: scikit-learn, one deterministic fit, C chosen on validation; its parameters are the "
            "linear model's weights."
        )
    if split == "validation":
        lines.append("No test file: the scores are on the validation split that also chose the checkpoints.")
    for note in (contention_note, speed_note):
        found = note(rows, time_budget=train_args.max_train_seconds > 0)
        if found:
            lines.append(found)
    truncated = [truncation_note(plan, preset) for preset in plan.presets]
    lines += [f"{note}." for note in truncated if note]
    if outside:
        lines.append(
            f"(!) WARNING: parameters differ from {reference} by more than {tolerance} (--allow_parameter_mismatch)."
        )
    return lines


def results_json(rows: list[Row], plan: Plan, counts, outside, fingerprints: dict) -> dict:
    split = rows[0].runs[0]["metrics"]["split"]
    return {
        "split": split,
        "headline": list(HEADLINE),
        "data_fingerprints": fingerprints,
        "parameter_counts": {plan.labels[preset]: count for preset, count in counts.items()},
        "parameter_mismatch": [plan.labels[preset] for preset in outside],
        "rows": [
            {
                "label": row.label,
                "num_parameters": row.num_parameters,
                "summary": summarize(row),
                "runs": [
                    {key: value for key, value in run.items() if key not in ("metrics", "history")}
                    | {"scores": {name: run["metrics"][split][name] for name in HEADLINE}}
                    for run in row.runs
                ],
            }
            for row in rows
        ],
    }


def write_report(rows: list[Row], plan: Plan, data, train_args, compare_args, counts, outside, fingerprints) -> str:
    """results.md, results.json and the plots; returns the markdown."""
    split = rows[0].runs[0]["metrics"]["split"]
    lines = notes(rows, plan, data, train_args, compare_args, counts, outside)
    plots = [f"![{name}]({name})" for name in PLOTS.values()]
    markdown = "\n".join(
        ["# Comparison", "", markdown_table(rows, split), *[f"- {line}" for line in lines], "", *plots, ""]
    )
    (plan.output_dir / "results.md").write_text(markdown)
    write_json(plan.output_dir / "results.json", results_json(rows, plan, counts, outside, fingerprints))
    plot_validation_curves(rows, "step", "optimizer step", plan.output_dir / PLOTS["steps"], "validation accuracy")
    plot_validation_curves(
        rows,
        "total_train_seconds",
        "training seconds (validation excluded; +MLM rows start after pre-training)",
        plan.output_dir / PLOTS["seconds"],
        "validation accuracy against training time",
    )
    plot_final_scores(rows, split, plan.output_dir / PLOTS["scores"])
    return markdown
