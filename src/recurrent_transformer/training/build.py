"""What a training run is built from: the data splits, the tokenizer (one rule for every command), the model
config, the model and its optimizer; each builder raises `UsageError` for input it cannot use.

`--init_from` takes this package's saved folders (their body starts the classifier) and BERT-family checkpoints
(BERT, RoBERTa; a folder or a Hub id), which are converted on the fly (`conversion.py`): the source's architecture
replaces the preset, recurrent sub-layers go where `--recurrent_layers` says, gated to zero so that the model starts
from the pretrained function."""

import functools
import json
import math
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from safetensors import safe_open
from tokenizers import Tokenizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoConfig, PretrainedConfig, get_scheduler

from ..cli import UsageError
from ..configuration_recurrent_transformer import RecurrentTransformerConfig
from ..conversion import (
    SOURCE_FAMILIES,
    SOURCE_FIELDS,
    build_converted,
    check_source_config,
    converted_config,
    load_source,
    position_offset,
    recurrent_layer_indices,
)
from ..data import LabelledData, load_labelled_data, load_tokenizer, train_tokenizer, training_texts, wrap_tokenizer
from ..files import read_json
from ..modeling_recurrent_transformer import RecurrentTransformerForSequenceClassification
from ..presets import load_preset, preset_source
from .arguments import DataArguments, ModelArguments

CONFIG_ERRORS = (ValueError, TypeError, StrictDataclassClassValidationError, StrictDataclassFieldValidationError)


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


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=0.5,c=gelu' -> {'a': 1, 'b': 0.5, 'c': 'gelu'}: values read as JSON where they parse, an integer
    given for a float field of the config made a float (the config's strict type check would refuse it)."""
    fields = RecurrentTransformerConfig.__dataclass_fields__
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"config_overrides: {item!r} is not key=value")
        key = key.strip()
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value.strip()
        if key in fields and fields[key].type in (float, float | None) and type(overrides[key]) is int:
            overrides[key] = float(overrides[key])
    return overrides


def preset_config(model_args: ModelArguments, **values) -> RecurrentTransformerConfig:
    """The preset with the run's overrides and `values`; `UsageError` naming the preset if it is invalid."""
    try:
        preset_source(model_args.model_config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        return load_preset(model_args.model_config, **values, **parse_overrides(model_args.config_overrides))
    except CONFIG_ERRORS as error:
        raise UsageError(f"model config {model_args.model_config!r}: {error}") from error


def pretrained_source(model_args: ModelArguments) -> PretrainedConfig | None:
    """The config of a BERT-family `init_from` (converted on the fly); None without init_from or for this package's
    own folders. Read once per init_from: the checks, the config and the model builder all ask."""
    return None if model_args.init_from is None else init_source_config(model_args.init_from)


@functools.cache
def init_source_config(init_from: str) -> PretrainedConfig | None:
    folder = Path(init_from)
    if folder.is_dir():
        model_type = read_json(folder / "config.json", "the config of a saved model").get("model_type")
        if model_type == RecurrentTransformerConfig.model_type:
            return None
        if model_type not in SOURCE_FAMILIES:
            raise UsageError(
                f"init_from: {init_from!r} holds a {model_type!r} model: this package's folders and "
                f"{list(SOURCE_FAMILIES)} checkpoints can start a classifier"
            )
    try:
        source = AutoConfig.from_pretrained(init_from)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"init_from {init_from!r} is not a folder here and did not load as a Hub model "
            f"({type(error).__name__}: {str(error).splitlines()[0]}); without a network, download it first and pass "
            "the folder"
        ) from None
    try:
        check_source_config(source)
    except ValueError as error:
        raise UsageError(f"init_from {init_from!r}: {error}") from None
    return source


def check_pretrained_settings(model_args: ModelArguments, source: PretrainedConfig) -> None:
    """A conversion's settings against its source: the recurrent layers, and overrides that leave the source's
    shape alone."""
    try:
        recurrent_layer_indices(model_args.recurrent_layers, source.num_hidden_layers)
    except ValueError as error:
        raise UsageError(str(error)) from None
    fixed = sorted(set(parse_overrides(model_args.config_overrides)) & set(SOURCE_FIELDS))
    if fixed:
        raise UsageError(f"config_overrides {fixed} come from init_from {model_args.init_from!r} and cannot change")


def learned_positions(model_args: ModelArguments) -> int | None:
    """The most tokens a text may have for the model's learned absolute positions (a preset's, or a BERT-family
    init_from's); None for a model without them (no positions, rotary), whose max_length is not capped."""
    source = pretrained_source(model_args)
    if source is not None:
        return source.max_position_embeddings - position_offset(source)
    config = preset_config(model_args)
    return config.max_position_embeddings if config.position_embedding_type == "absolute" else None


