"""`recurrent-transformer evaluate`: score a saved classifier folder on a labelled file; write the metrics as JSON
(and a confusion-matrix PNG).

    recurrent-transformer evaluate --model_dir runs/r8 --data_file ../shared/data/r8/test.csv
    recurrent-transformer evaluate --model_dir runs/r8 --data_file ../shared/data/r8/test.csv \
        --output_file runs/r8/eval-test.json --confusion_matrix runs/r8/eval-test.png
    accelerate launch --config_file configs/accelerate/multi_cpu.yaml -m recurrent_transformer evaluate \
        --model_dir runs/r8 --data_file ../shared/data/r8/test.csv

The folder is what `recurrent-transformer train` writes (or any `save_pretrained` output with a tokenizer): the model loads
through `AutoModelForSequenceClassification`, its label names come from `config.id2label`, and the file's
labels must be among them. `max_length` defaults to the tokenizer's `model_max_length`, the length the model was
trained with. Bad input prints one line naming the cause and exits with status 2.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .cli import UsageError, parse_arguments, run_command
from .data import check_data_file, load_data_file, make_collator
from .files import write_json
from .metrics import METRIC_BACKENDS, classification_metrics, save_confusion_matrix
from .training.sampling import scoring_loader


@dataclass
class EvaluateArguments:
    model_dir: str = field(metadata={"help": "folder holding config.json, model.safetensors and the tokenizer"})
    data_file: str = field(metadata={"help": "labelled CSV/JSON/Parquet file to score"})
    output_file: str | None = field(default=None, metadata={"help": "metrics JSON; unset: print only"})
    confusion_matrix: str | None = field(default=None, metadata={"help": "confusion-matrix PNG; unset: none"})
    text_column: str = field(default="text", metadata={"help": "column holding the text"})
    label_column: str = field(default="label", metadata={"help": "column holding the label"})
    max_length: int | None = field(default=None, metadata={"help": "truncation; unset: the tokenizer's"})
    batch_size: int = field(default=64, metadata={"help": "rows per process per batch"})
    metrics_backend: str = field(default="auto", metadata={"help": f"one of {METRIC_BACKENDS}"})
    use_cpu: bool = field(default=False, metadata={"help": "score on CPU even when an accelerator is present"})


def load_model(model_dir: str):
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UsageError(f"model_dir {model_dir!r} holds no config.json: not a saved model folder")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load the model in {model_dir!r}: {error}") from error
    return model, tokenizer


def load_split(args: EvaluateArguments, label2id: dict[str, int]) -> datasets.Dataset:
    split = load_data_file(check_data_file(args.data_file, "data_file"), "data")
    missing = [column for column in (args.text_column, args.label_column) if column not in split.column_names]
    if missing:
        raise UsageError(
            f"{args.data_file} has no column {' or '.join(map(repr, missing))}; its columns are {split.column_names}"
        )
    if len(split) == 0:
        raise UsageError(f"{args.data_file} is empty: it has a header but no rows")
    labels = [str(label) for label in split[args.label_column]]
    unknown = sorted(set(labels) - set(label2id))
    if unknown:
        raise UsageError(f"{args.data_file} has labels the model does not know: {unknown}; it knows {sorted(label2id)}")
    return datasets.Dataset.from_dict(
        {"text": [text or "" for text in split[args.text_column]], "labels": [label2id[label] for label in labels]}
    )


def evaluate(args: EvaluateArguments) -> dict:
    if args.metrics_backend not in METRIC_BACKENDS:
        raise UsageError(f"metrics_backend={args.metrics_backend!r} is not one of {METRIC_BACKENDS}")
    model, tokenizer = load_model(args.model_dir)
    label_names = [model.config.id2label[index] for index in range(model.config.num_labels)]
    split = load_split(args, {name: index for index, name in enumerate(label_names)})
    max_length = args.max_length or tokenizer.model_max_length

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    tokenized = split.map(tokenize, batched=True, remove_columns=["text"])
    loader = scoring_loader(tokenized, args.batch_size, make_collator(tokenizer))
    accelerator = Accelerator(cpu=args.use_cpu or not torch.accelerator.is_available())
    model, loader = accelerator.prepare(model, loader)
    model.eval()
    predictions, references = [], []
    for batch in loader:
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        batch_predictions, batch_references = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        predictions.append(batch_predictions.cpu())
        references.append(batch_references.cpu())
    scores = classification_metrics(
        torch.cat(predictions).numpy(), torch.cat(references).numpy(), label_names, backend=args.metrics_backend
    )
    scores.update(model_dir=args.model_dir, data_file=args.data_file, max_length=max_length)
    if accelerator.is_main_process:
        if args.output_file:
            Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
            write_json(args.output_file, scores)
        if args.confusion_matrix:
            save_confusion_matrix(scores["confusion_matrix"], label_names, args.confusion_matrix, title=args.data_file)
        headline = {key: scores[key] for key in ("accuracy", "f1_macro", "f1_weighted", "num_samples")}
        print(json.dumps(headline))
    return scores


def run(argv: list[str]) -> dict:
    (args,) = parse_arguments((EvaluateArguments,), argv)
    return evaluate(args)


def main(argv: list[str] | None = None) -> dict:
    """Score as the command line says; returns the metrics. Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
