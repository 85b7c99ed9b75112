"""`recurrent-transformer compare`, the central experiment: the hybrid against the LSTM and Transformer baselines (and any other presets), on one data
set, with one shared tokenizer, matched parameter counts, the same budget and several seeds, plus the classical
baseline (TF-IDF + LinearSVC) as a reference row; a markdown table and plots at the end.

Run from the repository root (data paths in configs/compare/*.yaml are relative to it):

    recurrent-transformer compare configs/compare/trec.yaml
    recurrent-transformer compare configs/compare/trec.yaml --seeds 42 --max_steps 300 --output_dir runs/compare/trec-short
    recurrent-transformer compare configs/compare/r8.yaml --pretrain_steps 2000         # adds "+MLM" rows
    recurrent-transformer compare configs/compare/sst2.yaml --max_train_seconds 900     # a wall-clock budget per run
    recurrent-transformer compare configs/compare/trec.yaml --resume                    # keep finished runs, do the rest
    recurrent-transformer compare configs/compare/trec.yaml --resume --pretrain_steps 3000  # add "+MLM" rows later
    recurrent-transformer compare configs/compare/trec.yaml --resume --seeds 42,43,44,45,46  # more seeds, same split
    recurrent-transformer compare configs/compare/sst2.yaml --parallel_runs 6           # on a GPU: 6 runs share the card
    recurrent-transformer compare configs/compare/smoke.yaml --output_dir /tmp/compare  # seconds: the test's settings

Every `train` setting (learning rate, batch, schedule, `--eval_steps`, `--max_length`, ...) is a key here too and is
the same for every model; the comparison sets, per run, the preset (`--presets`), the seed (`--seeds`), the shared
tokenizer and, for "+MLM" rows, `--init_from`. One exception: a preset (or pretrained checkpoint) whose learned
absolute positions are fewer than `--max_length` cuts its texts at its positions, rather than failing the whole
comparison; its runs' compare_run.json and results.md say so. Each run is `training.classifier.train_classifier`, called in-process,
or with `--parallel_runs N` in N worker processes at once (`experiments.workers`).

1. The data is loaded and the validation split cut from train once, with `--split_seed` (default: the first seed):
   every run and the baseline see the same train, validation and test rows; seeds vary the model's initial
   weights and the data order only. Checkpoint selection (and the baseline's C) use validation, never test.
2. One tokenizer is trained on the training split (or `--tokenizer_name` is used) and shared by every run.
3. Parameter counts (as sequence classifiers with this vocabulary and label set) must lie within
   `--parameter_tolerance` (5 %) of the first preset's; otherwise the comparison is refused, or, with
   `--allow_parameter_mismatch`, run with a warning and a "(!)" in the table.
4. Each preset trains once per seed under the same budget: `--max_steps` (or `--num_train_epochs`), and
   optionally `--max_train_seconds`, counted over training steps only, validation excluded (the learning-rate
   schedule spans max_steps, or with `--lr_schedule_by seconds` the time budget). With `--pretrain_steps
   N`, each preset in `--pretrain_presets` (default: all) is also pre-trained as a masked LM for N steps on the
   training text (`pretrain-mlm`, per seed) and fine-tuned from it: the "+MLM" rows.
5. TF-IDF + LinearSVC (word 1-2 grams, character 1-3 grams for CJK text), C chosen on validation.

The output folder receives tokenizer/, runs/<model>/seed-<seed>/ (training run folders: metrics.json,
eval_history.json, run_info.json, ...), pretrain/<preset>/seed-<seed>/, svm/metrics.json, results.md (the table),
results.json (every number in it, per run), compare_args.json and three plots: validation_accuracy_vs_steps.png,
validation_accuracy_vs_seconds.png, final_scores.png. Progress is logged as each run starts and ends, beside
the runs' progress bars. Bad input (an unknown preset, parameters out of tolerance, a missing data file, an output
folder holding another comparison) prints one `error: ...` line and exits with status 2 before anything is written.
"""

import dataclasses
import json
import logging

from ..cli import parse_arguments, run_command
from ..data import split_fingerprint
from ..files import clear_outputs, write_json
from ..training.build import build_datasets, build_tokenizer
from .baseline import SVM_LABEL, tfidf_svm_baseline
from .plan import (
    ARGUMENT_CLASSES,
    CompareArguments,
    Plan,
    check_parameters,
    check_settings,
    pretrained_cell,
    refuse_per_run_settings,
)
from .results import PLOTS, collect_rows, write_report
from .resume import RUN_FILE, SETTINGS_FILE, check_resume, finished
from .workers import run_models