def check_model_settings(model_args: ModelArguments) -> None:
    """The checks on the model that need no data: the preset and its overrides (or a BERT-family init_from and
    its conversion settings), `max_length` against learned absolute positions, the `init_from` folder."""
    source = pretrained_source(model_args)
    if source is not None:
        check_pretrained_settings(model_args, source)
    positions = learned_positions(model_args)  # also checks the preset and its overrides
    if positions is not None and model_args.max_length > positions:
        if source is not None:
            owner, extra = f"the {positions} positions of init_from {model_args.init_from!r}", ""
        else:
            owner = f"max_position_embeddings={positions} of model config {model_args.model_config!r} (learned absolute positions)"
            extra = (
                f", or --config_overrides max_position_embeddings={model_args.max_length} (the new positions start "
                "untrained)"
            )
        raise UsageError(
            f"max_length={model_args.max_length} exceeds {owner}: pass --max_length {positions} or less{extra}"
        )
    if source is None and model_args.init_from is not None:
        init_from = Path(model_args.init_from)
        missing = [name for name in ("config.json", "model.safetensors") if not (init_from / name).is_file()]
        if missing:
            raise UsageError(f"init_from: {str(init_from)!r} is not a saved model folder (no {' or '.join(missing)})")


def build_tokenizer(model_args: ModelArguments, train_split, *, saved_dir: Path | None = None, accelerator=None):
    """The tokenizer of a run, by one rule for every command: the one saved in `saved_dir` (a resumed run, a
    comparison's shared one), else `tokenizer_name`, else `init_from`'s (the vocabulary its embeddings learned),
    else one trained on the training split.

    Tokenizer training is not reproducible (ties between merges follow hash-map order, huggingface/tokenizers
    #1794), so with several processes the main process trains it and sends it to the others."""
    for source in (saved_dir, model_args.tokenizer_name, model_args.init_from):
        if source is not None:
            return load_tokenizer(str(source), model_args.max_length)
    serialized = [None]
    if accelerator is None or accelerator.is_main_process:
        tokenizer = train_tokenizer(
            training_texts(train_split),
            algorithm=model_args.tokenizer_algorithm,
            vocab_size=model_args.tokenizer_vocab_size,
            min_frequency=model_args.tokenizer_min_frequency,
            lowercase=model_args.lowercase,
            model_max_length=model_args.max_length,
        )
        if accelerator is None or accelerator.num_processes == 1:
            return tokenizer
        serialized = [tokenizer.backend_tokenizer.to_str()]
    broadcast_object_list(serialized, from_process=0)
    if accelerator.is_main_process:
        return tokenizer
    return wrap_tokenizer(Tokenizer.from_str(serialized[0]), model_args.max_length)


def build_config(model_args: ModelArguments, tokenizer, data: LabelledData) -> RecurrentTransformerConfig:
    """The preset with this run's vocabulary, labels, padding id and overrides; for a BERT-family init_from, the
    converted source's config with this run's labels."""
    labels = {"num_labels": len(data.label_names), "id2label": data.id2label, "label2id": data.label2id}
    source = pretrained_source(model_args)
    if source is None:
        return preset_config(model_args, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **labels)
    if len(tokenizer) > source.vocab_size:
        raise UsageError(f"the tokenizer has {len(tokenizer)} tokens, init_from's embeddings {source.vocab_size}")
    overrides = parse_overrides(model_args.config_overrides)
    try:
        return converted_config(source, model_args.recurrent_layers, model_args.recurrent_cell, **labels, **overrides)
    except CONFIG_ERRORS as error:
        raise UsageError(f"init_from {model_args.init_from!r}: {error}") from error


def check_init_from(model_args: ModelArguments, config: RecurrentTransformerConfig) -> None:
    """Refuse a pretrained folder whose body does not fit this run's config, before anything is written: every body
    weight must be there with the shape this run builds (a different preset or vocabulary shows up here)."""
    if model_args.init_from is None or pretrained_source(model_args) is not None:
        return  # a conversion maps the source's weights itself
    with torch.device("meta"):
        expected = RecurrentTransformerForSequenceClassification(config).model.state_dict()
    with safe_open(str(Path(model_args.init_from) / "model.safetensors"), framework="pt") as weights:
        saved = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    for name, tensor in expected.items():
        key = f"{RecurrentTransformerForSequenceClassification.base_model_prefix}.{name}"
        if saved.get(key) != tuple(tensor.shape):
            found = f"shape {saved[key]}" if key in saved else "nothing"
            raise UsageError(
                f"init_from {model_args.init_from!r} holds {found} for {key}, this run builds {tuple(tensor.shape)}: "
                f"was it pretrained with preset {model_args.model_config!r} and the same tokenizer?"
            )


