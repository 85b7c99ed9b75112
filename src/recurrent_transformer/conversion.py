"""Convert a pretrained BERT or RoBERTa checkpoint into a recurrent Transformer with the same weights.

The converted model is a post-norm stack (`norm_placement="post"`) with BERT's embedding LayerNorm, absolute
positions and biases, so the pretrained weights load unchanged. The layers chosen by the caller get a recurrent
sub-layer before attention, h = h + gate * dropout(R(norm(h))), with the gate at zero: at step 0 the model computes
exactly what the source computed, and fine-tuning learns what the recurrence adds. With no recurrent layers the
same code path gives the "BERT alone" baseline of a comparison.

    model, record = convert_checkpoint("bert-base-uncased", recurrent_layers="last:4", num_labels=2)
    save_converted(model, record, "runs/bert-lstm")   # model, tokenizer and conversion.json

This module is not one of the two remote-code files: it may import transformers' BERT classes.
"""

import copy
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .cli import UsageError, parse_arguments, run_command
from .configuration_recurrent_transformer import RecurrentTransformerConfig
from .data import without_token_types
from .files import check_output_dir, is_hub_id, write_json
from .modeling_recurrent_transformer import (
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
    RecurrentTransformerModel,
    RecurrentTransformerPreTrainedModel,
)

logger = logging.get_logger(__name__)

# model_type -> prefix of its transformers class names
SOURCE_FAMILIES = {"bert": "Bert", "roberta": "Roberta"}
# Source heads whose weights carry over, with the class that holds them.
CARRIED_HEADS = {
    "ForSequenceClassification": RecurrentTransformerForSequenceClassification,
    "ForTokenClassification": RecurrentTransformerForTokenClassification,
}
# Pre-training heads: their encoder is what was pretrained, and the head is left behind.
PRETRAINING_HEADS = ("Model", "ForMaskedLM", "ForPreTraining", "LMHeadModel", "ForCausalLM")
TARGET_CLASSES = (
    RecurrentTransformerModel,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
)
# One BERT-family layer's modules -> ours (the same tensors, renamed).
LAYER_NAMES = {
    "attention.self.query": "attention.q_proj",
    "attention.self.key": "attention.k_proj",
    "attention.self.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "feed_forward.up_proj",
    "output.dense": "feed_forward.down_proj",
    "output.LayerNorm": "feed_forward_norm",
}
# Fields the source's shape decides; changing one would leave weights without a place.
SOURCE_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "layer_types", "layer_pattern", "position_embedding_type", "max_position_embeddings", "attention_bias",
    "layer_norm_eps", "norm_placement", "embedding_norm", "recurrent_gate", "classifier_pooler", "pad_token_id",
)  # fmt: skip
RECORD_FILE = "conversion.json"
SPEC_HELP = (
    "'all', 'none', 'last:K', comma-separated layer indices such as '0,3', a list of indices, or one letter per "
    "layer (H = recurrence + attention, A = attention only) such as 'AAHH'"
)


def recurrent_layer_indices(spec: str | Sequence[int], num_hidden_layers: int) -> list[int]:
    """The layers that get a recurrent sub-layer, from `spec` (see `SPEC_HELP`), sorted."""
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() in ("all", "none"):
            return list(range(num_hidden_layers)) if text.lower() == "all" else []
        if re.fullmatch(r"[HA]+", text):
            if len(text) != num_hidden_layers:
                raise ValueError(
                    f"recurrent_layers={spec!r} has {len(text)} letters but the source has {num_hidden_layers} layers"
                )
            return [index for index, letter in enumerate(text) if letter == "H"]
        last = re.fullmatch(r"last:(\d+)", text, flags=re.IGNORECASE)
        if last:
            count = int(last.group(1))
            if count > num_hidden_layers:
                raise ValueError(
                    f"recurrent_layers={spec!r} asks for more than the source's {num_hidden_layers} layers"
                )
            return list(range(num_hidden_layers - count, num_hidden_layers))
        if not re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
            raise ValueError(f"recurrent_layers={spec!r} does not parse: use {SPEC_HELP}")
        indices = [int(part) for part in text.split(",")]
    elif isinstance(spec, Sequence) and all(isinstance(i, int) and not isinstance(i, bool) for i in spec):
        indices = list(spec)
    else:
        raise ValueError(f"recurrent_layers={spec!r} does not parse: use {SPEC_HELP}")
    outside = [index for index in indices if not 0 <= index < num_hidden_layers]
    if outside:
        raise ValueError(
            f"recurrent_layers={spec!r} names layers {outside} outside 0..{num_hidden_layers - 1} of the source"
        )
    return sorted(set(indices))


