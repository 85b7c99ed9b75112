"""A comparison's settings and its plan: which presets (the first is the parameter reference), which seeds, which
split, which '+MLM' rows; every check that needs no data, and the parameter-count check once the vocabulary is
known.

Besides the model presets, two names start a row from a pretrained BERT-family checkpoint (`--pretrained_model`,
converted on the fly): `pretrained` (the checkpoint alone, "BERT alone") and `pretrained+<cell>` (the same with
recurrent sub-layers in `--pretrained_recurrent_layers`, gated to zero at the start): the seed's experiment on a
pretrained base. Their rows use the checkpoint's tokenizer, and their parameter counts (the recurrence's own
difference) are outside the tolerance check of the from-scratch presets."""

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cli import UsageError, read_yaml
from ..data import load_tokenizer
from ..files import check_output_dir
from ..modeling_recurrent_transformer import RecurrentTransformerForSequenceClassification
from ..training.arguments import RECURRENT_CELLS, DataArguments, ModelArguments, TrainArguments
from ..training.build import build_config, learned_positions
from ..training.classifier import check_settings as check_run_settings
from .baseline import SVM_ANALYZERS
from .report import MLM_SUFFIX

logger = logging.getLogger(__name__)

# Train settings the comparison sets per run, and where the user sets them instead.
PER_RUN_SETTINGS = {
    "model_config": "--presets",
    "init_from": "--pretrain_steps (MLM runs are pre-trained here)",
    "seed": "--seeds, and --split_seed for the data split",
    "stop_after_step": "--resume after an interruption",
    "allow_changed_settings": "--resume (its own rules for what may change)",
    "recurrent_layers": "--presets pretrained+<cell> with --pretrained_recurrent_layers",
    "recurrent_cell": "--presets pretrained+<cell>",
}
PRETRAINED = "pretrained"  # preset names 'pretrained' and 'pretrained+<cell>'


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
    pretrained_model: str | None = field(
        default=None,
        metadata={
            "help": "a BERT-family checkpoint (folder or Hub id) for the presets 'pretrained' (it alone) and "
            "'pretrained+<cell>' (with recurrent sub-layers), converted on the fly"
        },
    )
    pretrained_recurrent_layers: str = field(
        default="all",
        metadata={"help": "the layers of 'pretrained+<cell>' rows that get recurrence ('all', 'last:K', ...)"},
    )
    parallel_runs: int = field(
        default=1,
        metadata={
            "help": "runs trained at once, each in its own process: several small runs share one GPU; on CPU each "
            "gets cpu_count / N threads unless OMP_NUM_THREADS is set. 1: one after another, in this process"
        },
    )


ARGUMENT_CLASSES = (CompareArguments, ModelArguments, DataArguments, TrainArguments)


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
    pretrained_model: str | None = None
    pretrained_layers: str = "all"
    max_length: int = 0  # the shared --max_length
    # Presets whose learned absolute positions are fewer than max_length: their runs cut texts at their positions.
    position_limits: dict[str, int] = field(default_factory=dict)


