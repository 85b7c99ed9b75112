"""Train a recurrent Transformer text classifier with a custom Accelerate loop.

Run from the repository root (data paths in configs/train/*.yaml are relative to it):

    python scripts/train.py configs/train/r8.yaml
    python scripts/train.py configs/train/r8.yaml --model_config tiny --max_steps 300 --output_dir runs/r8-tiny
    python scripts/train.py configs/train/r8.yaml --resume                  # continue from the last checkpoint
    accelerate launch --config_file configs/accelerate/cpu.yaml scripts/train.py configs/train/r8.yaml
    accelerate launch --config_file configs/accelerate/multi_cpu.yaml scripts/train.py configs/train/r8.yaml
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py configs/train/smoke.yaml
    tensorboard --logdir runs/r8/logs

The YAML file (first argument) supplies defaults, flags override it; every key is a field of the dataclasses
below. `--per_device_train_batch_size` is per process: the global batch is that times the number of processes
times `--gradient_accumulation_steps`. The output folder receives model.safetensors, config.json and the model's
code files (loadable with `AutoModelForSequenceClassification`), the tokenizer, metrics.json (test scores, or
validation when no test data), confusion_matrix.png, train_args.json, run_info.json (with the training time and
tokens/s), eval_history.json (each validation with its step and training seconds), loss_history.json (the mean
training loss of each `--logging_steps` window, with its step, learning rate and training seconds), checkpoints/
and logs/.
`--init_from` starts the classifier's body from a saved folder (scripts/pretrain_mlm.py writes one) with a freshly
initialised head; `--max_train_seconds` stops on a wall-clock budget; `--split_seed` keeps the data split fixed while
`--seed` varies (scripts/compare.py uses all three).
Bad input prints one line naming the cause and exits with status 2; nothing is written before the checks pass.
"""

import contextlib
import itertools
import json
import logging
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast_object_list, set_seed
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, get_scheduler

import recurrent_transformer
from recurrent_transformer import RecurrentTransformerConfig, RecurrentTransformerForSequenceClassification
from recurrent_transformer.cli import ArgumentError, parse_yaml_and_flags, unshadow_libraries
from recurrent_transformer.data import (
    TOKENIZER_ALGORITHMS,
    DataError,
    LabelledData,
    load_labelled_data,
    load_tokenizer,
    make_collator,
    tokenize_splits,
    train_tokenizer,
    training_texts,
)
from recurrent_transformer.metrics import METRIC_BACKENDS, SELECTION_METRICS, classification_metrics
from recurrent_transformer.metrics import save_confusion_matrix as write_confusion_matrix
from recurrent_transformer.presets import load_preset, preset_path

unshadow_libraries(__file__)  # scripts/evaluate.py must not stand in for the evaluate library

logger = get_logger("train")  # logs on the main process only

SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
STATE_FILE = "trainer_state.json"
CLOCK_FILE = "clock.json"  # training seconds and tokens so far; not in STATE_FILE, which a resume reproduces exactly
HISTORY_FILE = "eval_history.json"
LOSS_HISTORY_FILE = "loss_history.json"
# Everything this script writes into an output folder; --overwrite_output_dir removes these first.
OUTPUT_NAMES = (
    CHECKPOINT_DIR,
    "logs",
    "metrics.json",
    "confusion_matrix.png",
    "train_args.json",
    "run_info.json",
    HISTORY_FILE,
    LOSS_HISTORY_FILE,
)