def check_source_config(source_config: PretrainedConfig) -> str:
    """The source's class-name prefix ("Bert", "Roberta"), or a ValueError saying why it cannot be converted."""
    model_type = getattr(source_config, "model_type", None)
    if model_type not in SOURCE_FAMILIES:
        raise ValueError(
            f"source model_type {model_type!r} is not supported: convertible model types are {list(SOURCE_FAMILIES)}"
        )
    if getattr(source_config, "is_decoder", False) or getattr(source_config, "add_cross_attention", False):
        raise ValueError(
            "the source is configured as a decoder (is_decoder / add_cross_attention): only encoders convert"
        )
    if getattr(source_config, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ValueError(
            f"source position_embedding_type={source_config.position_embedding_type!r}: only absolute positions convert"
        )
    if not isinstance(source_config.hidden_act, str):
        raise ValueError(f"source hidden_act={source_config.hidden_act!r} must be an activation name")
    return SOURCE_FAMILIES[model_type]


def position_offset(source_config: PretrainedConfig) -> int:
    """First row of the source's position table: RoBERTa numbers positions from padding_idx + 1."""
    return source_config.pad_token_id + 1 if source_config.model_type == "roberta" else 0


def converted_config(
    source_config: PretrainedConfig,
    recurrent_layers: str | Sequence[int] = "all",
    recurrent_cell: str = "lstm",
    recurrent_hidden_size: int | None = None,
    bidirectional: bool = True,
    **overrides,
) -> RecurrentTransformerConfig:
    """The config of the converted model: the source's shape in BERT's layout, recurrence where asked."""
    check_source_config(source_config)
    fixed = sorted(set(overrides) & set(SOURCE_FIELDS))
    if fixed:
        raise ValueError(f"{', '.join(fixed)} come from the source checkpoint and cannot be overridden")
    layers = recurrent_layer_indices(recurrent_layers, source_config.num_hidden_layers)
    if not bidirectional:
        logger.warning("bidirectional=False makes attention causal: the converted model no longer computes the source")
    classifier_dropout = source_config.classifier_dropout
    values = dict(
        vocab_size=source_config.vocab_size,
        hidden_size=source_config.hidden_size,
        num_hidden_layers=source_config.num_hidden_layers,
        num_attention_heads=source_config.num_attention_heads,
        intermediate_size=source_config.intermediate_size,
        hidden_act=source_config.hidden_act,
        layer_types=["hybrid" if i in layers else "full_attention" for i in range(source_config.num_hidden_layers)],
        recurrent_cell=recurrent_cell,
        recurrent_hidden_size=recurrent_hidden_size,
        bidirectional=bidirectional,
        position_embedding_type="absolute",
        max_position_embeddings=source_config.max_position_embeddings - position_offset(source_config),
        attention_bias=True,
        # float(): a config.json may hold 0 where the strict config wants 0.0
        hidden_dropout_prob=float(source_config.hidden_dropout_prob),
        attention_dropout=float(source_config.attention_probs_dropout_prob),
        classifier_dropout=None if classifier_dropout is None else float(classifier_dropout),
        layer_norm_eps=float(source_config.layer_norm_eps),
        initializer_range=float(source_config.initializer_range),
        pad_token_id=source_config.pad_token_id,
        bos_token_id=source_config.bos_token_id,
        eos_token_id=source_config.eos_token_id,
        norm_placement="post",
        embedding_norm=True,
        recurrent_gate=True,
        recurrent_gate_init=0.0,
        classifier_pooler=True,  # BERT's pooler, RoBERTa's classification dense: both dense + tanh on token 0
        classifier_pooling="first" if bidirectional else "last",
        problem_type=source_config.problem_type,
    )
    # The source's label names stay unless the caller gives others or a different number of labels.
    same_labels = overrides.get("num_labels", source_config.num_labels) == source_config.num_labels
    if same_labels and not {"id2label", "label2id"} & set(overrides):
        overrides.pop("num_labels", None)
        values.update(id2label=dict(source_config.id2label), label2id=dict(source_config.label2id))
    return RecurrentTransformerConfig(**{**values, **overrides})


@dataclass
class Source:
    """A loaded source model. `missing` names weights its checkpoint lacked (initialised fresh on loading, so not
    pretrained); `unused` names checkpoint weights the loading class left out (a pre-training head)."""

    model: PreTrainedModel
    name: str
    architecture: str
    missing: set[str] = field(default_factory=set)
    unused: set[str] = field(default_factory=set)


def load_source(source: str | os.PathLike | PreTrainedModel, keep_head: bool = True) -> Source:
    """The source model from a folder, a Hub id or an already loaded model.

    A folder or Hub id is loaded with the class that keeps the head we can carry (sequence or token
    classification), and otherwise (or with `keep_head=False`: a classifier whose labels are not the ones wanted)
    with the base class, which keeps BERT's pretrained pooler.
    """
    if isinstance(source, PreTrainedModel):
        check_source_config(source.config)
        return Source(source, source.name_or_path or type(source).__name__, type(source).__name__)
    text = os.fspath(source)
    if not Path(text).is_dir() and not is_hub_id(text):
        raise ValueError(f"source folder {text!r} does not exist")
    try:
        source_config = AutoConfig.from_pretrained(text)
    except OSError as error:
        raise ValueError(f"source {text!r} is neither a model folder nor a Hub model id that loads: {error}") from error
    prefix = check_source_config(source_config)
    architecture = (source_config.architectures or [f"{prefix}Model"])[0]
    head = source_head(prefix, architecture)
    class_name = prefix + (head if head in CARRIED_HEADS and keep_head else "Model")
    model, info = getattr(transformers, class_name).from_pretrained(text, output_loading_info=True)
    return Source(model, text, architecture, set(info["missing_keys"]), set(info["unexpected_keys"]))


def source_head(prefix: str, architecture: str) -> str:
    """The head part of a source class name ("ForMaskedLM"), or a ValueError when it cannot be carried or left."""
    head = architecture[len(prefix) :] if architecture.startswith(prefix) else architecture
    if head not in CARRIED_HEADS and head not in PRETRAINING_HEADS:
        supported = [prefix + name for name in (*PRETRAINING_HEADS, *CARRIED_HEADS)]
        raise ValueError(
            f"source architecture {architecture} has a head that cannot be mapped: supported are {supported}; "
            f"to convert only its encoder, load it with {prefix}Model.from_pretrained and pass that model"
        )
    return head


def carries_head(head: str, model_class: type) -> bool:
    """Whether the source's head goes into `model_class`; a ValueError when the two do not fit together."""
    if model_class not in TARGET_CLASSES:
        raise ValueError(
            f"model_class {getattr(model_class, '__name__', model_class)} is not a conversion target: use one of "
            f"{[cls.__name__ for cls in TARGET_CLASSES]} (BERT's masked-LM head, with its dense, LayerNorm and "
            "vocabulary bias, has no counterpart in RecurrentTransformerForMaskedLM)"
        )
    target = CARRIED_HEADS.get(head)
    if target is not None and model_class not in (target, RecurrentTransformerModel):
        raise ValueError(
            f"the source's {head[3:]} head cannot be mapped to {model_class.__name__}: convert to "
            f"{target.__name__}, or to RecurrentTransformerModel for the encoder alone"
        )
    return target is model_class


def take(source_state: dict, target: dict, source_name: str, target_name: str) -> None:
    """Move a module's weight and bias from the source's state dict into ours, where the source has them."""
    for suffix in ("weight", "bias"):
        if f"{source_name}.{suffix}" in source_state:
            target[f"{target_name}.{suffix}"] = source_state.pop(f"{source_name}.{suffix}")


def head_names(prefix: str, body: str, model_class: type, carry_head: bool) -> dict[str, str]:
    """Source head modules -> ours: the classifier when it is carried, and BERT's pooler, which is pretrained with
    the encoder (next-sentence prediction) and which BertForSequenceClassification fine-tunes from."""
    names = {}
    if model_class is RecurrentTransformerForSequenceClassification and prefix == "Bert":
        names[f"{body}pooler.dense"] = "pooler"
    if carry_head and model_class is RecurrentTransformerForSequenceClassification and prefix == "Roberta":
        names.update({"classifier.dense": "pooler", "classifier.out_proj": "score"})  # dense + tanh on <s>
    elif carry_head:
        names["classifier"] = "score"
    return names


def converted_state_dict(
    source: PreTrainedModel, config: RecurrentTransformerConfig, model_class: type, missing: set[str] = frozenset()
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our state dict for `model_class` from the source's weights, and the source weights left behind.

    `missing` names source weights that its checkpoint lacked: they are not pretrained and are not carried.
    """
    prefix = check_source_config(source.config)
    head = source_head(prefix, type(source).__name__)
    carry_head = carries_head(head, model_class)
    if carry_head and config.num_labels != source.config.num_labels:
        raise ValueError(
            f"num_labels={config.num_labels} differs from the {source.config.num_labels} labels of the source's head: "
            "keep the source's labels, or convert to RecurrentTransformerModel and add a new head"
        )
    body = "" if source is source.base_model else f"{source.base_model_prefix}."
    state = {name: tensor.detach() for name, tensor in source.state_dict().items() if name not in missing}
    ours = "" if model_class is RecurrentTransformerModel else "model."
    target: dict[str, torch.Tensor] = {}

    embeddings = f"{body}embeddings."
    target[f"{ours}embed_tokens.weight"] = state.pop(f"{embeddings}word_embeddings.weight")
    # Single texts always have token type 0, so its row is a constant that joins every position's row.
    token_type = state.pop(f"{embeddings}token_type_embeddings.weight")[0]
    positions = state.pop(f"{embeddings}position_embeddings.weight")[position_offset(source.config) :]
    target[f"{ours}embed_positions.weight"] = positions.float() + token_type.float()
    take(state, target, f"{embeddings}LayerNorm", f"{ours}embed_norm")
    for index in range(config.num_hidden_layers):
        for source_name, target_name in LAYER_NAMES.items():
            take(state, target, f"{body}encoder.layer.{index}.{source_name}", f"{ours}layers.{index}.{target_name}")

    for source_name, target_name in head_names(prefix, body, model_class, carry_head).items():
        take(state, target, source_name, target_name)
    return {name: tensor.clone() for name, tensor in target.items()}, sorted(state)


def convert_checkpoint(
    source: str | os.PathLike | PreTrainedModel,
    model_class: type[RecurrentTransformerPreTrainedModel] = RecurrentTransformerForSequenceClassification,
    recurrent_layers: str | Sequence[int] = "all",
    recurrent_cell: str = "lstm",
    recurrent_hidden_size: int | None = None,
    bidirectional: bool = True,
    **config_overrides,
) -> tuple[RecurrentTransformerPreTrainedModel, dict]:
    """A `model_class` holding the source's weights, with recurrent sub-layers in `recurrent_layers` (freshly
    initialised, gated to zero), and the conversion record. `config_overrides` set other config fields (dropouts,
    `num_labels` for a new head, `recurrent_window`, ...). The model comes back in eval mode, as from_pretrained's."""
    loaded = load_source(source)
    config = converted_config(
        loaded.model.config, recurrent_layers, recurrent_cell, recurrent_hidden_size, bidirectional, **config_overrides
    )
    model, record = build_converted(loaded, config, model_class)
    return model.eval(), record


def build_converted(
    loaded: Source, config: RecurrentTransformerConfig, model_class: type[RecurrentTransformerPreTrainedModel]
) -> tuple[RecurrentTransformerPreTrainedModel, dict]:
    """`model_class(config)` with the loaded source's weights in place (the new parts initialised as the current
    seed gives them), and the conversion record; `config` comes from `converted_config` of the same source."""
    state, left_behind = converted_state_dict(loaded.model, config, model_class, loaded.missing)
    model = model_class(config)
    _, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(f"conversion produced weights that {model_class.__name__} lacks: {unexpected}")
    left_behind = sorted({*left_behind, *loaded.unused})
    return model, conversion_record(loaded, model, new_parameter_names(model, state), left_behind)


def new_parameter_names(model: torch.nn.Module, pretrained: Iterable[str]) -> list[str]:
    """Parameters of `model` that did not come from the source (the `pretrained` state-dict names): the recurrent
    sub-layers with their norms and gates, and a head the source did not have. Freeze everything else for a
    warm-up, or give these their own learning rate."""
    pretrained = set(pretrained)
    return [name for name, _ in model.named_parameters() if name not in pretrained]


def conversion_record(
    source: Source, model: RecurrentTransformerPreTrainedModel, new_parameters: list[str], left_behind: list[str]
) -> dict:
    """What was converted, from what, and which parameters are new: JSON-ready, for `conversion.json`."""
    config = model.config
    if isinstance(model, RecurrentTransformerModel):
        head = "none"
    else:
        head = "new" if "score.weight" in new_parameters else "pretrained"
    return {
        "source": source.name,
        "source_model_type": source.model.config.model_type,
        "source_architecture": source.architecture,
        "model_class": type(model).__name__,
        "recurrent_layers": [index for index, kind in enumerate(config.layer_types) if kind == "hybrid"],
        "recurrent_cell": config.recurrent_cell,
        "recurrent_hidden_size": config.recurrent_hidden_size,
        "bidirectional": config.bidirectional,
        "recurrent_gate_init": config.recurrent_gate_init,
        "head": head,
        "new_parameters": new_parameters,
        "source_parameters_left_behind": left_behind,
        "transformers_version": transformers.__version__,
    }


def save_converted(
    model: RecurrentTransformerPreTrainedModel,
    record: dict,
    folder: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
) -> Path:
    """Write a model folder: `save_pretrained` (safetensors, config.json with the full auto_map, the two code files),
    the tokenizer (the source's unless one is given) and `conversion.json`. It loads with the Auto classes, or with
    `trust_remote_code=True` where the package is not installed."""
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = load_tokenizer(tokenizer if tokenizer is not None else record["source"])
    # AutoTokenizer builds a tokenizer of special tokens only from a folder without tokenizer files (5 tokens for
    # BERT), so a far smaller vocabulary than the embeddings' means the source's tokenizer was not found.
    if not model.config.vocab_size // 2 <= len(tokenizer) <= model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}: it is "
            "not the source's tokenizer (does the source folder hold its tokenizer files?); pass tokenizer="
        )
    # The converted model folds token type 0 into its positions and takes no token_type_ids: a tokenizer that
    # still returned them would pass them on, where they would be silently ignored.
    tokenizer = without_token_types(copy.deepcopy(tokenizer))  # the model folds token type 0 into its positions
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / RECORD_FILE, record)
    return folder


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(os.fspath(name_or_path))
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"no tokenizer loads from {os.fspath(name_or_path)!r} ({error}): pass tokenizer= to save_converted"
        ) from error


