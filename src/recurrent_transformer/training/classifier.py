"""`recurrent-transformer train`: a text classifier from labelled files (or a Hub data set), with its tokenizer,
trained by the Accelerate loop, chosen on validation, scored once on test.

    recurrent-transformer train configs/train/r8.yaml
    recurrent-transformer train configs/train/r8.yaml --model_config tiny --max_steps 300 --output_dir runs/r8-tiny
    recurrent-transformer train configs/train/r8.yaml --resume              # continue from the last checkpoint
    accelerate launch --config_file configs/accelerate/multi_cpu.yaml -m recurrent_transformer train configs/train/r8.yaml
    tensorboard --logdir runs/r8/logs

The YAML file (first argument) supplies defaults, flags override it; every key is a field of the dataclasses in
`training.arguments`. `--per_device_train_batch_size` is per process: the global batch is that times the number of
processes times `--gradient_accumulation_steps`. The output folder (see `training.checkpoints`) receives the model
(loadable with `AutoModelForSequenceClassification`), the tokenizer, metrics.json (test scores, or validation when
there is no test data), confusion_matrix.png, train_args.json, run_info.json (training time, tokens/s, the padding
share of the training batches, data fingerprints), eval_history.json, loss_history.json, checkpoints/ and logs/.
`--init_from` starts the body from a saved folder (pretrain-mlm writes one) with a fresh head; `--max_train_seconds`
stops on a time budget (with `--lr_schedule_by seconds` the learning rate decays over it); `--split_seed` keeps the data split fixed while `--seed` varies; `--group_by_length` trains
on batches of texts of similar length (less padding on long documents). Every check runs before anything is
written.
"""

import json
import time
from dataclasses import asdict
from pathlib import Path

import accelerate
import datasets
import torch
import transformers
from accelerate.logging import get_logger
from safetensors.torch import load_file

from .. import __version__
from ..cli import parse_arguments, run_command
from ..conversion import RECORD_FILE as CONVERSION_FILE
from ..data import split_fingerprint
from ..files import check_output_dir, clear_outputs, write_json
from ..machine import cpu_description
from ..metrics import classification_metrics, save_confusion_matrix
from .accelerator import build_accelerator, check_launch, check_mixed_precision
from .arguments import ARGUMENT_CLASSES, DataArguments, ModelArguments, TrainArguments, check_choices, check_ranges
from .build import build_config, build_datasets, build_tokenizer, check_init_from, check_model_settings
from .checkpoints import ARGS_FILE, OUTPUT_NAMES, check_resume, cpu_share
from .loop import TrainingRun, init_trackers, predict, prepare_run, restore, run_loop, save_model

logger = get_logger(__name__)  # logs on the main process only


def resolved_arguments(model_args, data_args, train_args) -> dict:
    """The arguments as train_args.json records them (and a resume compares them)."""
    values = {"model": asdict(model_args), "data": asdict(data_args), "training": asdict(train_args)}
    return json.loads(json.dumps(values, default=str))


def check_settings(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments):
    """Every check that needs no data, in one place: ranges and choices, the model preset against max_length, the
    launch and precision, the output folder (and, with --resume, the saved run's settings). Touches nothing.
    Returns the checkpoint to resume from (or None) and the settings a resume changes."""
    check_ranges(model_args, data_args, train_args)
    check_choices(model_args, train_args)
    check_model_settings(model_args)
    check_launch(train_args.use_cpu)
    check_mixed_precision(train_args.bf16, train_args.use_cpu, train_args.allow_slow_bf16)
    output_dir = check_output_dir(
        train_args.output_dir, overwrite=train_args.overwrite_output_dir, resume=train_args.resume
    )
    if not train_args.resume:
        return None, []
    resolved = resolved_arguments(model_args, data_args, train_args)
    return check_resume(output_dir, resolved, train_args.allow_changed_settings)


def write_run_start(output_dir: Path, resolved: dict, tokenizer, changes: list[str], resumed: bool) -> None:
    """The run's first files: train_args.json and the tokenizer (a fresh run, after clearing an earlier run's
    outputs), or, for a resume that changed settings, train_args.json with the changes recorded."""
    if resumed:
        if changes:
            write_json(output_dir / ARGS_FILE, resolved | {"changed_on_resume": changes})
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(output_dir, OUTPUT_NAMES)
    write_json(output_dir / ARGS_FILE, resolved)
    tokenizer.save_pretrained(output_dir)


