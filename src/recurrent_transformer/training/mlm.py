"""`recurrent-transformer pretrain-mlm`: masked-LM pre-training of a bidirectional preset on a task's own training
text, for fine-tuning with `recurrent-transformer train --init_from`.

    recurrent-transformer pretrain-mlm --train_file ../shared/data/trec/train.csv --model_config hybrid-small \\
        --output_dir runs/trec-mlm --max_steps 2000 --learning_rate 5e-4 --warmup_steps 100 --max_length 48
    recurrent-transformer train configs/train/trec.yaml --init_from runs/trec-mlm --output_dir runs/trec+mlm

The data flags are train's (`--train_file`, `--validation_split`, `--split_seed`, ...) and cut the same validation
split from the same file, so the MLM reads exactly the text the classifier trains on: the validation text only
measures the MLM loss, and the test file is never read. The training flags are `transformers.TrainingArguments`
(the `Trainer` runs the loop, with `DataCollatorForLanguageModeling`); its defaults suit fine-tuning, so pass a
from-scratch learning rate and a step budget. Without `--tokenizer_name` a tokenizer is trained on the training
text. The model scores only the masked tokens (`sparse_prediction`, kept in the saved config: with `labels` its
logits are one row per masked token; lstm-rrrl-noffn's step at 20 Newsgroups' lengths is 2.1-2.2x faster). The
output folder holds `RecurrentTransformerForMaskedLM`, the tokenizer, `mlm_metrics.json` (the validation MLM loss
before and after under one fixed masking, the logged training losses, the training seconds and the share of its
threads' CPU time the run got) and `train_args.json`.
"""

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed
from transformers.utils import logging

from ..cli import UsageError, parse_arguments, run_command
from ..data import tokenize_splits
from ..files import check_output_dir, clear_outputs, write_json
from ..machine import cpu_description
from ..modeling_recurrent_transformer import RecurrentTransformerForMaskedLM
from .accelerator import check_mixed_precision
from .arguments import DataArguments, ModelArguments, check_ranges
from .build import build_config, build_datasets, build_tokenizer, check_model_settings
from .checkpoints import cpu_share
from .sampling import scoring_loader

logger = logging.get_logger(__name__)

# Everything this command writes besides the Trainer's own files; --overwrite_output_dir removes these first.
OUTPUT_NAMES = ("model.safetensors", "config.json", "mlm_metrics.json", "train_args.json")
MASKING_SEED = 1234  # one fixed masking of the validation text, so losses before and after compare like for like


