"""The central experiment: the hybrid against the LSTM and Transformer baselines (and any other presets), on one data
set, with one shared tokenizer, matched parameter counts, the same budget and several seeds, plus the classical
baseline (TF-IDF + LinearSVC) as a reference row; a markdown table and plots at the end.

Run from the repository root (data paths in configs/compare/*.yaml are relative to it):

    python scripts/compare.py configs/compare/trec.yaml
    python scripts/compare.py configs/compare/trec.yaml --seeds 42 --max_steps 300 --output_dir runs/compare/trec-short
    python scripts/compare.py configs/compare/r8.yaml --pretrain_steps 2000         # adds "+MLM" rows
    python scripts/compare.py configs/compare/sst2.yaml --max_train_seconds 900     # a wall-clock budget per run
    python scripts/compare.py configs/compare/trec.yaml --resume                    # keep finished runs, do the rest
    python scripts/compare.py configs/compare/trec.yaml --resume --pretrain_steps 3000  # add "+MLM" rows later
    python scripts/compare.py configs/compare/trec.yaml --resume --seeds 42,43,44,45,46  # more seeds, same split
    python scripts/compare.py configs/compare/sst2.yaml --parallel_runs 6           # on a GPU: 6 runs share the card
    python scripts/compare.py configs/compare/smoke.yaml --output_dir /tmp/compare  # seconds: the test's settings

Every train.py setting (learning rate, batch, schedule, `--eval_steps`, `--max_length`, ...) is a key here too and is
the same for every model; compare.py sets, per run, the preset (`--presets`), the seed (`--seeds`), the shared
tokenizer and, for "+MLM" rows, `--init_from`. Each run is scripts/train.py, called in-process, or with
`--parallel_runs N` in N worker processes at once: a GPU has room for several of these small models, whose steps
are too short to keep it busy alone (the scores are the same either way; the seconds are shared-machine seconds).

1. The data is loaded and the validation split cut from train once, with `--split_seed` (default: the first seed):
   every run and the baseline see the same train, validation and test rows; seeds vary the model's initial
   weights and the data order only. Checkpoint selection (and the baseline's C) use validation, never test.
2. One tokenizer is trained on the training split (or `--tokenizer_name` is used) and shared by every run.
3. Parameter counts (as sequence classifiers with this vocabulary and label set) must lie within
   `--parameter_tolerance` (5 %) of the first preset's; otherwise the comparison is refused, or, with
   `--allow_parameter_mismatch`, run with a warning and a "(!)" in the table.
4. Each preset trains once per seed under the same budget: `--max_steps` (or `--num_train_epochs`), and
   optionally `--max_train_seconds`, counted over training steps only, validation excluded (the learning-rate
   schedule still spans max_steps: set it to about what fits, or use constant_with_warmup). With `--pretrain_steps
   N`, each preset in `--pretrain_presets` (default: all) is also pre-trained as a masked LM for N steps on the
   training text (scripts/pretrain_mlm.py, per seed) and fine-tuned from it: the "+MLM" rows.
5. TF-IDF + LinearSVC (word 1-2 grams, character 1-3 grams for CJK text), C chosen on validation.

The output folder receives tokenizer/, runs/<model>/seed-<seed>/ (train.py's folders: metrics.json,
eval_history.json, run_info.json, ...), pretrain/<preset>/seed-<seed>/, svm/metrics.json, results.md (the table),
results.json (every number in it, per run), compare_args.json and three plots: validation_accuracy_vs_steps.png,
validation_accuracy_vs_seconds.png, final_scores.png. Progress is logged as each run starts and ends, beside
train.py's progress bar. Bad input (an unknown preset, parameters out of tolerance, a missing data file, an output
folder holding another comparison) prints one `error: ...` line and exits with status 2 before anything is written.
"""

import concurrent.futures
import dataclasses
import importlib.util
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from recurrent_transformer import RecurrentTransformerForSequenceClassification
from recurrent_transformer.cli import ArgumentError, parse_yaml_and_flags, read_yaml, unshadow_libraries
from recurrent_transformer.compare import (
    HEADLINE,
    MLM_SUFFIX,
    SVM_ANALYZERS,
    SVM_LABEL,
    Row,
    compare_worker,
    markdown_table,
    plot_final_scores,
    plot_validation_curves,
    summarize,
    tfidf_svm_baseline,
)
from recurrent_transformer.data import DataError, load_tokenizer, train_tokenizer, training_texts

