"""The training commands' arguments: model, data and loop settings as dataclasses (`HfArgumentParser` reads them
from a YAML file and flags), and the checks that need no data, run before anything is written."""

from dataclasses import dataclass, field

from ..cli import UsageError
from ..configuration_recurrent_transformer import CELL_STATES
from ..data import TOKENIZER_ALGORITHMS
from ..metrics import METRIC_BACKENDS, SELECTION_METRICS

SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
SCHEDULE_CLOCKS = ("steps", "seconds")  # what the decay after warm-up runs over
RECURRENT_CELLS = tuple(CELL_STATES)  # the config's cells


@dataclass
class ModelArguments:
    model_config: str = field(
        default="hybrid-small", metadata={"help": "a shipped model preset's name (e.g. hybrid-small) or a JSON file"}
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
            "help": "a saved model folder (e.g. from pretrain-mlm) whose body weights start the classifier (the head is "
            "freshly initialised), or a BERT-family checkpoint (BERT, RoBERTa: a folder or a Hub id), converted on the "
            "fly with recurrent sub-layers where --recurrent_layers says; its tokenizer is used unless tokenizer_name "
            "is set"
        },
    )
    recurrent_layers: str = field(
        default="all",
        metadata={
            "help": "with a BERT-family init_from: the layers that get a recurrent sub-layer (gated to zero at the "
            "start): 'all', 'none' (BERT alone), 'last:K', indices such as '0,3', or one letter per layer (H/A)"
        },
    )
    recurrent_cell: str = field(
        default="lstm",
        metadata={"help": "with a BERT-family init_from: the new sub-layers' cell: lstm, gru, rnn, mingru, gla"},
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
    allow_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "with --resume: continue although settings differ from the saved run's (they apply from the "
            "checkpoint on; without this flag the differences are listed and the resume is refused)"
        },
    )
    seed: int = field(default=42, metadata={"help": "seeds the split, the subsets, the model and the data order"})
    num_train_epochs: float = field(default=3.0, metadata={"help": "passes over train (max_steps > 0 wins)"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps in all; -1 uses num_train_epochs"})
    max_train_seconds: float = field(
        default=0.0,
        metadata={"help": "also stop once training (validation excluded) has run this long; 0: no time budget"},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "rows per process per micro-batch"})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "rows per process when scoring"})
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "train on batches of texts of similar length (less padding on texts of very different lengths): "
            "transformers' length-grouped order, drawn from seed and epoch alone, so resume and several processes "
            "stay exact; validation and test keep their order"
        },
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    activation_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "recompute each layer's activations in the backward pass instead of keeping them (transformers' "
            "activation_checkpointing_enable): the same gradients for less training memory and more time"
        },
    )
    checkpoint_every_n_layers: int = field(
        default=1,
        metadata={
            "help": "with activation_checkpointing: recompute only every n-th layer (the first, the (n+1)-th, ...), "
            "the others keep their activations: a middle point between the memory and the time of checkpointing all"
        },
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate of AdamW"})
    new_layers_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "with init_from: peak learning rate of the parameters it did not provide (added recurrent layers, "
            "a fresh head); unset: learning_rate"
        },
    )
    freeze_pretrained_steps: int = field(
        default=0,
        metadata={
            "help": "with init_from: keep the weights it provided fixed (learning rate 0) for the first N optimizer "
            "steps, so that the new layers and head learn first"
        },
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0 turns clipping off"})
    lr_scheduler_type: str = field(default="linear", metadata={"help": f"decay after warm-up: one of {SCHEDULERS}"})
    lr_schedule_by: str = field(
        default="steps",
        metadata={
            "help": "what the decay runs over: 'steps' (to max_steps) or 'seconds' (to max_train_seconds: under a "
            "time budget the rate then reaches its end when the budget does, wherever that step falls; warm-up "
            "stays in steps)"
        },
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of the steps spent warming up"})
    warmup_steps: int = field(default=0, metadata={"help": "warm-up steps; > 0 wins over warmup_ratio"})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (refused where unsupported)"})
    allow_slow_bf16: bool = field(
        default=False,
        metadata={"help": "run bf16 on a CPU without native bfloat16 (AVX2 only), where it is about 10x slower"},
    )
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

# (field, test, what it must be): the range checks of every training setting, in the order they are reported.
RANGES = [
    ("max_length", lambda value: value >= 2, "an integer >= 2"),
    ("tokenizer_vocab_size", lambda value: value >= 1, "a positive integer"),
    ("tokenizer_min_frequency", lambda value: value >= 1, "a positive integer"),
    ("validation_split", lambda value: 0 < value < 1, "between 0 and 1"),
    *[(name, lambda value: value >= 1, "unset or a positive integer")
      for name in ("max_train_samples", "max_eval_samples", "max_test_samples", "save_total_limit",
                   "stop_after_step")],
    *[(name, lambda value: value >= 1, "a positive integer")
      for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                   "logging_steps", "checkpoint_every_n_layers")],
    *[(name, lambda value: value >= 0, "0 or more (0 keeps every weight where it starts)")
      for name in ("learning_rate", "new_layers_learning_rate")],
    ("adam_epsilon", lambda value: value > 0, "above 0"),
    *[(name, lambda value: 0 <= value < 1, "in [0, 1)") for name in ("adam_beta1", "adam_beta2")],
    ("warmup_ratio", lambda value: 0 <= value <= 1, "in [0, 1]"),
    *[(name, lambda value: value >= 0, "0 or more")
      for name in ("weight_decay", "max_grad_norm", "warmup_steps", "eval_steps", "save_steps",
                   "early_stopping_patience", "dataloader_num_workers", "max_train_seconds", "num_train_epochs",
                   "freeze_pretrained_steps")],
    ("max_steps", lambda value: value == -1 or value >= 1, "-1 (use num_train_epochs) or a positive integer"),
]  # fmt: skip


def check_ranges(*argument_groups, ranges=RANGES) -> None:
    """Every value in its range (`ranges`: (field, test, what it must be)), or `UsageError` naming the first one that
    is not."""
    values = {name: value for group in argument_groups for name, value in vars(group).items()}
    for name, test, expected in ranges:
        # None is "unset" wherever a field allows it; the checks are on the values given.
        if values.get(name) is not None and not test(values[name]):
            raise UsageError(f"{name}={values[name]!r} must be {expected}")


def check_choices(model_args: ModelArguments, train_args: TrainArguments) -> None:
    choices = {
        "tokenizer_algorithm": (model_args.tokenizer_algorithm, TOKENIZER_ALGORITHMS),
        "lr_scheduler_type": (train_args.lr_scheduler_type, SCHEDULERS),
        "lr_schedule_by": (train_args.lr_schedule_by, SCHEDULE_CLOCKS),
        "metric_for_best_model": (train_args.metric_for_best_model, SELECTION_METRICS),
        "metrics_backend": (train_args.metrics_backend, METRIC_BACKENDS),
        "report_to": (train_args.report_to, ("tensorboard", "none")),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise UsageError(f"{name}={value!r} is not one of {allowed}")
    if train_args.max_steps <= 0 and train_args.num_train_epochs <= 0:
        raise UsageError("set max_steps or num_train_epochs above 0")
    if train_args.lr_schedule_by == "seconds" and train_args.max_train_seconds <= 0:
        raise UsageError("lr_schedule_by='seconds' decays over the time budget: set max_train_seconds above 0")
    if train_args.lr_schedule_by == "seconds" and train_args.warmup_ratio > 0 and train_args.warmup_steps == 0:
        raise UsageError(
            "lr_schedule_by='seconds' counts the warm-up in steps: set warmup_steps (warmup_ratio is a share of "
            "max_steps, which the time budget ends before), or warmup_ratio=0 for none"
        )
    if train_args.checkpoint_every_n_layers != 1 and not train_args.activation_checkpointing:
        raise UsageError(
            f"checkpoint_every_n_layers={train_args.checkpoint_every_n_layers} says which layers "
            "--activation_checkpointing recomputes: add that flag"
        )
    if train_args.allow_changed_settings and not train_args.resume:
        raise UsageError("--allow_changed_settings only applies with --resume")
    if model_args.init_from is None and (train_args.freeze_pretrained_steps or train_args.new_layers_learning_rate):
        raise UsageError("freeze_pretrained_steps and new_layers_learning_rate apply to a run with --init_from")
    if model_args.recurrent_cell not in RECURRENT_CELLS:
        raise UsageError(f"recurrent_cell={model_args.recurrent_cell!r} is not one of {RECURRENT_CELLS}")