@dataclass
class ModelArguments:
    model_config: str = field(
        default="hybrid-small", metadata={"help": "model preset name (configs/model/<name>.json) or a JSON file"}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "comma-separated key=value pairs put on the preset, e.g. hidden_dropout_prob=0"}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "an existing tokenizer (folder or Hub name); unset trains one on train"}
    )
    tokenizer_algorithm: str = field(default="wordpiece", metadata={"help": f"one of {TOKENIZER_ALGORITHMS}"})
    tokenizer_vocab_size: int = field(default=8000, metadata={"help": "vocabulary size of a trained tokenizer"})
    tokenizer_min_frequency: int = field(default=2, metadata={"help": "rarest piece a trained tokenizer keeps"})
    lowercase: bool = field(default=True, metadata={"help": "lower-case text in a trained tokenizer"})
    max_length: int = field(default=256, metadata={"help": "tokens per text after truncation ([CLS], [SEP] included)"})
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "a saved model folder (e.g. from scripts/pretrain_mlm.py) whose body weights start the classifier "
            "(the head is freshly initialised); its tokenizer is used unless tokenizer_name is set"
        },
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "a Hub data set name, e.g. fancyzhx/ag_news"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "the Hub data set's configuration"})
    train_file: str | None = field(default=None, metadata={"help": "local CSV/JSON/Parquet training file"})
    validation_file: str | None = field(default=None, metadata={"help": "unset: validation is cut from train"})
    test_file: str | None = field(default=None, metadata={"help": "scored once, after training, never for choices"})
    text_column: str = field(default="text", metadata={"help": "column holding the text"})
    label_column: str = field(default="label", metadata={"help": "column holding the label"})
    validation_split: float = field(default=0.1, metadata={"help": "share of train cut off when no validation"})
    max_train_samples: int | None = field(default=None, metadata={"help": "seeded random subset of train"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "seeded random subset of validation"})
    max_test_samples: int | None = field(default=None, metadata={"help": "seeded random subset of test"})
    split_seed: int | None = field(
        default=None, metadata={"help": "seeds the validation split and the subsets; unset: seed (fix it to vary seed)"}
    )


@dataclass
class TrainArguments:
    output_dir: str | None = field(default=None, metadata={"help": "folder for the model, metrics and checkpoints"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a run already in output_dir"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    seed: int = field(default=42, metadata={"help": "seeds the split, the subsets, the model and the data order"})
    num_train_epochs: float = field(default=3.0, metadata={"help": "passes over train (max_steps > 0 wins)"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps in all; -1 uses num_train_epochs"})
    max_train_seconds: float = field(
        default=0.0,
        metadata={"help": "also stop once training (validation excluded) has run this long; 0: no time budget"},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "rows per process per micro-batch"})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "rows per process when scoring"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate of AdamW"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0 turns clipping off"})
    lr_scheduler_type: str = field(default="linear", metadata={"help": f"decay after warm-up: one of {SCHEDULERS}"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of the steps spent warming up"})
    warmup_steps: int = field(default=0, metadata={"help": "warm-up steps; > 0 wins over warmup_ratio"})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (refused where unsupported)"})
    use_cpu: bool = field(default=False, metadata={"help": "train on CPU even when an accelerator is present"})
    eval_steps: int = field(default=0, metadata={"help": "validate every N optimizer steps; 0: once per epoch"})
    save_steps: int = field(default=0, metadata={"help": "checkpoint every N optimizer steps; 0: at each validation"})
    save_total_limit: int | None = field(default=2, metadata={"help": "step checkpoints kept; unset keeps all"})
    logging_steps: int = field(default=20, metadata={"help": "log the training loss every N optimizer steps"})
    metric_for_best_model: str = field(default="f1_macro", metadata={"help": f"one of {SELECTION_METRICS}"})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "save the best validated weights"})
    early_stopping_patience: int = field(default=0, metadata={"help": "stop after N validations without gain; 0 off"})
    report_to: str = field(default="tensorboard", metadata={"help": "'tensorboard' or 'none'"})
    metrics_backend: str = field(default="auto", metadata={"help": f"one of {METRIC_BACKENDS}"})
    stop_after_step: int | None = field(
        default=None, metadata={"help": "end this run after this step's checkpoint, as if interrupted (resume later)"}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "worker processes per data loader"})
    disable_tqdm: bool = field(default=False, metadata={"help": "no progress bar"})


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainArguments)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainArguments]:
    """A YAML file as first argument supplies defaults; the flags after it override them."""
    try:
        return parse_yaml_and_flags(ARGUMENT_CLASSES, argv)
    except ArgumentError as error:
        raise DataError(str(error)) from None


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=0.5,c=gelu' -> {'a': 1, 'b': 0.5, 'c': 'gelu'}: values read as JSON where they parse, an integer
    given for a float field of the config made a float (the config's strict type check would refuse it)."""
    fields = RecurrentTransformerConfig.__dataclass_fields__
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"config_overrides: {item!r} is not key=value")
        key = key.strip()
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value.strip()
        if key in fields and fields[key].type in (float, float | None) and type(overrides[key]) is int:
            overrides[key] = float(overrides[key])
    return overrides