def convert_to_folder(
    source: str | os.PathLike | PreTrainedModel,
    folder: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
    **convert_kwargs,
) -> tuple[RecurrentTransformerPreTrainedModel, dict]:
    """`convert_checkpoint(source, **convert_kwargs)`, then `save_converted` into `folder`."""
    model, record = convert_checkpoint(source, **convert_kwargs)
    save_converted(model, record, folder, tokenizer)
    return model, record


def load_conversion_record(folder: str | os.PathLike) -> dict | None:
    """The `conversion.json` beside a converted model, or None for a folder that was not converted."""
    path = Path(folder) / RECORD_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# -- the command: recurrent-transformer convert ------------------------------------------------------------------

HEADS = {
    "sequence-classification": RecurrentTransformerForSequenceClassification,
    "token-classification": RecurrentTransformerForTokenClassification,
    "none": RecurrentTransformerModel,
}


@dataclass
class ConvertArguments:
    source: str = field(
        metadata={"help": "a BERT-family checkpoint: a folder, or a Hub id such as bert-base-chinese or hfl/rbt3"}
    )
    output_dir: str = field(metadata={"help": "the folder to write: model, code files, tokenizer, conversion.json"})
    recurrent_layers: str = field(default="all", metadata={"help": SPEC_HELP})
    recurrent_cell: str = field(default="lstm", metadata={"help": "lstm, gru, rnn, mingru or gla"})
    recurrent_hidden_size: int | None = field(default=None, metadata={"help": "state width; unset: hidden_size"})
    head: str = field(default="sequence-classification", metadata={"help": f"one of {list(HEADS)}"})
    num_labels: int | None = field(
        default=None, metadata={"help": "labels of a new classification head; unset: the source's"}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a model already in output_dir"})


def convert_command(args: ConvertArguments) -> dict:
    """Check, convert and write the folder; returns the conversion record."""
    if args.head not in HEADS:
        raise UsageError(f"head={args.head!r} is not one of {list(HEADS)}")
    check_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, can_resume=False)
    overrides = {} if args.num_labels is None else {"num_labels": args.num_labels}
    try:
        model, record = convert_checkpoint(
            args.source, HEADS[args.head], args.recurrent_layers, args.recurrent_cell, args.recurrent_hidden_size,
            **overrides,
        )  # fmt: skip
        tokenizer = load_tokenizer(args.source)
    except (ValueError, OSError) as error:
        raise UsageError(str(error).splitlines()[0]) from None
    save_converted(model, record, args.output_dir, tokenizer)
    print(
        f"wrote {args.output_dir}: {record['model_class']} from {record['source']}, recurrence in layers "
        f"{record['recurrent_layers']} ({record['recurrent_cell']}), {len(record['new_parameters'])} new parameters"
    )
    return record


def run(argv: list[str]) -> dict:
    (args,) = parse_arguments((ConvertArguments,), argv)
    return convert_command(args)


def main(argv: list[str] | None = None) -> dict:
    """Convert as the command line says. Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
