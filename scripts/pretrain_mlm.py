"""Masked-LM pre-training of a bidirectional preset on a task's own training text, for fine-tuning with train.py.

Run from the repository root:

    python scripts/pretrain_mlm.py --train_file ../shared/data/trec/train.csv --model_config hybrid-small \\
        --output_dir runs/trec-mlm --max_steps 2000 --learning_rate 5e-4 --per_device_train_batch_size 32 \\
        --warmup_steps 100 --logging_steps 50 --max_length 48 --tokenizer_min_frequency 1
    accelerate launch --config_file configs/accelerate/multi_cpu.yaml scripts/pretrain_mlm.py ... (same flags)
    python scripts/train.py configs/train/trec.yaml --init_from runs/trec-mlm --output_dir runs/trec+mlm

The data flags are train.py's (`--train_file`, `--validation_split`, `--split_seed`, `--max_train_samples`, ...) and
cut the same validation split from the same file, so the MLM reads exactly the text the classifier trains on: the
validation text only measures the MLM loss, and the test file is never read. The training flags are
`transformers.TrainingArguments` (the `Trainer` runs the loop, with `DataCollatorForLanguageModeling`); its defaults
suit fine-tuning, so pass a from-scratch learning rate and a step budget. Without `--tokenizer_name` a tokenizer is
trained on the training text; with several processes pass one, since tokenizer training is not reproducible
(huggingface/tokenizers#1794).

The output folder holds `RecurrentTransformerForMaskedLM` (model.safetensors, config.json, code files), the tokenizer,
`mlm_metrics.json` (the validation MLM loss before and after, under one fixed masking, and the logged training
losses) and `train_args.json`. `RecurrentTransformerForSequenceClassification.from_pretrained(folder, num_labels=...)`
takes its body and initialises a new head; train.py's `--init_from folder` does exactly that. Bad input prints one
`error: ...` line and exits with status 2 before anything is written.
"""

import importlib.util
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed

from recurrent_transformer import RecurrentTransformerForMaskedLM
from recurrent_transformer.cli import ArgumentError, parse_yaml_and_flags, unshadow_libraries
from recurrent_transformer.data import DataError, load_tokenizer, tokenize_splits, train_tokenizer, training_texts

unshadow_libraries(__file__)  # scripts/evaluate.py must not stand in for the evaluate library

logger = logging.getLogger("pretrain_mlm")

# Everything this script writes besides the Trainer's own files; --overwrite_output_dir removes these first.
OUTPUT_NAMES = ("model.safetensors", "config.json", "mlm_metrics.json", "train_args.json")
MASKING_SEED = 1234  # one fixed masking of the validation text, so losses before and after compare like for like