def refuse_per_run_settings(argv: list[str]) -> None:
    """A per-run setting named in the YAML file or the flags, even at its default value, would be silently
    replaced: say where it belongs instead."""
    given = {arg[2:].split("=")[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    if argv and argv[0].endswith((".yaml", ".yml")):
        given |= set(read_yaml(argv[0], ARGUMENT_CLASSES))
    for name, where in PER_RUN_SETTINGS.items():
        if name in given:
            raise UsageError(f"{name} is set per run by the comparison; use {where}")


def split_list(text: str | None, name: str, kind=str) -> list:
    """'a, b' -> ['a', 'b'] converted by `kind`; `UsageError` naming the setting when a value does not convert."""
    items = [item.strip() for item in str(text or "").split(",") if item.strip()]
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise UsageError(f"{name}={text!r} is not a comma-separated list of {kind.__name__} values") from None


def pretrained_cell(preset: str) -> str | None:
    """'' for the preset 'pretrained', the cell of 'pretrained+<cell>', None for a model preset."""
    if preset == PRETRAINED:
        return ""
    return preset.removeprefix(f"{PRETRAINED}+") if preset.startswith(f"{PRETRAINED}+") else None


def preset_label(preset: str, pretrained_model: str | None = None) -> str:
    """A preset's name in the table: the name itself, a JSON file's stem, or the pretrained checkpoint's name
    (with '+<cell>')."""
    cell = pretrained_cell(preset)
    if cell is not None:
        return Path(pretrained_model or PRETRAINED).name + (f"+{cell}" if cell else "")
    return Path(preset).stem if preset.endswith(".json") else preset


def split_seed_for(seeds: list[int], split_seed: int | None) -> int:
    """The seed that cuts the validation split: --split_seed, or by default the first seed."""
    return seeds[0] if split_seed is None else split_seed


def row_label(plan: Plan, preset: str, with_mlm: bool) -> str:
    """A preset's name in the table, with the '+MLM' suffix for its pre-trained row."""
    return plan.labels[preset] + (MLM_SUFFIX if with_mlm else "")


def per_run_arguments(model_args, data_args, train_args, plan: Plan, preset: str, seed: int, init_from, output_dir):
    """The train arguments of one run: the shared settings with this run's preset, seed and folder; a pretrained
    row starts from the checkpoint (with its tokenizer), recurrence where its name says."""
    cell = pretrained_cell(preset)
    model_args = dataclasses.replace(model_args, max_length=run_max_length(plan, preset, model_args.max_length))
    if cell is None:
        model = dataclasses.replace(
            model_args, model_config=preset, init_from=None if init_from is None else str(init_from)
        )
    else:
        layers = plan.pretrained_layers if cell else "none"
        model = dataclasses.replace(
            model_args, init_from=plan.pretrained_model, tokenizer_name=None, recurrent_layers=layers,
            recurrent_cell=cell or model_args.recurrent_cell,
        )  # fmt: skip
    training = dataclasses.replace(
        train_args, output_dir=str(output_dir), seed=seed, resume=False, overwrite_output_dir=True
    )
    return model, data_args, training


def run_max_length(plan: Plan, preset: str, max_length: int) -> int:
    """The max_length of `preset`'s runs: the shared one, or its learned positions where they are fewer."""
    return min(max_length, plan.position_limits.get(preset, max_length))


def position_limits(model_args, data_args, train_args, plan: Plan) -> dict[str, int]:
    """Presets (or a pretrained checkpoint's rows) with fewer learned absolute positions than the shared max_length,
    and their positions: rather than refuse the comparison, their runs cut texts there (the report says so)."""
    limits = {}
    for preset in plan.presets:
        run_model_args = per_run_arguments(model_args, data_args, train_args, plan, preset, plan.seeds[0], None, "")[0]
        positions = learned_positions(run_model_args)
        if positions is not None and positions < model_args.max_length:
            limits[preset] = positions
    return limits


def truncation_note(plan: Plan, preset: str) -> str | None:
    """Why a preset's runs use a shorter max_length than the comparison's (None where they do not)."""
    if preset not in plan.position_limits:
        return None
    return (
        f"{plan.labels[preset]} has {plan.position_limits[preset]} learned absolute positions: its runs cut texts at "
        f"max_length {plan.position_limits[preset]} (the comparison's max_length is {plan.max_length})"
    )


def check_compare_settings(compare_args: CompareArguments) -> tuple[list[str], list[int], list[str], tuple]:
    """The comparison's own settings: presets, seeds, '+MLM' presets and the SVM's C values."""
    presets = split_list(compare_args.presets, "presets")
    seeds = split_list(compare_args.seeds, "seeds", int)
    if not presets or not seeds:
        raise UsageError("name at least one preset (--presets) and one seed (--seeds)")
    for name, values in (("presets", presets), ("seeds", seeds)):
        if len(set(values)) != len(values):
            raise UsageError(f"{name} has duplicates: {values}")
    if len({preset_label(preset, compare_args.pretrained_model) for preset in presets}) != len(presets):
        raise UsageError(f"presets {presets} share a name: the table could not tell them apart")
    check_pretrained_presets(compare_args, presets)
    from_scratch = [preset for preset in presets if pretrained_cell(preset) is None]
    pretrain_presets = split_list(compare_args.pretrain_presets, "pretrain_presets") or from_scratch
    unknown = [preset for preset in pretrain_presets if preset not in from_scratch]
    if unknown and compare_args.pretrain_steps > 0:
        raise UsageError(
            f"pretrain_presets {unknown} are not among the model presets {from_scratch} (pretrained rows start "
            "from their checkpoint)"
        )
    ranges = {
        "pretrain_steps": compare_args.pretrain_steps >= 0,
        "parallel_runs": compare_args.parallel_runs >= 1,
        "parameter_tolerance": 0 <= compare_args.parameter_tolerance < 1,
        "pretrain_learning_rate": compare_args.pretrain_learning_rate > 0,
        "mlm_probability": 0 < compare_args.mlm_probability < 1,
    }
    for name, fine in ranges.items():
        if not fine:
            raise UsageError(f"{name}={getattr(compare_args, name)!r} is out of range (see --help)")
    if compare_args.svm_analyzer not in SVM_ANALYZERS:
        raise UsageError(f"svm_analyzer={compare_args.svm_analyzer!r} is not one of {SVM_ANALYZERS}")
    c_values = tuple(split_list(compare_args.svm_c_values, "svm_c_values", float))
    if compare_args.svm_baseline and (not c_values or min(c_values) <= 0):
        raise UsageError(f"svm_c_values={compare_args.svm_c_values!r} must name C values above 0")
    return presets, seeds, pretrain_presets, c_values


def check_pretrained_presets(compare_args: CompareArguments, presets: list[str]) -> None:
    cells = [pretrained_cell(preset) for preset in presets if pretrained_cell(preset) is not None]
    if cells and compare_args.pretrained_model is None:
        raise UsageError("the presets 'pretrained' and 'pretrained+<cell>' need --pretrained_model")
    unknown = [cell for cell in cells if cell and cell not in RECURRENT_CELLS]
    if unknown:
        raise UsageError(f"pretrained+{unknown[0]}: the cell is not one of {RECURRENT_CELLS}")


def check_settings(compare_args: CompareArguments, model_args, data_args, train_args) -> Plan:
    """Every check that needs no data; touches nothing."""
    defaults = {name: field_.default for name, field_ in TrainArguments.__dataclass_fields__.items()}
    defaults |= {name: field_.default for name, field_ in ModelArguments.__dataclass_fields__.items()}
    for args in (model_args, train_args):
        for name, where in PER_RUN_SETTINGS.items():
            if hasattr(args, name) and getattr(args, name) != defaults[name]:
                raise UsageError(f"{name} is set per run by the comparison; use {where}")
    presets, seeds, pretrain_presets, c_values = check_compare_settings(compare_args)
    output_dir = check_output_dir(
        train_args.output_dir, overwrite=train_args.overwrite_output_dir, resume=train_args.resume
    )
    labels = {preset: preset_label(preset, compare_args.pretrained_model) for preset in presets}
    pretrain = pretrain_presets if compare_args.pretrain_steps > 0 else []
    split_seed = split_seed_for(seeds, data_args.split_seed)
    plan = Plan(
        presets, labels, seeds, split_seed, pretrain, c_values, output_dir,
        compare_args.pretrained_model, compare_args.pretrained_recurrent_layers, model_args.max_length,
    )  # fmt: skip
    plan.position_limits = position_limits(model_args, data_args, train_args, plan)
    for preset in plan.position_limits:
        logger.info(truncation_note(plan, preset))
    check = output_dir / "check"
    for preset in presets:  # the training run's own checks (preset, ranges, max_length, ...) on one run's settings
        check_run_settings(*per_run_arguments(model_args, data_args, train_args, plan, preset, seeds[0], None, check))
    return plan


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
    source_tokenizer = load_tokenizer(plan.pretrained_model) if plan.pretrained_model is not None else None
    for preset in plan.presets:
        run_model_args = per_run_arguments(model_args, None, TrainArguments(), plan, preset, 0, None, "")[0]
        preset_tokenizer = tokenizer if pretrained_cell(preset) is None else source_tokenizer
        config = build_config(run_model_args, preset_tokenizer, data)
        if preset in plan.pretrain_presets and not config.bidirectional:
            raise UsageError(
                f"preset {preset!r} is causal: masked-LM pre-training (--pretrain_steps) needs a bidirectional "
                "preset; leave it out of --pretrain_presets"
            )
        counts[preset] = count_parameters(config)
    # The tolerance holds among the model presets, against the first of them; pretrained rows are shown, not held.
    from_scratch = [preset for preset in plan.presets if pretrained_cell(preset) is None]
    reference, tolerance = (from_scratch or plan.presets)[0], compare_args.parameter_tolerance
    outside = [
        preset for preset in from_scratch[1:] if abs(counts[preset] - counts[reference]) > tolerance * counts[reference]
    ]
    if outside:
        details = ", ".join(
            f"{plan.labels[preset]} {counts[preset]:,} ({100 * (counts[preset] / counts[reference] - 1):+.1f} %)"
            for preset in outside
        )
        message = (
            f"parameter counts differ by more than {100 * tolerance:g} % from {plan.labels[reference]} "
            f"({counts[reference]:,}): {details}"
        )
        if not compare_args.allow_parameter_mismatch:
            raise UsageError(f"{message}; match the presets, or pass --allow_parameter_mismatch to run anyway")
        logger.warning(f"WARNING: {message}; running anyway (--allow_parameter_mismatch), marked (!) in the table")
    for preset in plan.presets:
        logger.info(f"{plan.labels[preset]}: {counts[preset]:,} parameters")
    return counts, outside