@dataclass
class MLMArguments:
    mlm_probability: float = field(default=0.15, metadata={"help": "share of tokens masked (BERT: 0.15)"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a pre-training run in output_dir"})
    allow_slow_bf16: bool = field(
        default=False, metadata={"help": "run --bf16 on a CPU without native bfloat16, about 10x slower than fp32"}
    )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, MLMArguments, TrainingArguments)


def check_settings(model_args, data_args, mlm_args: MLMArguments, training_args: TrainingArguments) -> None:
    """Every check that needs no data; touches nothing."""
    check_ranges(model_args, data_args, training_args)
    check_model_settings(model_args)
    if model_args.init_from is not None:
        raise UsageError("init_from is a fine-tuning option; pre-training starts from a fresh model")
    if data_args.dataset_name is None and data_args.train_file is None:
        raise UsageError("train_file is not set: the MLM reads the task's own training text")
    if not 0 < mlm_args.mlm_probability < 1:
        raise UsageError(f"mlm_probability={mlm_args.mlm_probability} must lie between 0 and 1")
    if training_args.max_steps <= 0 and training_args.num_train_epochs <= 0:
        raise UsageError("set max_steps or num_train_epochs above 0")
    check_mixed_precision(training_args.bf16, training_args.use_cpu, mlm_args.allow_slow_bf16)
    check_output_dir(training_args.output_dir, overwrite=mlm_args.overwrite_output_dir, can_resume=False)


def masked_lm_loss(model, dataset, tokenizer, mlm_probability: float, batch_size: int) -> float:
    """Mean loss over the masked tokens of `dataset` under one fixed, seeded masking, in length-sorted batches (as
    the classifier's scoring: in file order, long-document text pads nearly every batch to its longest row)."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=MASKING_SEED)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in scoring_loader(dataset, batch_size, collator):
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            masked = int((batch["labels"] != -100).sum())
            if masked:
                total += model(**batch).loss.item() * masked
                count += masked
    model.train(was_training)
    return total / count if count else math.nan


def prepare(model_args, data_args, training_args):
    """The split, the tokenizer (with a mask token) and the config of a bidirectional preset; the tokenized
    train and validation text."""
    split_seed = training_args.seed if data_args.split_seed is None else data_args.split_seed
    data = build_datasets(data_args, split_seed)
    tokenizer = build_tokenizer(model_args, data.splits["train"])
    if tokenizer.mask_token is None:
        raise UsageError(f"the tokenizer {model_args.tokenizer_name!r} has no mask token: a masked LM needs one")
    config = build_config(model_args, tokenizer, data)
    config.sparse_prediction = True  # the vocabulary projection of the masked tokens only: the same loss, 2x faster
    if not config.bidirectional:
        raise UsageError(
            f"model config {model_args.model_config!r} is causal (bidirectional=false): masked-LM pre-training "
            "needs a bidirectional preset"
        )
    splits = datasets.DatasetDict({name: data.splits[name] for name in ("train", "validation")})
    tokenized = tokenize_splits(splits, tokenizer, model_args.max_length).remove_columns("labels")
    return tokenizer, config, tokenized


def pretrain_mlm(model_args, data_args, mlm_args: MLMArguments, training_args: TrainingArguments) -> dict:
    """The whole pre-training run from parsed arguments; returns what mlm_metrics.json holds."""
    check_settings(model_args, data_args, mlm_args, training_args)
    tokenizer, config, tokenized = prepare(model_args, data_args, training_args)
    # Every check has passed; only now is the output folder written.
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(output_dir, OUTPUT_NAMES)
    resolved = {"model": asdict(model_args), "data": asdict(data_args), "mlm": asdict(mlm_args)}
    write_json(output_dir / "train_args.json", resolved | {"training": training_args.to_dict()})

    set_seed(training_args.seed)  # before building the model: its initial weights follow the seed
    model = RecurrentTransformerForMaskedLM(config)
    evaluate = (tokenized["validation"], tokenizer, mlm_args.mlm_probability, training_args.per_device_eval_batch_size)
    initial_loss = masked_lm_loss(model, *evaluate)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_args.mlm_probability),
    )
    started, started_cpu = time.perf_counter(), time.process_time()
    output = trainer.train()
    train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    final_loss = masked_lm_loss(model, *evaluate)
    results = {
        "initial_eval_loss": initial_loss,
        "final_eval_loss": final_loss,
        "train_loss": output.training_loss,
        "train_loss_history": [
            {"step": entry["step"], "loss": entry["loss"]} for entry in trainer.state.log_history if "loss" in entry
        ],
        "global_step": trainer.state.global_step,
        "train_seconds": train_seconds,
        # As run_info.json's: the share of its threads' time this process got (None off the CPU); under 0.8 it
        # shared its cores, and its seconds say more about the load beside it than about the model.
        "train_cpu_seconds": train_cpu_seconds,
        "train_cpu_share": cpu_share(train_cpu_seconds, train_seconds, training_args.device.type),
        "cpu": cpu_description(),
        "num_parameters": sum(param.numel() for param in model.parameters()),
        "split_sizes": {name: len(split) for name, split in tokenized.items()},
    }
    if trainer.is_world_process_zero():  # not trainer.save_model: it also pickles the TrainingArguments
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        write_json(output_dir / "mlm_metrics.json", results)
    logger.info(f"validation MLM loss {initial_loss:.4f} -> {final_loss:.4f} after {trainer.state.global_step} steps")
    return results


def run(argv: list[str]) -> dict:
    return pretrain_mlm(*parse_arguments(ARGUMENT_CLASSES, argv))


def main(argv: list[str] | None = None) -> dict:
    """Pre-train as the command line says; returns the MLM metrics. Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