def load_train_script():
    """scripts/train.py as a module: its argument classes and data and config builders are reused unchanged, so
    the MLM sees the same split, subsets, tokenizer settings and preset overrides as the fine-tuning run."""
    spec = importlib.util.spec_from_file_location("train_script_for_mlm", Path(__file__).with_name("train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = load_train_script()


@dataclass
class MLMArguments:
    mlm_probability: float = field(default=0.15, metadata={"help": "share of tokens masked (BERT's 15 %)"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a pre-training run in output_dir"})


ARGUMENT_CLASSES = (train_script.ModelArguments, train_script.DataArguments, MLMArguments, TrainingArguments)


def parse_args(argv: list[str] | None = None) -> tuple:
    """A YAML file as first argument supplies defaults; the flags after it override them."""
    try:
        return parse_yaml_and_flags(ARGUMENT_CLASSES, argv)
    except ArgumentError as error:
        raise DataError(str(error)) from None


def check_arguments(model_args, data_args, mlm_args: MLMArguments, training_args: TrainingArguments) -> None:
    """Every check that needs no data; touches nothing."""
    try:
        train_script.preset_path(model_args.model_config)
    except ValueError as error:
        raise DataError(str(error)) from error
    train_script.parse_overrides(model_args.config_overrides)
    if model_args.init_from is not None:
        raise DataError("init_from is a fine-tuning option; pre-training starts from a fresh model")
    if data_args.dataset_name is None and data_args.train_file is None:
        raise DataError("train_file is not set: the MLM reads the task's own training text")
    if not 0 < mlm_args.mlm_probability < 1:
        raise DataError(f"mlm_probability={mlm_args.mlm_probability} must lie between 0 and 1")
    if training_args.max_steps <= 0 and training_args.num_train_epochs <= 0:
        raise DataError("set max_steps or num_train_epochs above 0")
    output_dir = Path(training_args.output_dir)
    if output_dir.is_file():
        raise DataError(f"output_dir {str(output_dir)!r} is a file")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not mlm_args.overwrite_output_dir:
        held = sorted(path.name for path in output_dir.iterdir())[:6]
        raise DataError(
            f"output_dir {str(output_dir)!r} already holds another run ({', '.join(held)}); pass "
            "--overwrite_output_dir to replace it, or choose another folder"
        )


def build_tokenizer(model_args, data):
    """A named tokenizer (a comparison shares one), else one trained on the training split."""
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


def build_config(model_args, tokenizer, data):
    """train.py's config for the same preset and data (so the classifier's body has the same shapes); refuses a
    causal preset, since a masked LM reads both sides of each token."""
    config = train_script.build_config(model_args, tokenizer, data)
    if not config.bidirectional:
        raise DataError(
            f"model config {model_args.model_config!r} is causal (bidirectional=false): masked-LM pre-training "
            "needs a bidirectional preset"
        )
    return config


def masked_lm_loss(model, dataset, tokenizer, mlm_probability: float, batch_size: int) -> float:
    """Mean loss over the masked tokens of `dataset` under one fixed, seeded masking."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=MASKING_SEED)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            masked = int((batch["labels"] != -100).sum())
            if masked:
                total += model(**batch).loss.item() * masked
                count += masked
    model.train(was_training)
    return total / count if count else math.nan


def write_json(path: Path, values: dict) -> None:
    path.write_text(json.dumps(values, indent=2, ensure_ascii=False, default=str) + "\n")


def clear_outputs(output_dir: Path) -> None:
    """Remove what an earlier run of this script wrote (with --overwrite_output_dir); other files stay."""
    for name in OUTPUT_NAMES:
        path = output_dir / name
        if path.is_file():
            path.unlink()


def run_with(model_args, data_args, mlm_args: MLMArguments, training_args: TrainingArguments) -> dict:
    """The whole pre-training run from parsed arguments; returns what mlm_metrics.json holds."""
    check_arguments(model_args, data_args, mlm_args, training_args)
    split_seed = training_args.seed if data_args.split_seed is None else data_args.split_seed
    data = train_script.build_datasets(data_args, split_seed)
    tokenizer = build_tokenizer(model_args, data)
    if tokenizer.mask_token is None:
        raise DataError(f"the tokenizer {model_args.tokenizer_name!r} has no mask token: a masked LM needs one")
    config = build_config(model_args, tokenizer, data)
    splits = datasets.DatasetDict({name: data.splits[name] for name in ("train", "validation")})
    tokenized = tokenize_splits(splits, tokenizer, model_args.max_length).remove_columns("labels")
    # Every check has passed; only now is the output folder written.
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(output_dir)
    resolved = {
        "model": asdict(model_args),
        "data": asdict(data_args),
        "mlm": asdict(mlm_args),
        "training": training_args.to_dict(),
    }
    write_json(output_dir / "train_args.json", resolved)
    logger.info(f"arguments: {json.dumps(resolved, default=str)}")

    set_seed(training_args.seed)  # before building the model: its initial weights follow the seed
    model = RecurrentTransformerForMaskedLM(config)
    eval_batch = training_args.per_device_eval_batch_size
    initial_loss = masked_lm_loss(model, tokenized["validation"], tokenizer, mlm_args.mlm_probability, eval_batch)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_args.mlm_probability),
    )
    started = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - started
    final_loss = masked_lm_loss(model, tokenized["validation"], tokenizer, mlm_args.mlm_probability, eval_batch)
    if trainer.is_world_process_zero():  # not trainer.save_model: it also pickles the TrainingArguments
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    results = {
        "initial_eval_loss": initial_loss,
        "final_eval_loss": final_loss,
        "train_loss": output.training_loss,
        "train_loss_history": [
            {"step": entry["step"], "loss": entry["loss"]} for entry in trainer.state.log_history if "loss" in entry
        ],
        "global_step": trainer.state.global_step,
        "train_seconds": train_seconds,
        "num_parameters": sum(param.numel() for param in model.parameters()),
        "split_sizes": {name: len(split) for name, split in splits.items()},
    }
    if trainer.is_world_process_zero():
        write_json(output_dir / "mlm_metrics.json", results)
    logger.info(f"validation MLM loss {initial_loss:.4f} -> {final_loss:.4f} after {trainer.state.global_step} steps")
    return results


def run(argv: list[str] | None = None) -> dict:
    return run_with(*parse_args(argv))


def main(argv: list[str] | None = None) -> dict:
    """Pre-train as the command line says; returns the MLM metrics. Bad input: one line on stderr, exit status 2."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        return run(argv)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