def build_model(model_args: ModelArguments, config: RecurrentTransformerConfig) -> tuple:
    """The classifier, the names of its parameters that `init_from` did not provide (None without init_from), and
    a conversion's record (None but for a BERT-family init_from).

    A fresh classifier; or one whose body comes from this package's `init_from` folder (its head, absent there, is
    initialised from the seed as a fresh one would be; the folder's own head, such as an MLM head, is dropped); or a
    converted BERT-family checkpoint, whose classification head is kept only when its labels are this run's."""
    model_class = RecurrentTransformerForSequenceClassification
    if model_args.init_from is None:
        return model_class(config), None, None
    source = pretrained_source(model_args)
    if source is None:
        model, info = model_class.from_pretrained(model_args.init_from, config=config, output_loading_info=True)
        return model, set(info["missing_keys"]), None
    same_labels = {int(key): value for key, value in (source.id2label or {}).items()} == config.id2label
    keep_head = (source.architectures or [""])[0].endswith("ForSequenceClassification") and same_labels
    model, record = build_converted(load_source(model_args.init_from, keep_head=keep_head), config, model_class)
    return model, set(record["new_parameters"]), record


def build_optimizer(
    model,
    learning_rate: float,
    weight_decay: float,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    new_parameters: set[str] | None = None,
    new_learning_rate: float | None = None,
):
    """AdamW with weight decay on matrices only: not on biases, norms or other 1-d parameters (BERT's and nanoGPT's
    recipe). With `new_parameters` (those init_from did not provide), the others form groups marked `provided`
    (what `freeze_pretrained_steps` holds still) and the new ones get `new_learning_rate` when it is set."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            provided = new_parameters is not None and name not in new_parameters
            groups.setdefault((provided, param.ndim >= 2), []).append(param)
    param_groups = [
        {
            "params": params,
            "weight_decay": weight_decay if decays else 0.0,
            "lr": learning_rate if provided or new_learning_rate is None else new_learning_rate,
            "provided": provided,
        }
        for (provided, decays), params in groups.items()
    ]
    return torch.optim.AdamW(param_groups, lr=learning_rate, betas=betas, eps=eps)


class BudgetSpent:
    """The share of the time budget spent, as the loop last agreed on it across processes (it sets `seconds` to the
    most training seconds any process counted, after each optimizer step, and to the checkpoint's on resume): what a
    schedule with lr_schedule_by='seconds' decays over. Every process reads the same value, so their learning rates
    agree."""

    def __init__(self, budget_seconds: float):
        self.budget_seconds, self.seconds = budget_seconds, 0.0

    def __call__(self) -> float:
        return min(self.seconds / self.budget_seconds, 1.0)


# The decay of transformers' schedules of the same names, as a function of the share of the budget spent.
TIME_DECAYS = {
    "linear": lambda spent: 1.0 - spent,
    "cosine": lambda spent: 0.5 * (1.0 + math.cos(math.pi * spent)),
    "constant_with_warmup": lambda spent: 1.0,
}


def time_schedule(kind: str, warmup_steps: int, spent: BudgetSpent):
    """The learning-rate factor of a schedule that decays over training seconds: the linear warm-up over steps times
    the decay of the budget's spent share (so a warm-up that ends at 3 % of the budget peaks at 0.97 on linear)."""
    decay = TIME_DECAYS[kind]

    def factor(step: int) -> float:
        return min(1.0, step / warmup_steps if warmup_steps else 1.0) * decay(spent())

    return factor


def build_scheduler(
    optimizer,
    kind: str,
    warmup_steps: int,
    max_steps: int,
    num_processes: int,
    frozen_steps: int = 0,
    spent: BudgetSpent | None = None,
):
    """transformers' schedule; a prepared scheduler steps once per process at each optimizer step, so its lengths
    count all processes. With `spent`, the decay runs over the time budget instead of max_steps (`time_schedule`).
    With `frozen_steps`, the groups marked `provided` keep a learning rate of 0 (AdamW then changes neither their
    values nor, through weight decay, their size) for that many optimizer steps."""
    if spent is not None:
        factor = time_schedule(kind, warmup_steps * num_processes, spent)
        schedule = LambdaLR(optimizer, factor)
    else:
        schedule = get_scheduler(
            kind,
            optimizer=optimizer,
            num_warmup_steps=warmup_steps * num_processes,
            num_training_steps=max_steps * num_processes,
        )
        factor = schedule.lr_lambdas[0]
    if frozen_steps <= 0:
        return schedule
    until = frozen_steps * num_processes

    def held(step: int) -> float:
        return 0.0 if step < until else factor(step)

    return LambdaLR(optimizer, [held if group["provided"] else factor for group in optimizer.param_groups])