unshadow_libraries(__file__)  # scripts/evaluate.py must not stand in for the evaluate library

logger = logging.getLogger("compare")


def load_sibling(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package): the runs are train.py's and pretrain_mlm.py's own
    code, not a copy of it."""
    spec = importlib.util.spec_from_file_location(f"{name}_for_compare", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = load_sibling("train")
pretrain_script = load_sibling("pretrain_mlm")

PLOTS = {
    "steps": "validation_accuracy_vs_steps.png",
    "seconds": "validation_accuracy_vs_seconds.png",
    "scores": "final_scores.png",
}
# Everything this script writes into its output folder; --overwrite_output_dir removes these first.
OUTPUT_NAMES = (
    "tokenizer",
    "runs",
    "pretrain",
    "svm",
    "results.md",
    "results.json",
    "compare_args.json",
    *PLOTS.values(),
)
RUN_FILE = "compare_run.json"  # written into a run's folder when it has finished: its wall time
# train.py settings compare.py sets per run, and where the user sets them instead.
PER_RUN_SETTINGS = {
    "model_config": "--presets",
    "init_from": "--pretrain_steps (MLM runs are pre-trained here)",
    "seed": "--seeds, and --split_seed for the data split",
    "stop_after_step": "--resume after an interruption",
}
# Settings a --resume may change while no pre-training or '+MLM' run has finished: to add '+MLM' rows.
MLM_SETTINGS = {
    f"compare.{name}" for name in ("pretrain_steps", "pretrain_presets", "pretrain_learning_rate", "mlm_probability")
}
# Settings that may change between a comparison and its --resume (the folder may have moved, or the machine).
RESUME_FREE = ("resume", "overwrite_output_dir", "disable_tqdm", "output_dir", "parallel_runs")


@dataclass
class CompareArguments:
    presets: str = field(
        default="hybrid-small,lstm-baseline,transformer-baseline",
        metadata={"help": "comma-separated presets (names or JSON files); the first is the parameter reference"},
    )
    seeds: str = field(default="42,43,44", metadata={"help": "comma-separated seeds: one run per preset and seed"})
    parameter_tolerance: float = field(
        default=0.05, metadata={"help": "largest relative parameter difference to the first preset"}
    )
    allow_parameter_mismatch: bool = field(
        default=False, metadata={"help": "run presets out of tolerance anyway (warned, marked in the table)"}
    )
    pretrain_steps: int = field(default=0, metadata={"help": "MLM pre-training steps for the '+MLM' rows; 0: none"})
    pretrain_presets: str | None = field(
        default=None, metadata={"help": "comma-separated presets that get '+MLM' rows; unset: every preset"}
    )
    pretrain_learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate of MLM pre-training"})
    mlm_probability: float = field(default=0.15, metadata={"help": "share of tokens masked in pre-training"})
    svm_baseline: bool = field(default=True, metadata={"help": "add the TF-IDF + LinearSVC reference row"})
    svm_analyzer: str = field(default="auto", metadata={"help": f"one of {SVM_ANALYZERS}; auto: char for CJK text"})
    svm_c_values: str = field(default="0.1,0.3,1,3,10", metadata={"help": "LinearSVC C values tried on validation"})
    parallel_runs: int = field(
        default=1,
        metadata={
            "help": "runs trained at once, each in its own process: several small runs share one GPU; on CPU each "
            "gets cpu_count / N threads unless OMP_NUM_THREADS is set. 1: one after another, in this process"
        },
    )


ARGUMENT_CLASSES = (
    CompareArguments,
    train_script.ModelArguments,
    train_script.DataArguments,
    train_script.TrainArguments,
)


@dataclass
class Plan:
    """The resolved comparison: which models, seeds and split."""

    presets: list[str]
    labels: dict[str, str]  # preset -> its name in the table
    seeds: list[int]
    split_seed: int
    pretrain_presets: list[str]
    c_values: tuple[float, ...]
    output_dir: Path


def parse_args(argv: list[str] | None = None) -> tuple:
    """A YAML file as first argument supplies defaults; the flags after it override them."""
    try:
        return parse_yaml_and_flags(ARGUMENT_CLASSES, argv)
    except ArgumentError as error:
        raise DataError(str(error)) from None


def refuse_per_run_settings(argv: list[str]) -> None:
    """A per-run setting named in the YAML file or the flags, even at its default value, would be silently
    replaced: say where it belongs instead."""
    given = {arg[2:].split("=")[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    if argv and argv[0].endswith((".yaml", ".yml")):
        try:
            given |= set(read_yaml(argv[0], ARGUMENT_CLASSES))
        except ArgumentError as error:
            raise DataError(str(error)) from None
    for name, where in PER_RUN_SETTINGS.items():
        if name in given:
            raise DataError(f"{name} is set per run by compare.py; use {where}")


def split_list(text: str | None, name: str, kind=str) -> list:
    """'a, b' -> ['a', 'b'] converted by `kind`; `DataError` naming the setting when a value does not convert."""
    items = [item.strip() for item in str(text or "").split(",") if item.strip()]
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise DataError(f"{name}={text!r} is not a comma-separated list of {kind.__name__} values") from None


def preset_label(preset: str) -> str:
    """A preset's name in the table: the name itself, or a JSON file's stem."""
    return Path(preset).stem if preset.endswith(".json") else preset


def check_settings(compare_args: CompareArguments, model_args, data_args, train_args) -> Plan:
    """Every check that needs no data; touches nothing."""
    defaults = {
        name: field_.default
        for cls in ARGUMENT_CLASSES[1:]
        for name, field_ in cls.__dataclass_fields__.items()
        if name in PER_RUN_SETTINGS
    }
    for args in (model_args, train_args):
        for name, where in PER_RUN_SETTINGS.items():
            if hasattr(args, name) and getattr(args, name) != defaults[name]:
                raise DataError(f"{name} is set per run by compare.py; use {where}")
    presets = split_list(compare_args.presets, "presets")
    seeds = split_list(compare_args.seeds, "seeds", int)
    if not presets or not seeds:
        raise DataError("name at least one preset (--presets) and one seed (--seeds)")
    for name, values in (("presets", presets), ("seeds", seeds)):
        if len(set(values)) != len(values):
            raise DataError(f"{name} has duplicates: {values}")
    labels = {preset: preset_label(preset) for preset in presets}
    if len(set(labels.values())) != len(labels):
        raise DataError(f"presets {presets} share a name: the table could not tell them apart")
    pretrain_presets = split_list(compare_args.pretrain_presets, "pretrain_presets") or presets
    unknown = [preset for preset in pretrain_presets if preset not in presets]
    if unknown:
        raise DataError(f"pretrain_presets {unknown} are not among the presets {presets}")
    if compare_args.pretrain_steps < 0:
        raise DataError(f"pretrain_steps={compare_args.pretrain_steps} is negative")
    if compare_args.parallel_runs < 1:
        raise DataError(f"parallel_runs={compare_args.parallel_runs} must be at least 1")
    if not 0 <= compare_args.parameter_tolerance < 1:
        raise DataError(f"parameter_tolerance={compare_args.parameter_tolerance} must lie in [0, 1)")
    if compare_args.svm_analyzer not in SVM_ANALYZERS:
        raise DataError(f"svm_analyzer={compare_args.svm_analyzer!r} is not one of {SVM_ANALYZERS}")
    c_values = tuple(split_list(compare_args.svm_c_values, "svm_c_values", float))
    if compare_args.svm_baseline and (not c_values or min(c_values) <= 0):
        raise DataError(f"svm_c_values={compare_args.svm_c_values!r} must name C values above 0")
    if train_args.output_dir is None:
        raise DataError("output_dir is not set (--output_dir or a key in the YAML file)")
    output_dir = Path(train_args.output_dir)
    for preset in presets:  # train.py's own checks (preset, choices, budget) on one run's settings
        run_args = per_run_arguments(model_args, data_args, train_args, preset, seeds[0], None, output_dir / "check")
        train_script.check_arguments(*run_args)
    pretrain = pretrain_presets if compare_args.pretrain_steps > 0 else []
    return Plan(presets, labels, seeds, split_seed_for(seeds, data_args.split_seed), pretrain, c_values, output_dir)


def split_seed_for(seeds: list[int], split_seed: int | None) -> int:
    """The seed that cuts the validation split: --split_seed, or by default the first seed."""
    return seeds[0] if split_seed is None else split_seed


def resolved_settings(compare_args, model_args, data_args, train_args) -> dict:
    return {
        "compare": dataclasses.asdict(compare_args),
        "model": dataclasses.asdict(model_args),
        "data": dataclasses.asdict(data_args),
        "training": dataclasses.asdict(train_args),
    }


def check_output_dir(plan: Plan, train_args, settings: dict) -> None:
    """A fresh or empty folder; with --overwrite_output_dir any folder; with --resume one holding this very
    comparison (the same settings, but for RESUME_FREE; seeds may change on the same split, and the '+MLM'
    settings until their first work has finished)."""
    output_dir = plan.output_dir
    if output_dir.is_file():
        raise DataError(f"output_dir {str(output_dir)!r} is a file")
    if train_args.resume and train_args.overwrite_output_dir:
        raise DataError("--resume keeps the runs in output_dir and --overwrite_output_dir replaces them: pick one")
    if train_args.resume:
        saved_path = output_dir / "compare_args.json"
        if not saved_path.is_file():
            raise DataError(f"--resume: {str(output_dir)!r} holds no comparison (no compare_args.json)")
        saved = json.loads(saved_path.read_text())
        changed = {
            f"{group}.{name}"
            for group, values in settings.items()
            for name, value in values.items()
            if name not in RESUME_FREE and saved.get(group, {}).get(name) != json.loads(json.dumps(value))
        }
        updated = []
        saved_split_seed = split_seed_for(
            split_list(saved["compare"]["seeds"], "seeds", int), saved["data"].get("split_seed")
        )
        if "compare.seeds" in changed and saved_split_seed == plan.split_seed:
            # Seeds added (or a subset reported) on the same split: the finished runs stay valid.
            changed.discard("compare.seeds")
            updated.append(f"seeds {plan.seeds}")
        if changed and changed <= MLM_SETTINGS and not mlm_work_finished(output_dir):
            # '+MLM' rows are added (or their settings changed before any of their work finished).
            changed = set()
            updated.append(f"'{MLM_SUFFIX}' rows with the new settings")
        if changed:
            raise DataError(
                f"--resume: the settings differ from the comparison in {str(output_dir)!r}: {sorted(changed)}"
            )
        if updated:  # the saved settings now say what the comparison holds
            logger.info(f"--resume: {' and '.join(updated)} in {str(output_dir)!r}")
            write_json(saved_path, settings)
        return
    if output_dir.is_dir() and any(output_dir.iterdir()) and not train_args.overwrite_output_dir:
        held = sorted(path.name for path in output_dir.iterdir())[:6]
        raise DataError(
            f"output_dir {str(output_dir)!r} already holds files ({', '.join(held)}); pass --overwrite_output_dir "
            "to replace the comparison, --resume to finish it, or choose another folder"
        )


def mlm_work_finished(output_dir: Path) -> bool:
    """Whether a pre-training or a '+MLM' run of this comparison has finished (its settings are then fixed)."""
    pretrained = any(
        path.parent.joinpath("mlm_metrics.json").is_file() for path in output_dir.glob(f"pretrain/*/*/{RUN_FILE}")
    )
    return pretrained or any(output_dir.glob(f"runs/*{MLM_SUFFIX}/*/{RUN_FILE}"))


def shared_tokenizer(model_args, data, plan: Plan, resume: bool):
    """The one tokenizer every run uses: the comparison's own when resuming, a named one, or one trained here."""
    saved = plan.output_dir / "tokenizer"
    if resume and (saved / "tokenizer.json").is_file():
        return load_tokenizer(str(saved), model_args.max_length)
    if model_args.tokenizer_name is not None:
        return load_tokenizer(model_args.tokenizer_name, model_args.max_length)
    return train_tokenizer(
        training_texts(data.splits["train"]),
        algorithm=model_args.tokenizer_algorithm,
        vocab_size=model_args.tokenizer_vocab_size,
        min_frequency=model_args.tokenizer_min_frequency,
        lowercase=model_args.lowercase,
        model_max_length=model_args.max_length,
    )