def checkpoints_in(output_dir: Path) -> list[Path]:
    """Step checkpoints holding a state file, oldest first."""
    folders = (output_dir / CHECKPOINT_DIR).glob("step-*")
    return sorted((path for path in folders if (path / STATE_FILE).is_file()), key=lambda path: path.name)


def check_arguments(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> None:
    """Every check that needs no data; touches nothing."""
    try:
        preset_path(model_args.model_config)
    except ValueError as error:
        raise DataError(str(error)) from error
    parse_overrides(model_args.config_overrides)
    choices = {
        "tokenizer_algorithm": (model_args.tokenizer_algorithm, TOKENIZER_ALGORITHMS),
        "lr_scheduler_type": (train_args.lr_scheduler_type, SCHEDULERS),
        "metric_for_best_model": (train_args.metric_for_best_model, SELECTION_METRICS),
        "metrics_backend": (train_args.metrics_backend, METRIC_BACKENDS),
        "report_to": (train_args.report_to, ("tensorboard", "none")),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise DataError(f"{name}={value!r} is not one of {allowed}")
    if train_args.max_steps <= 0 and train_args.num_train_epochs <= 0:
        raise DataError("set max_steps or num_train_epochs above 0")
    if train_args.max_train_seconds < 0:
        raise DataError(f"max_train_seconds={train_args.max_train_seconds} is negative (0 turns the time budget off)")
    if model_args.init_from is not None:
        init_from = Path(model_args.init_from)
        missing = [name for name in ("config.json", "model.safetensors") if not (init_from / name).is_file()]
        if missing:
            raise DataError(f"init_from: {str(init_from)!r} is not a saved model folder (no {' or '.join(missing)})")
    if train_args.output_dir is None:
        raise DataError("output_dir is not set (--output_dir or a key in the YAML file)")
    output_dir = Path(train_args.output_dir)
    if train_args.resume and train_args.overwrite_output_dir:
        raise DataError("--resume continues the run in output_dir and --overwrite_output_dir replaces it: pick one")
    if train_args.resume:
        if not checkpoints_in(output_dir):
            raise DataError(f"--resume: no checkpoint in {output_dir / CHECKPOINT_DIR} to continue from")
    elif output_dir.is_file():
        raise DataError(f"output_dir {str(output_dir)!r} is a file")
    elif output_dir.is_dir() and any(output_dir.iterdir()) and not train_args.overwrite_output_dir:
        held = sorted(path.name for path in output_dir.iterdir())[:6]
        raise DataError(
            f"output_dir {str(output_dir)!r} already holds another run ({', '.join(held)}); pass "
            "--overwrite_output_dir to replace it, --resume to continue it, or choose another folder"
        )


def build_accelerator(train_args: TrainArguments) -> Accelerator:
    # Without an accelerator device, cpu=True is what turns `accelerate launch --multi_gpu` processes into one
    # gloo process group (MULTI_CPU); otherwise each process would train alone on its own copy.
    cpu = train_args.use_cpu or not torch.accelerator.is_available()
    # Unset: the launcher's setting (`accelerate launch --mixed_precision` or its config file), else "no".
    mixed_precision = "bf16" if train_args.bf16 else None
    if train_args.bf16:
        from accelerate.utils import is_bf16_available

        if not is_bf16_available(ignore_tpu=True):
            raise DataError("--bf16: this hardware has no bfloat16 support; drop the flag")
    output_dir = Path(train_args.output_dir)
    return Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        log_with=None if train_args.report_to == "none" else train_args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # The shuffle order depends on (seed, epoch) only: the same for any number of processes and on resume.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def build_datasets(data_args: DataArguments, seed: int) -> LabelledData:
    return load_labelled_data(
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        train_file=data_args.train_file,
        validation_file=data_args.validation_file,
        test_file=data_args.test_file,
        text_column=data_args.text_column,
        label_column=data_args.label_column,
        validation_split=data_args.validation_split,
        seed=seed,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        max_test_samples=data_args.max_test_samples,
    )


def build_tokenizer(model_args: ModelArguments, data: LabelledData, accelerator: Accelerator, resume_from: Path | None):
    """The run's tokenizer: the one saved at the run's start when resuming, a named one, or one trained on train.

    Tokenizer training is not reproducible (ties between merges follow hash-map order, huggingface/tokenizers
    #1794), so the main process trains it and sends it to the others."""
    if resume_from is not None:
        return load_tokenizer(str(resume_from), model_args.max_length)
    if model_args.tokenizer_name is not None:
        return load_tokenizer(model_args.tokenizer_name, model_args.max_length)
    if model_args.init_from is not None:  # the vocabulary its embeddings were trained with
        return load_tokenizer(model_args.init_from, model_args.max_length)
    serialized = [None]
    if accelerator.is_main_process:
        tokenizer = train_tokenizer(
            training_texts(data.splits["train"]),
            algorithm=model_args.tokenizer_algorithm,
            vocab_size=model_args.tokenizer_vocab_size,
            min_frequency=model_args.tokenizer_min_frequency,
            lowercase=model_args.lowercase,
            model_max_length=model_args.max_length,
        )
        serialized = [tokenizer.backend_tokenizer.to_str()]
    if accelerator.num_processes > 1:
        broadcast_object_list(serialized, from_process=0)
    if accelerator.is_main_process:
        return tokenizer
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(serialized[0]),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_args.max_length,
    )


def build_config(model_args: ModelArguments, tokenizer, data: LabelledData) -> RecurrentTransformerConfig:
    """The preset with this run's vocabulary, labels, padding id and overrides; `DataError` if it is invalid."""
    try:
        config = load_preset(
            model_args.model_config,
            vocab_size=len(tokenizer),
            num_labels=len(data.label_names),
            id2label=data.id2label,
            label2id=data.label2id,
            pad_token_id=tokenizer.pad_token_id,
            **parse_overrides(model_args.config_overrides),
        )
    except (ValueError, TypeError, StrictDataclassClassValidationError, StrictDataclassFieldValidationError) as error:
        raise DataError(f"model config {model_args.model_config!r}: {error}") from error
    return config


def check_init_from(model_args: ModelArguments, config: RecurrentTransformerConfig) -> None:
    """Refuse a pretrained folder whose body does not fit this run's config, before anything is written: every body
    weight must be there with the shape this run builds (a different preset or vocabulary shows up here)."""
    if model_args.init_from is None:
        return
    with torch.device("meta"):
        expected = RecurrentTransformerForSequenceClassification(config).model.state_dict()
    with safe_open(str(Path(model_args.init_from) / "model.safetensors"), framework="pt") as weights:
        saved = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    for name, tensor in expected.items():
        key = f"{RecurrentTransformerForSequenceClassification.base_model_prefix}.{name}"
        if saved.get(key) != tuple(tensor.shape):
            found = f"shape {saved[key]}" if key in saved else "nothing"
            raise DataError(
                f"init_from {model_args.init_from!r} holds {found} for {key}, this run builds {tuple(tensor.shape)}: "
                f"was it pretrained with preset {model_args.model_config!r} and the same tokenizer?"
            )


def build_model(model_args: ModelArguments, config: RecurrentTransformerConfig):
    """A fresh classifier, or one whose body comes from `init_from` (its head, absent there, is initialised from the
    seed as a fresh one would be; the saved folder's own head, such as an MLM head, is dropped)."""
    if model_args.init_from is None:
        return RecurrentTransformerForSequenceClassification(config)
    return RecurrentTransformerForSequenceClassification.from_pretrained(model_args.init_from, config=config)


def build_optimizer(model, train_args: TrainArguments) -> torch.optim.AdamW:
    # No weight decay on biases, norms and embeddings' 1-d parameters (the usual BERT recipe).
    decay = [param for param in model.parameters() if param.requires_grad and param.ndim >= 2]
    no_decay = [param for param in model.parameters() if param.requires_grad and param.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": train_args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train_args.learning_rate,
        betas=(train_args.adam_beta1, train_args.adam_beta2),
        eps=train_args.adam_epsilon,
    )


def predict(model, dataloader, accelerator: Accelerator) -> tuple[np.ndarray, np.ndarray, float]:
    """Predicted and true label ids over the whole split (all processes, duplicates dropped), and the mean loss."""
    model.eval()
    predictions, references, losses = [], [], []
    for batch in dataloader:
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
        gathered = accelerator.gather_for_metrics((logits.argmax(dim=-1), batch["labels"], loss))
        for store, tensor in zip((predictions, references, losses), gathered, strict=True):
            store.append(tensor.cpu())
    model.train()
    return torch.cat(predictions).numpy(), torch.cat(references).numpy(), torch.cat(losses).mean().item()


class RandomState:
    """The Python, NumPy and torch RNG states, to step around RNG draws that a resumed run must not make."""

    def __init__(self):
        self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def restore(self) -> None:
        random.setstate(self.states[0])
        np.random.set_state(self.states[1])
        torch.set_rng_state(self.states[2])


@dataclass
class TrainerState:
    """Where the loop stands; saved beside each checkpoint so `--resume` continues exactly."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed (per process)
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_gain: int = 0
    log_history: list = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "TrainerState":
        return cls(**json.loads(path.read_text()))


class TrainClock:
    """Seconds spent in training steps, validation and checkpoints excluded, so that under a time budget a model that
    is slow to validate loses no training time; `paused()` brackets the excluded work."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.started: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        if self.started is not None:
            self.seconds += time.perf_counter() - self.started
            self.started = None

    def elapsed(self) -> float:
        return self.seconds + (time.perf_counter() - self.started if self.started is not None else 0.0)

    @contextlib.contextmanager
    def paused(self):
        running = self.started is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


def history_until(path: Path, step: int) -> list[dict]:
    """The entries of a history file (eval_history.json, loss_history.json) up to `step`: what a resume keeps."""
    if not path.is_file():
        return []
    return [entry for entry in json.loads(path.read_text()) if entry["step"] <= step]


def write_json(path: Path, values: dict) -> None:
    path.write_text(json.dumps(values, indent=2, ensure_ascii=False, default=str) + "\n")


def train(
    model_args, data_args, train_args, accelerator: Accelerator, data: LabelledData, tokenizer, config, resume_from
):
    output_dir = Path(train_args.output_dir)
    tokenized = tokenize_splits(data.splits, tokenizer, model_args.max_length)
    collator = make_collator(tokenizer)
    loaders = {
        name: DataLoader(
            split,
            batch_size=train_args.per_device_train_batch_size
            if name == "train"
            else train_args.per_device_eval_batch_size,
            shuffle=name == "train",
            collate_fn=collator,
            num_workers=train_args.dataloader_num_workers,
        )
        for name, split in tokenized.items()
    }
    set_seed(train_args.seed)  # before building the model: its initial weights follow the seed
    model = build_model(model_args, config)
    optimizer = build_optimizer(model, train_args)
    num_processes = accelerator.num_processes
    # Per-process micro-batches in an epoch once sharded: what prepare() will yield on each process.
    batches_per_epoch = math.ceil(len(tokenized["train"]) / (train_args.per_device_train_batch_size * num_processes))
    steps_per_epoch = math.ceil(batches_per_epoch / train_args.gradient_accumulation_steps)
    if train_args.max_steps > 0:
        max_steps = train_args.max_steps
    else:
        max_steps = math.ceil(train_args.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    warmup_steps = train_args.warmup_steps or math.ceil(train_args.warmup_ratio * max_steps)
    # A prepared scheduler steps once per process at each optimizer step, so its lengths count all processes.
    scheduler = get_scheduler(
        train_args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=warmup_steps * num_processes,
        num_training_steps=max_steps * num_processes,
    )
    names = list(loaders)
    prepared = accelerator.prepare(model, optimizer, scheduler, *loaders.values())
    model, optimizer, scheduler = prepared[:3]
    loaders = dict(zip(names, prepared[3:], strict=True))
    train_loader = loaders["train"]
    if len(train_loader) != batches_per_epoch:
        raise RuntimeError(f"expected {batches_per_epoch} batches per epoch and process, got {len(train_loader)}")

    state = TrainerState()
    clock = TrainClock()
    # Real (non-padding) tokens trained on by this process; after a resume the main process carries the earlier total.
    tokens_seen = torch.zeros((), dtype=torch.long, device=accelerator.device)
    history = []  # each validation with its step and training seconds: eval_history.json
    loss_history = []  # each logging window's mean training loss: loss_history.json
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        state = TrainerState.load(resume_from / STATE_FILE)
        if (resume_from / CLOCK_FILE).is_file():
            saved_clock = json.loads((resume_from / CLOCK_FILE).read_text())
            clock.seconds = saved_clock["train_seconds"]
            if accelerator.is_main_process:
                tokens_seen += saved_clock["train_tokens"]
        history = history_until(output_dir / HISTORY_FILE, state.global_step)
        loss_history = history_until(output_dir / LOSS_HISTORY_FILE, state.global_step)
        logger.info(f"resumed from {resume_from} at step {state.global_step}")
    if train_args.report_to != "none":
        # TensorBoard's hparams take scalars only.
        hparams = {
            key: value if isinstance(value, int | float | str | bool) else str(value)
            for args in (model_args, data_args, train_args)
            for key, value in asdict(args).items()
        }
        accelerator.init_trackers("train", config=hparams)

    best_dir = output_dir / CHECKPOINT_DIR / BEST_DIR

    def save_model(folder: Path) -> None:
        """`save_pretrained` on the main process; every process joins in, as FSDP and DeepSpeed gather the weights."""
        state_dict = accelerator.get_state_dict(model)
        accelerator.unwrap_model(model).save_pretrained(
            folder, is_main_process=accelerator.is_main_process, state_dict=state_dict, save_function=accelerator.save
        )
        accelerator.wait_for_everyone()

    progress = tqdm(
        total=max_steps,
        initial=state.global_step,
        desc="training",
        disable=train_args.disable_tqdm or not accelerator.is_local_main_process,
    )

    def evaluate_and_select() -> bool:
        """Validate, keep the best weights; True when early stopping says stop."""
        with clock.paused():
            return _evaluate_and_select()

    def _evaluate_and_select() -> bool:
        predictions, references, loss = predict(model, loaders["validation"], accelerator)
        scores = classification_metrics(
            predictions, references, data.label_names, backend=train_args.metrics_backend, per_class=False
        )
        scores["loss"] = loss
        metric = scores[train_args.metric_for_best_model]
        improved = state.best_metric is None or metric > state.best_metric
        if improved:
            state.best_metric, state.best_step, state.evaluations_without_gain = metric, state.global_step, 0
            save_model(best_dir)
        else:
            state.evaluations_without_gain += 1
        state.log_history.append({"step": state.global_step, **scores})
        history.append({"step": state.global_step, "train_seconds": clock.elapsed(), **scores})
        if accelerator.is_main_process:  # rewritten at each validation, so it can be watched during the run
            write_json(output_dir / HISTORY_FILE, history)
        headline = {f"eval/{key}": value for key, value in scores.items() if isinstance(value, int | float)}
        accelerator.log(headline, step=state.global_step)
        logger.info(f"step {state.global_step}: validation {train_args.metric_for_best_model}={metric:.4f}")
        patience = train_args.early_stopping_patience
        return patience > 0 and state.evaluations_without_gain >= patience

    def save_checkpoint() -> None:
        with clock.paused():
            _save_checkpoint()

    def _save_checkpoint() -> None:
        path = output_dir / CHECKPOINT_DIR / f"step-{state.global_step:07d}"
        accelerator.save_state(str(path))
        total_tokens = accelerator.reduce(tokens_seen, reduction="sum").item()
        if accelerator.is_main_process:
            state.save(path / STATE_FILE)
            write_json(path / CLOCK_FILE, {"train_seconds": clock.elapsed(), "train_tokens": total_tokens})
            kept = checkpoints_in(output_dir)
            limit = train_args.save_total_limit
            for old in kept[: max(len(kept) - limit, 0)] if limit else []:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()

    def out_of_time() -> bool:
        """The time budget is spent on some process (all of them stop together)."""
        if train_args.max_train_seconds <= 0:
            return False
        spent = torch.tensor(float(clock.elapsed() >= train_args.max_train_seconds), device=accelerator.device)
        return accelerator.reduce(spent, reduction="sum").item() > 0

    model.train()
    stop = state.global_step >= max_steps
    stopped_by = "max_steps"
    clock.start()
    last_evaluated = state.log_history[-1]["step"] if state.log_history else None
    running_loss, running_batches = torch.zeros((), device=accelerator.device), 0
    for epoch in range(state.epoch, num_epochs):
        if stop:
            break
        train_loader.set_epoch(epoch)
        skip = state.batches_in_epoch if epoch == state.epoch else 0
        if skip:
            # The loader draws from the torch RNG when its first batch is asked for; the interrupted run made
            # that draw before its checkpoint, so the resumed run steps around it (restoring the saved state).
            random_state = RandomState()
            batches = iter(accelerator.skip_first_batches(train_loader, skip))
            first = next(batches, None)
            random_state.restore()
            batches = itertools.chain([first] if first is not None else [], batches)
        else:
            batches = iter(train_loader)
        state.epoch, state.batches_in_epoch = epoch, skip
        for batch in batches:
            tokens_seen += batch["attention_mask"].sum()
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and train_args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state.batches_in_epoch += 1
            running_loss += loss.detach().float()
            running_batches += 1
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            progress.update(1)
            if state.batches_in_epoch == len(train_loader):
                state.epoch, state.batches_in_epoch = epoch + 1, 0
            step = state.global_step
            if step % train_args.logging_steps == 0 or step == max_steps:
                mean_loss = accelerator.reduce(running_loss, reduction="mean").item() / running_batches
                learning_rate = scheduler.get_last_lr()[0]
                accelerator.log(
                    {"train/loss": mean_loss, "train/learning_rate": learning_rate, "train/epoch": epoch}, step=step
                )
                loss_history.append(
                    {"step": step, "loss": mean_loss, "learning_rate": learning_rate, "train_seconds": clock.elapsed()}
                )
                if accelerator.is_main_process:
                    write_json(output_dir / LOSS_HISTORY_FILE, loss_history)
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                running_loss.zero_()
                running_batches = 0
            epoch_end = state.batches_in_epoch == 0
            evaluate_now = step % train_args.eval_steps == 0 if train_args.eval_steps > 0 else epoch_end
            timed_out = out_of_time()
            if evaluate_now or step == max_steps or timed_out:
                stop = evaluate_and_select()
                last_evaluated = step
                stopped_by = "early_stopping" if stop else stopped_by
            if timed_out:
                stop, stopped_by = True, "max_train_seconds"
                logger.info(f"time budget of {train_args.max_train_seconds} s spent at step {step}")
            save_now = step % train_args.save_steps == 0 if train_args.save_steps > 0 else evaluate_now
            if save_now or step == train_args.stop_after_step:
                save_checkpoint()
            if step == train_args.stop_after_step:
                progress.close()
                accelerator.end_training()
                logger.info(f"stopped after step {step} (stop_after_step); continue with --resume")
                return {"stopped_at_step": step}
            if stop or step >= max_steps:
                stop = True
                break
    progress.close()
    clock.stop()
    if last_evaluated != state.global_step:
        evaluate_and_select()
    train_tokens = accelerator.reduce(tokens_seen, reduction="sum").item()

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if train_args.load_best_model_at_end and state.best_step not in (None, state.global_step):
        unwrapped.load_state_dict(load_file(best_dir / "model.safetensors"))
        logger.info(f"loaded the best weights, from step {state.best_step}")
    save_model(output_dir)
    final_split = "test" if "test" in loaders else "validation"
    predictions, references, _ = predict(model, loaders[final_split], accelerator)
    scores = classification_metrics(predictions, references, data.label_names, backend=train_args.metrics_backend)
    results = {
        "split": final_split,
        final_split: scores,
        "best_validation": {train_args.metric_for_best_model: state.best_metric, "step": state.best_step},
        "global_step": state.global_step,
    }
    if accelerator.is_main_process:  # the tokenizer was saved at the run's start
        write_json(output_dir / "metrics.json", results)
        write_confusion_matrix(
            scores["confusion_matrix"],
            data.label_names,
            output_dir / "confusion_matrix.png",
            title=f"{final_split}: accuracy {scores['accuracy']:.3f}, macro F1 {scores['f1_macro']:.3f}",
        )
        write_json(
            output_dir / "run_info.json",
            {
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "resumed_from": str(resume_from) if resume_from else None,
                "num_processes": num_processes,
                "device": str(accelerator.device),
                "mixed_precision": accelerator.mixed_precision,
                "global_batch_size": train_args.per_device_train_batch_size
                * num_processes
                * train_args.gradient_accumulation_steps,
                "max_steps": max_steps,
                "global_step": state.global_step,
                "best_step": state.best_step,
                "stopped_by": stopped_by,
                "train_seconds": clock.seconds,
                "train_tokens": train_tokens,
                "train_tokens_per_second": train_tokens / clock.seconds if clock.seconds > 0 else None,
                "init_from": model_args.init_from,
                "num_parameters": sum(param.numel() for param in unwrapped.parameters()),
                "label_names": data.label_names,
                "split_sizes": {name: len(split) for name, split in data.splits.items()},
                "versions": {
                    "recurrent_transformer": recurrent_transformer.__version__,
                    "torch": torch.__version__,
                    "transformers": __import__("transformers").__version__,
                    "accelerate": __import__("accelerate").__version__,
                },
            },
        )
        logger.info(f"{final_split}: accuracy {scores['accuracy']:.4f}, macro F1 {scores['f1_macro']:.4f}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def run(argv: list[str] | None = None) -> dict:
    return run_with(*parse_args(argv))


def run_with(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict:
    """The whole run from parsed arguments (scripts/compare.py calls this once per model and seed)."""
    check_arguments(model_args, data_args, train_args)
    output_dir = Path(train_args.output_dir)
    resume_from = checkpoints_in(output_dir)[-1] if train_args.resume else None
    accelerator = build_accelerator(train_args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_local_main_process:
        datasets.disable_progress_bars()
    resolved = {"model": asdict(model_args), "data": asdict(data_args), "training": asdict(train_args)}
    logger.info(f"arguments: {json.dumps(resolved, default=str)}")
    data = build_datasets(data_args, train_args.seed if data_args.split_seed is None else data_args.split_seed)
    # Resuming reuses the tokenizer saved at the run's start (a fresh one could differ, see build_tokenizer).
    tokenizer = build_tokenizer(model_args, data, accelerator, output_dir if resume_from else None)
    config = build_config(model_args, tokenizer, data)
    check_init_from(model_args, config)
    # Every check has passed on every process; only now is the output folder written.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and resume_from is None:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_NAMES:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        write_json(output_dir / "train_args.json", resolved)
        tokenizer.save_pretrained(output_dir)
    accelerator.wait_for_everyone()
    return train(model_args, data_args, train_args, accelerator, data, tokenizer, config, resume_from)


def main(argv: list[str] | None = None) -> dict:
    """Train as the command line says; returns the final metrics. Bad input: one line on stderr, exit status 2."""
    try:
        return run(argv)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