def run_info(run: TrainingRun, model_args, data, checkpoint, stopped_by: str, train_tokens: int, train_positions: int):
    """run_info.json: how the run went, on what, where, and with which versions."""
    args, num_processes, seconds = run.train_args, run.accelerator.num_processes, run.clock.seconds
    return {
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "resumed_from": str(checkpoint) if checkpoint else None,
        "num_processes": num_processes,
        "device": str(run.accelerator.device),
        "mixed_precision": run.accelerator.mixed_precision,
        "global_batch_size": args.per_device_train_batch_size * num_processes * args.gradient_accumulation_steps,
        "max_steps": run.max_steps,
        "global_step": run.state.global_step,
        "best_step": run.state.best_step,
        "stopped_by": stopped_by,
        "train_seconds": seconds,
        "train_tokens": train_tokens,
        "train_tokens_per_second": train_tokens / seconds if seconds > 0 else None,
        "cpu": cpu_description(),  # tokens/s and a time budget's work are this machine's
        # On a CPU: the share of its threads' time the run got while training (1.0 alone on free cores; two
        # single-thread runs on one core get about 0.5 each, and so about half the work from a time budget).
        "torch_threads": torch.get_num_threads(),
        "train_cpu_seconds": run.clock.cpu_seconds,
        "train_cpu_share": cpu_share(run.clock.cpu_seconds, seconds, run.accelerator.device.type),
        # Padding in the training batches (dynamic padding pads each batch to its longest text; --group_by_length
        # keeps it small on texts of very different lengths).
        "train_padding_share": 1 - train_tokens / train_positions if train_positions else None,
        "max_length": model_args.max_length,
        "group_by_length": args.group_by_length,
        "init_from": model_args.init_from,
        "num_parameters": sum(param.numel() for param in run.accelerator.unwrap_model(run.model).parameters()),
        "label_names": data.label_names,
        "split_sizes": {name: len(split) for name, split in data.splits.items()},
        # Hashes of each split's texts and labels: a comparison or a card can tell whether it is the same data.
        "data_fingerprints": {name: split_fingerprint(split) for name, split in data.splits.items()},
        "versions": {
            "recurrent_transformer": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        },
    }


def finish(run: TrainingRun, model_args, data, checkpoint, stopped_by: str) -> dict:
    """The best validated weights saved as the folder's model, the final split scored once, the records written."""
    train_tokens = run.accelerator.reduce(run.tokens_seen, reduction="sum").item()
    train_positions = run.accelerator.reduce(run.positions_seen, reduction="sum").item()
    run.accelerator.wait_for_everyone()
    args, state = run.train_args, run.state
    if args.load_best_model_at_end and state.best_step not in (None, state.global_step):
        run.accelerator.unwrap_model(run.model).load_state_dict(load_file(run.best_dir / "model.safetensors"))
        logger.info(f"loaded the best weights, from step {state.best_step}")
    save_model(run, run.output_dir)
    final_split = "test" if "test" in run.loaders else "validation"
    predictions, references, _ = predict(run.model, run.loaders[final_split], run.accelerator)
    scores = classification_metrics(predictions, references, data.label_names, backend=args.metrics_backend)
    results = {
        "split": final_split,
        final_split: scores,
        "best_validation": {args.metric_for_best_model: state.best_metric, "step": state.best_step},
        "global_step": state.global_step,
    }
    if run.is_main:
        write_json(run.output_dir / "metrics.json", results)
        title = f"{final_split}: accuracy {scores['accuracy']:.3f}, macro F1 {scores['f1_macro']:.3f}"
        save_confusion_matrix(
            scores["confusion_matrix"], data.label_names, run.output_dir / "confusion_matrix.png", title=title
        )
        info = run_info(run, model_args, data, checkpoint, stopped_by, train_tokens, train_positions)
        write_json(run.output_dir / "run_info.json", info)
        logger.info(f"{final_split}: accuracy {scores['accuracy']:.4f}, macro F1 {scores['f1_macro']:.4f}")
    return results


def train_classifier(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict:
    """The whole run from parsed arguments; returns metrics.json's content ({'stopped_at_step': N} for a run ended
    by stop_after_step). The comparison calls this once per model and seed."""
    checkpoint, changes = check_settings(model_args, data_args, train_args)
    output_dir = Path(train_args.output_dir)
    accelerator = build_accelerator(train_args)
    if not accelerator.is_local_main_process:
        datasets.disable_progress_bars()
    resolved = resolved_arguments(model_args, data_args, train_args)
    logger.info(f"arguments: {json.dumps(resolved)}")
    data = build_datasets(data_args, train_args.seed if data_args.split_seed is None else data_args.split_seed)
    # A resumed run reuses the tokenizer saved at its start (a fresh one could differ: see build_tokenizer).
    tokenizer = build_tokenizer(
        model_args, data.splits["train"], saved_dir=output_dir if checkpoint else None, accelerator=accelerator
    )
    config = build_config(model_args, tokenizer, data)
    check_init_from(model_args, config)
    # Every check has passed on every process; only now is the output folder written.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_run_start(output_dir, resolved, tokenizer, changes, resumed=checkpoint is not None)
    accelerator.wait_for_everyone()
    run = prepare_run(model_args, train_args, accelerator, data, tokenizer, config, output_dir)
    if run.conversion is not None and accelerator.is_main_process:
        write_json(output_dir / CONVERSION_FILE, run.conversion)  # the card says what is new, and its base model
    if checkpoint is not None:
        restore(run, checkpoint)
    init_trackers(run, (model_args, data_args, train_args))
    stopped_by = run_loop(run)
    if stopped_by == "stop_after_step":
        accelerator.end_training()
        return {"stopped_at_step": run.state.global_step}
    results = finish(run, model_args, data, checkpoint, stopped_by)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def run(argv: list[str]) -> dict:
    return train_classifier(*parse_arguments(ARGUMENT_CLASSES, argv))


def main(argv: list[str] | None = None) -> dict:
    """Train as the command line says; returns the final metrics. Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