def count_parameters(config) -> int:
    """Parameters of the sequence classifier `config` builds, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = RecurrentTransformerForSequenceClassification(config)
    return sum(param.numel() for param in model.parameters())


def check_parameters(compare_args, model_args, data, tokenizer, plan: Plan) -> tuple[dict[str, int], list[str]]:
    """Parameter count of each preset with this vocabulary and label set, and the presets out of tolerance of the
    first one's. Out of tolerance is refused unless --allow_parameter_mismatch; a pre-trained preset must be
    bidirectional."""
    counts = {}
    for preset in plan.presets:
        config = train_script.build_config(dataclasses.replace(model_args, model_config=preset), tokenizer, data)
        if preset in plan.pretrain_presets and not config.bidirectional:
            raise DataError(
                f"preset {preset!r} is causal: masked-LM pre-training (--pretrain_steps) needs a bidirectional "
                "preset; leave it out of --pretrain_presets"
            )
        counts[preset] = count_parameters(config)
    reference = plan.presets[0]
    outside = [
        preset
        for preset in plan.presets[1:]
        if abs(counts[preset] - counts[reference]) > compare_args.parameter_tolerance * counts[reference]
    ]
    if outside:
        details = ", ".join(
            f"{plan.labels[preset]} {counts[preset]:,} ({100 * (counts[preset] / counts[reference] - 1):+.1f} %)"
            for preset in outside
        )
        message = (
            f"parameter counts differ by more than {100 * compare_args.parameter_tolerance:g} % from "
            f"{plan.labels[reference]} ({counts[reference]:,}): {details}"
        )
        if not compare_args.allow_parameter_mismatch:
            raise DataError(f"{message}; match the presets, or pass --allow_parameter_mismatch to run anyway")
        logger.warning(f"WARNING: {message}; running anyway (--allow_parameter_mismatch), marked (!) in the table")
    for preset in plan.presets:
        logger.info(f"{plan.labels[preset]}: {counts[preset]:,} parameters")
    return counts, outside


def per_run_arguments(model_args, data_args, train_args, preset: str, seed: int, init_from, output_dir: Path):
    """train.py's arguments for one run: the shared settings with this run's preset, seed and folder."""
    return (
        dataclasses.replace(model_args, model_config=preset, init_from=None if init_from is None else str(init_from)),
        data_args,
        dataclasses.replace(train_args, output_dir=str(output_dir), seed=seed, resume=False, overwrite_output_dir=True),
    )


def reset_accelerate() -> None:
    """Forget Accelerate's process-wide state, so that the next in-process run builds a fresh `Accelerator`."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def write_json(path: Path, values: dict) -> None:
    path.write_text(json.dumps(values, indent=2, ensure_ascii=False, default=str) + "\n")