logger = logging.getLogger(__name__)

# Everything a comparison writes into its output folder; --overwrite_output_dir removes these first.
OUTPUT_NAMES = ("tokenizer", "runs", "pretrain", "svm", "results.md", "results.json", SETTINGS_FILE, *PLOTS.values())


def resolved_settings(compare_args, model_args, data_args, train_args) -> dict:
    values = {
        "compare": dataclasses.asdict(compare_args),
        "model": dataclasses.asdict(model_args),
        "data": dataclasses.asdict(data_args),
        "training": dataclasses.asdict(train_args),
    }
    return json.loads(json.dumps(values, default=str))


def run_svm(compare_args, train_args, data, plan: Plan) -> None:
    folder = plan.output_dir / "svm"
    if finished(folder, "metrics.json"):
        return
    logger.info(f"{SVM_LABEL}: fitting, C chosen on validation from {list(plan.c_values)} ...")
    metrics, info = tfidf_svm_baseline(
        data,
        analyzer=compare_args.svm_analyzer,
        c_values=plan.c_values,
        metric=train_args.metric_for_best_model,
        metrics_backend=train_args.metrics_backend,
        seed=plan.split_seed,
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "metrics.json", metrics)
    write_json(folder / RUN_FILE, info)
    scores = metrics[metrics["split"]]
    logger.info(f"{SVM_LABEL}: {metrics['split']} accuracy {scores['accuracy']:.4f}, C={info['C']}")


def prepare_output_dir(plan: Plan, settings: dict, tokenizer, train_args, resumed_with: list[str]) -> None:
    """Clear an earlier comparison's outputs (--overwrite_output_dir), then save the settings and the tokenizer; a
    resume that adds seeds, presets or '+MLM' rows records them in the saved settings."""
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    if train_args.overwrite_output_dir:
        clear_outputs(plan.output_dir, OUTPUT_NAMES)
    if not train_args.resume:
        write_json(plan.output_dir / SETTINGS_FILE, settings)
        tokenizer.save_pretrained(plan.output_dir / "tokenizer")
    elif resumed_with:
        write_json(plan.output_dir / SETTINGS_FILE, settings)


def compare(compare_args: CompareArguments, model_args, data_args, train_args) -> dict:
    """The whole comparison from parsed arguments; returns what results.json holds."""
    plan = check_settings(compare_args, model_args, data_args, train_args)
    settings = resolved_settings(compare_args, model_args, data_args, train_args)
    resumed_with = check_resume(plan, settings) if train_args.resume else []
    data = build_datasets(data_args, plan.split_seed)
    saved = plan.output_dir / "tokenizer"
    resume_tokenizer = train_args.resume and (saved / "tokenizer.json").is_file()
    if all(pretrained_cell(preset) is not None for preset in plan.presets):  # every row uses the checkpoint's
        model_args = dataclasses.replace(model_args, tokenizer_name=plan.pretrained_model)
    tokenizer = build_tokenizer(model_args, data.splits["train"], saved_dir=saved if resume_tokenizer else None)
    counts, outside = check_parameters(compare_args, model_args, data, tokenizer, plan)
    # Every check has passed; only now is the output folder written.
    prepare_output_dir(plan, settings, tokenizer, train_args, resumed_with)
    shared = dataclasses.replace(model_args, tokenizer_name=str(saved))
    split_data_args = dataclasses.replace(data_args, split_seed=plan.split_seed)
    if compare_args.svm_baseline:
        run_svm(compare_args, train_args, data, plan)
    run_models(compare_args, shared, split_data_args, train_args, plan)
    rows = collect_rows(compare_args, plan, counts, outside)
    fingerprints = {name: split_fingerprint(split) for name, split in data.splits.items()}
    markdown = write_report(rows, plan, data, train_args, compare_args, counts, outside, fingerprints)
    print(markdown)
    logger.info(f"wrote {plan.output_dir / 'results.md'}, results.json and {len(PLOTS)} plots")
    return json.loads((plan.output_dir / "results.json").read_text())


def run(argv: list[str]) -> dict:
    refuse_per_run_settings(argv)
    return compare(*parse_arguments(ARGUMENT_CLASSES, argv))


def main(argv: list[str] | None = None) -> dict:
    """Compare as the command line says; returns the results. Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