def finished(folder: Path, result_file: str) -> bool:
    return (folder / result_file).is_file() and (folder / RUN_FILE).is_file()


def timed(function, *args) -> float:
    """Run `function(*args)` in-process, then reset Accelerate; returns the wall seconds it took."""
    started = time.perf_counter()
    try:
        function(*args)
    finally:
        reset_accelerate()
    return time.perf_counter() - started


def pretrain(compare_args, model_args, data_args, train_args, preset: str, seed: int, folder: Path) -> None:
    """scripts/pretrain_mlm.py for one preset and seed, on the same split and tokenizer as the fine-tuning runs."""
    mlm_model_args = dataclasses.replace(model_args, model_config=preset, init_from=None)
    training_args = TrainingArguments(
        output_dir=str(folder),
        max_steps=compare_args.pretrain_steps,
        learning_rate=compare_args.pretrain_learning_rate,
        warmup_steps=math.ceil(train_args.warmup_ratio * compare_args.pretrain_steps),
        weight_decay=train_args.weight_decay,
        per_device_train_batch_size=train_args.per_device_train_batch_size,
        per_device_eval_batch_size=train_args.per_device_eval_batch_size,
        logging_steps=max(1, compare_args.pretrain_steps // 20),
        save_strategy="no",
        report_to="none",
        seed=seed,
        use_cpu=train_args.use_cpu,
        bf16=train_args.bf16,
        disable_tqdm=train_args.disable_tqdm,
    )
    mlm_args = pretrain_script.MLMArguments(mlm_probability=compare_args.mlm_probability, overwrite_output_dir=True)
    pretrain_script.run_with(mlm_model_args, data_args, mlm_args, training_args)


def row_label(plan: Plan, preset: str, with_mlm: bool) -> str:
    """A preset's name in the table, with the '+MLM' suffix for its pre-trained row."""
    return plan.labels[preset] + (MLM_SUFFIX if with_mlm else "")


def run_job(compare_args, model_args, data_args, train_args, plan: Plan, preset: str, seed: int, with_mlm: bool) -> str:
    """One row's run for one seed (MLM pre-training first for a '+MLM' row, unless done before); returns the
    line that reports its score."""
    label = row_label(plan, preset, with_mlm)
    run_dir = plan.output_dir / "runs" / label / f"seed-{seed}"
    init_from = None
    if with_mlm:
        init_from = plan.output_dir / "pretrain" / plan.labels[preset] / f"seed-{seed}"
        if not finished(init_from, "mlm_metrics.json"):
            logger.info(f"{label} seed {seed}: MLM pre-training for {compare_args.pretrain_steps} steps ...")
            seconds = timed(pretrain, compare_args, model_args, data_args, train_args, preset, seed, init_from)
            write_json(init_from / RUN_FILE, {"wall_seconds": seconds})
    run_args = per_run_arguments(model_args, data_args, train_args, preset, seed, init_from, run_dir)
    seconds = timed(train_script.run_with, *run_args)
    write_json(run_dir / RUN_FILE, {"wall_seconds": seconds})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scores = metrics[metrics["split"]]
    return f"{metrics['split']} accuracy {scores['accuracy']:.4f}, macro F1 {scores['f1_macro']:.4f} ({seconds:.0f} s)"


def job_payload(compare_args, model_args, data_args, train_args, plan: Plan, job: tuple) -> dict:
    """A job as plain data, for a worker process (which rebuilds the arguments with `run_payload`)."""
    return {
        "arguments": [dataclasses.asdict(args) for args in (compare_args, model_args, data_args, train_args)],
        "plan": dataclasses.asdict(plan) | {"output_dir": str(plan.output_dir)},
        "job": list(job),
    }


def run_payload(payload: dict) -> str:
    """`run_job` in a worker process of --parallel_runs, from `job_payload`'s plain data."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    compare_args, model_args, data_args, train_args = (
        cls(**values) for cls, values in zip(ARGUMENT_CLASSES, payload["arguments"], strict=True)
    )
    plan = Plan(**(payload["plan"] | {"output_dir": Path(payload["plan"]["output_dir"])}))
    if "OMP_NUM_THREADS" not in os.environ:  # the machine's cores shared among the runs at once
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // compare_args.parallel_runs))
    return run_job(compare_args, model_args, data_args, train_args, plan, *payload["job"])


def run_models(compare_args, model_args, data_args, train_args, plan: Plan) -> None:
    """Every (model, seed) run, in seed-major order so that a stopped comparison has whole seeds; a run already
    finished (--resume) is kept. With --parallel_runs N, N runs train at once in worker processes (spawned: CUDA
    cannot be forked), taken in the same order."""
    jobs = [(preset, seed, False) for seed in plan.seeds for preset in plan.presets]
    jobs += [(preset, seed, True) for seed in plan.seeds for preset in plan.pretrain_presets]
    jobs.sort(key=lambda job: plan.seeds.index(job[1]))
    prefixes = {
        job: f"[{index}/{len(jobs)}] {row_label(plan, job[0], job[2])} seed {job[1]}"
        for index, job in enumerate(jobs, start=1)
    }
    todo = []
    for job in jobs:
        preset, seed, with_mlm = job
        if finished(plan.output_dir / "runs" / row_label(plan, preset, with_mlm) / f"seed-{seed}", "metrics.json"):
            logger.info(f"{prefixes[job]}: finished before, kept")
        else:
            todo.append(job)
    if compare_args.parallel_runs == 1 or len(todo) < 2:
        for job in todo:
            logger.info(f"{prefixes[job]}: training ...")
            logger.info(f"{prefixes[job]}: {run_job(compare_args, model_args, data_args, train_args, plan, *job)}")
        return
    workers = min(compare_args.parallel_runs, len(todo))
    logger.info(f"{len(todo)} runs, {workers} at a time in worker processes")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as executor:
        futures = {
            executor.submit(
                compare_worker, __file__, job_payload(compare_args, model_args, data_args, train_args, plan, job)
            ): job
            for job in todo
        }
        try:
            for future in concurrent.futures.as_completed(futures):
                logger.info(f"{prefixes[futures[future]]}: {future.result()}")
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)  # the runs in flight finish; none starts
            raise


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


def read_json(path: Path):
    return json.loads(path.read_text())


def neural_run(run_dir: Path, seed: int, pretrain_dir: Path | None) -> dict:
    """One run's numbers, read back from the files it wrote. For a '+MLM' run, the training and wall seconds add
    the pre-training's, and the seconds axis of its curve starts where pre-training ended."""
    run_info = read_json(run_dir / "run_info.json")
    pretrain_train, pretrain_wall = 0.0, 0.0
    if pretrain_dir is not None:
        pretrain_train = read_json(pretrain_dir / "mlm_metrics.json")["train_seconds"]
        pretrain_wall = read_json(pretrain_dir / RUN_FILE)["wall_seconds"]
    history = read_json(run_dir / train_script.HISTORY_FILE)
    for entry in history:
        entry["total_train_seconds"] = entry["train_seconds"] + pretrain_train
    return {
        "seed": seed,
        "folder": str(run_dir),
        "metrics": read_json(run_dir / "metrics.json"),
        "history": history,
        "num_parameters": run_info["num_parameters"],
        "train_tokens_per_second": run_info["train_tokens_per_second"],
        "train_seconds": run_info["train_seconds"] + pretrain_train,
        "wall_seconds": read_json(run_dir / RUN_FILE)["wall_seconds"] + pretrain_wall,
        "global_step": run_info["global_step"],
        "stopped_by": run_info["stopped_by"],
    }


def collect_rows(compare_args, plan: Plan, counts: dict[str, int], outside: list[str]) -> list[Row]:
    """The table's rows, each preset followed by its '+MLM' row, the classical baseline last."""
    rows = []
    for preset in plan.presets:
        variants = [False] + ([True] if preset in plan.pretrain_presets else [])
        for with_mlm in variants:
            label = row_label(plan, preset, with_mlm)
            row = Row(label, counts[preset], parameter_warning=preset in outside)
            for seed in plan.seeds:
                run_dir = plan.output_dir / "runs" / label / f"seed-{seed}"
                pretrain_dir = plan.output_dir / "pretrain" / plan.labels[preset] / f"seed-{seed}" if with_mlm else None
                row.runs.append(neural_run(run_dir, seed, pretrain_dir))
            rows.append(row)
    if compare_args.svm_baseline:
        folder = plan.output_dir / "svm"
        metrics, info = read_json(folder / "metrics.json"), read_json(folder / RUN_FILE)
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
        rows.append(Row(SVM_LABEL, info["num_parameters"], runs=[run]))
    return rows


def report(rows: list[Row], plan: Plan, data, train_args, compare_args, counts, outside) -> str:
    """results.md, results.json and the plots; returns the markdown."""
    split = rows[0].runs[0]["metrics"]["split"]
    table = markdown_table(rows, split)
    reference = plan.labels[plan.presets[0]]
    sizes = ", ".join(f"{name} {len(part):,}" for name, part in data.splits.items())
    budget = (
        f"max_steps {train_args.max_steps}" if train_args.max_steps > 0 else f"{train_args.num_train_epochs} epochs"
    )
    if train_args.max_train_seconds > 0:
        budget += f", at most {train_args.max_train_seconds:g} s of training per run"
    notes = [
        f"Scores in % on the {split} split ({sizes} rows; validation cut from train with split seed "
        f"{plan.split_seed}), mean ± sample std over seeds {plan.seeds}; checkpoints chosen on validation by "
        f"{train_args.metric_for_best_model}.",
        f"Budget per run: {budget}, batch {train_args.per_device_train_batch_size}, learning rate "
        f"{train_args.learning_rate:g}. Parameters as sequence classifiers with this tokenizer "
        f"({counts[plan.presets[0]]:,} for {reference}, the reference; tolerance "
        f"{100 * compare_args.parameter_tolerance:g} %).",
        "train tokens/s: real (non-padding) training tokens per second of training steps; train s: seconds of "
        "training steps (validation excluded); wall s: the whole run (data, tokenization, validation, test, saving).",
    ]
    if plan.pretrain_presets:
        notes.append(
            f"{MLM_SUFFIX}: pre-trained as a masked LM for {compare_args.pretrain_steps} steps on the training text, "
            "then fine-tuned with the same budget; its train s and wall s include the pre-training."
        )
    if compare_args.svm_baseline:
        notes.append(
            f"{SVM_LABEL}: scikit-learn, one deterministic fit, C chosen on validation; its parameters are the "
            "linear model's weights."
        )
    if split == "validation":
        notes.append("No test file: the scores are on the validation split that also chose the checkpoints.")
    if outside:
        notes.append(
            f"(!) WARNING: parameters differ from {reference} by more than {100 * compare_args.parameter_tolerance:g}"
            " % (--allow_parameter_mismatch)."
        )
    markdown = "\n".join(
        [
            "# Comparison",
            "",
            table,
            *[f"- {note}" for note in notes],
            "",
            *[f"![{name}]({name})" for name in PLOTS.values()],
            "",
        ]
    )
    (plan.output_dir / "results.md").write_text(markdown)
    write_json(
        plan.output_dir / "results.json",
        {
            "split": split,
            "headline": list(HEADLINE),
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
        },
    )
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


def prepare_output_dir(plan: Plan, settings: dict, tokenizer, overwrite: bool, resume: bool) -> None:
    """Clear this script's earlier outputs (--overwrite_output_dir), then save the settings and the tokenizer."""
    output_dir = plan.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in OUTPUT_NAMES:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    if not resume:
        write_json(output_dir / "compare_args.json", settings)
        tokenizer.save_pretrained(output_dir / "tokenizer")


def run_with(compare_args: CompareArguments, model_args, data_args, train_args) -> dict:
    """The whole comparison from parsed arguments; returns what results.json holds."""
    plan = check_settings(compare_args, model_args, data_args, train_args)
    settings = json.loads(json.dumps(resolved_settings(compare_args, model_args, data_args, train_args), default=str))
    check_output_dir(plan, train_args, settings)
    data = train_script.build_datasets(data_args, plan.split_seed)
    tokenizer = shared_tokenizer(model_args, data, plan, train_args.resume)
    counts, outside = check_parameters(compare_args, model_args, data, tokenizer, plan)
    # Every check has passed; only now is the output folder written.
    prepare_output_dir(plan, settings, tokenizer, train_args.overwrite_output_dir, train_args.resume)
    shared = dataclasses.replace(model_args, tokenizer_name=str(plan.output_dir / "tokenizer"))
    split_data_args = dataclasses.replace(data_args, split_seed=plan.split_seed)
    if compare_args.svm_baseline:
        run_svm(compare_args, train_args, data, plan)
    run_models(compare_args, shared, split_data_args, train_args, plan)
    rows = collect_rows(compare_args, plan, counts, outside)
    markdown = report(rows, plan, data, train_args, compare_args, counts, outside)
    print(markdown)
    logger.info(f"wrote {plan.output_dir / 'results.md'}, results.json and {len(PLOTS)} plots")
    return read_json(plan.output_dir / "results.json")


def run(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    refuse_per_run_settings(argv)
    return run_with(*parse_args(argv))


def main(argv: list[str] | None = None) -> dict:
    """Compare as the command line says; returns the results. Bad input: one line on stderr, exit status 2."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        return run(argv)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
