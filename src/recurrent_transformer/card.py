"""The model card of a saved folder: what the folder's own files say, rendered into `model_card.md` (the template,
shipped with the package) through huggingface_hub's `ModelCard`.

Any folder saved by `save_pretrained` can be described: one from `recurrent-transformer train` carries its scores
(metrics.json), arguments (train_args.json) and record (run_info.json); one saved by the `Trainer`, by `train-lm` or
by hand may carry none of them, and its card then says what is not known instead of guessing. No number is typed
into a card: each comes from a file. The metadata header lists `datasets` only for a Hub data set id and
`base_model` only for a Hub model id.
"""

import json
from importlib import resources
from pathlib import Path

import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from . import __version__
from .cli import UsageError
from .experiments.baseline import SVM_LABEL
from .experiments.report import MLM_SUFFIX, format_score
from .files import is_hub_id, read_json

CARD = "README.md"
# The head saved in config.json's `architectures` -> (the Auto class that loads it, the pipeline task it serves).
HEADS = {
    "RecurrentTransformerForSequenceClassification": ("AutoModelForSequenceClassification", "text-classification"),
    "RecurrentTransformerForTokenClassification": ("AutoModelForTokenClassification", "token-classification"),
    "RecurrentTransformerForMaskedLM": ("AutoModelForMaskedLM", "fill-mask"),
    "RecurrentTransformerForCausalLM": ("AutoModelForCausalLM", "text-generation"),
    "RecurrentTransformerModel": ("AutoModel", "feature-extraction"),
}
# Headline scores of metrics.json -> (metric type on the Hub, its `average` argument).
HEADLINE_METRICS = {
    "accuracy": ("accuracy", None),
    "f1_macro": ("f1", "macro"),
    "precision_macro": ("precision", "macro"),
    "recall_macro": ("recall", "macro"),
    "f1_weighted": ("f1", "weighted"),
    "precision_weighted": ("precision", "weighted"),
    "recall_weighted": ("recall", "weighted"),
}
ARCHITECTURE_FIELDS = (
    "layer_types", "recurrent_cell", "recurrent_hidden_size", "recurrent_window", "bidirectional", "hidden_size",
    "num_hidden_layers", "num_attention_heads", "intermediate_size", "position_embedding_type", "vocab_size",
    "classifier_pooling",
)  # fmt: skip
TRAINING_FIELDS = {
    "model": ("model_config", "tokenizer_algorithm", "tokenizer_vocab_size", "max_length", "init_from"),
    "training": (
        "seed", "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
        "learning_rate", "lr_scheduler_type", "warmup_ratio", "weight_decay", "max_grad_norm",
        "metric_for_best_model", "early_stopping_patience",
    ),
}  # fmt: skip
RUN_INFO_FIELDS = ("global_step", "best_step", "global_batch_size", "num_processes", "device", "mixed_precision")


def template_path() -> Path:
    """model_card.md as shipped in the package (the same file as the repository's top-level model_card.md)."""
    return Path(str(resources.files(__package__).joinpath("model_card.md")))


def read_run(folder: Path) -> dict:
    """config.json (required) and whatever record files the folder holds: metrics.json, train_args.json and
    run_info.json from `recurrent-transformer train`, conversion.json from a converted checkpoint."""
    config = read_json(folder / "config.json", "the model's config (save_pretrained)")
    architectures = config.get("architectures") or []
    if not architectures or architectures[0] not in HEADS:
        raise UsageError(
            f"{folder / 'config.json'} names architectures {architectures}: expected one of {sorted(HEADS)}"
        )
    optional = {
        "metrics": "metrics.json",
        "train_args": "train_args.json",
        "run_info": "run_info.json",
        "conversion": "conversion.json",
    }
    run = {"config": config, "folder": folder}
    for key, name in optional.items():
        run[key] = read_json(folder / name, f"the run's {name}") if (folder / name).is_file() else {}
    metrics = run["metrics"]
    split = metrics.get("split")
    if metrics and (split not in metrics or "accuracy" not in metrics.get(split, {})):
        raise UsageError(
            f"{folder / 'metrics.json'} holds no scores: expected a 'split' key naming an entry with 'accuracy' "
            "(the metrics.json of `recurrent-transformer train`)"
        )
    return run


def data_identity(data: dict) -> dict:
    """What names a run's data without fingerprints: the Hub data set, or the training and test files (by folder
    and name, as paths are relative to where each command ran)."""
    if data.get("dataset_name"):
        return {"dataset": data["dataset_name"], "config": data.get("dataset_config_name")}
    return {
        name: "/".join(Path(data[name]).parts[-2:]) if data.get(name) else None for name in ("train_file", "test_file")
    }


def check_same_data(run: dict, results: dict, settings: dict, comparison: Path) -> None:
    """Refuse a comparison that ran on other data than the model: by the fingerprint of the scored split when both
    recorded one, else by the data set or file names both recorded."""
    model_prints = run["run_info"].get("data_fingerprints") or {}
    comparison_prints = results.get("data_fingerprints") or {}
    split = results.get("split")
    if split in model_prints and split in comparison_prints:
        same = model_prints[split] == comparison_prints[split]
    elif run["train_args"].get("data") and settings.get("data"):
        same = data_identity(run["train_args"]["data"]) == data_identity(settings["data"])
    else:
        raise UsageError(
            f"cannot tell whether the comparison {str(comparison)!r} ran on the model's data: {run['folder']} holds "
            "no train_args.json or run_info.json to say what the model was trained on"
        )
    if not same:
        raise UsageError(
            f"the comparison {str(comparison)!r} ran on other data than the model in {run['folder']} (its "
            f"{split} split differs): a card may only show a comparison on the model's own data"
        )


def comparison_rows(results: dict) -> list[dict]:
    return [
        {
            "label": row["label"],
            "runs": len(row["runs"]),
            **{name: format_score(row["summary"][name], len(row["runs"])) for name in ("accuracy", "f1_macro")},
            "parameters": f"{row['num_parameters']:,}",
        }
        for row in results["rows"]
    ]


def read_comparison(folder_name: str | None, run: dict) -> dict | None:
    """The card's 'Against its baselines' section from a comparison folder on the same data: each row's mean ± std
    over seeds from results.json, the budget from compare_args.json."""
    if folder_name is None:
        return None
    folder = Path(folder_name)
    if not folder.is_dir():
        raise UsageError(f"comparison {str(folder)!r} is not a folder: expected an output folder of the comparison")
    results = read_json(folder / "results.json", "the table of the comparison (results.json)")
    settings = read_json(folder / "compare_args.json", "the settings of the comparison (compare_args.json)")
    try:
        check_same_data(run, results, settings, folder)
        rows = comparison_rows(results)
        training, compare = settings["training"], settings["compare"]
        steps = training["max_steps"]
        budget = f"{steps} steps" if steps > 0 else f"{training['num_train_epochs']} epochs"
        seeds = ", ".join(seed.strip() for seed in str(compare["seeds"]).split(","))
        text = (
            f"Scores in % on the {results['split']} split, mean ± sample std over seeds {seeds}; every model trained "
            f"with the same tokenizer, split and budget ({budget} at batch {training['per_device_train_batch_size']}, "
            f"learning rate {training['learning_rate']:g})"
        )
    except (KeyError, TypeError) as error:
        raise UsageError(
            f"{folder} holds no comparison table ({error!r} missing): expected results.json and compare_args.json "
            "as the comparison writes them"
        ) from None
    if any(row["label"].endswith(MLM_SUFFIX) for row in rows):
        text += f"; '+MLM' rows were pre-trained as masked LMs for {compare['pretrain_steps']} steps first"
    multi_seed = any(row["runs"] > 1 for row in rows if row["label"] != SVM_LABEL)
    return {"rows": rows, "text": text + ".", "multi_seed": multi_seed}


def hub_dataset(run: dict, override: str | None) -> str | None:
    """A Hub data set id for the `datasets` metadata: given, or the Hub data set trained on; None for local files."""
    return override or run["train_args"].get("data", {}).get("dataset_name") or None


def dataset_name(run: dict, override: str | None) -> str | None:
    """The data's name for the text and the model-index: the Hub id, else the training file's folder (r8)."""
    data = run["train_args"].get("data", {})
    if hub_dataset(run, override):
        return hub_dataset(run, override)
    return Path(data["train_file"]).resolve().parent.name if data.get("train_file") else None


def base_model(run: dict, override: str | None) -> str | None:
    """The Hub model this one was initialised from: given, or init_from / a conversion's source when a Hub id."""
    init_from = run["train_args"].get("model", {}).get("init_from")
    candidates = [override, init_from, run.get("conversion", {}).get("source")]
    return next((name for name in candidates if is_hub_id(name)), None)


def eval_results(metrics: dict, dataset: str | None, task: str) -> list[EvalResult] | None:
    """The model-index: each headline score of metrics.json, exactly as the file holds it."""
    if not metrics or dataset is None:
        return None
    split = metrics["split"]
    scores = metrics[split]
    return [
        EvalResult(
            task_type=task,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=metric_type,
            metric_name=key,
            metric_value=scores[key],
            metric_args={"average": average} if average else None,
        )
        for key, (metric_type, average) in HEADLINE_METRICS.items()
        if key in scores
    ] or None


def describe_value(value) -> str:
    """A config or argument value as a table cell (lists and switches as JSON, None as 'none')."""
    if value is None:
        return "none"
    if isinstance(value, list | bool | dict):
        return f"`{json.dumps(value)}`"
    return str(value)


def training_rows(run: dict) -> list[tuple[str, str]]:
    args = run["train_args"]
    rows = [
        (name, describe_value(args[group][name]))
        for group, names in TRAINING_FIELDS.items()
        for name in names
        if name in args.get(group, {})
    ]
    rows += [(name, describe_value(run["run_info"][name])) for name in RUN_INFO_FIELDS if name in run["run_info"]]
    versions = run["run_info"].get("versions", {})
    rows += [(f"versions.{name}", version) for name, version in versions.items()]
    return rows


def training_data_text(run: dict, dataset: str | None) -> str | None:
    """Where the training text came from and how many texts each split held (run_info.json's split sizes)."""
    data = run["train_args"].get("data")
    if not data:
        return None
    if data.get("dataset_name"):
        source = f"the Hub data set `{data['dataset_name']}`"
    else:
        files = [data.get(name) for name in ("train_file", "validation_file", "test_file") if data.get(name)]
        source = "the files " + ", ".join(f"`{Path(path).parent.name}/{Path(path).name}`" for path in files)
    text = f"Data set `{dataset}`, read from {source}."
    sizes = run["run_info"].get("split_sizes", {})
    if sizes:
        text += " Texts per split: " + ", ".join(f"{name} {size}" for name, size in sizes.items()) + "."
    if not data.get("validation_file") and data.get("validation_split"):
        text += f" The validation split is a seeded {data['validation_split']:.0%} cut of the training file."
    labels = run["run_info"].get("label_names")
    if labels:
        text += f" Labels: {', '.join(labels)}."
    return text


def provenance(run: dict, dataset: str | None, base: str | None) -> str:
    """How the weights came to be, as far as the folder's files say."""
    init_from = run["train_args"].get("model", {}).get("init_from")
    conversion = run.get("conversion") or {}
    on_data = f" on `{dataset}`" if dataset else ""
    if conversion:
        layers = conversion.get("recurrent_layers") or []
        cell = conversion.get("recurrent_cell", "recurrent")
        added = f"new {cell} sub-layers in layers {layers}" if layers else "no new recurrent layers"
        start = f"Converted from `{conversion.get('source')}` ({conversion.get('source_model_type')}) with {added}"
        return start + (f", then fine-tuned{on_data}." if run["train_args"] else ".")
    if init_from:
        return f"Initialised from `{base or init_from}`, then fine-tuned{on_data}."
    if run["train_args"]:
        return f"Trained from scratch{on_data}."
    return "This folder carries no training record, so how its weights were trained is not stated here."


def per_class_rows(scores: dict) -> list[dict]:
    return [
        {
            "label": label,
            **{key: f"{row[key]:.4f}" for key in ("precision", "recall", "f1")},
            "support": int(row["support"]),
        }
        for label, row in scores.get("per_class", {}).items()
    ]


def limitations(run: dict, comparison: dict | None, max_length) -> list[str]:
    """What a reader should know before using the model, each stated only when the files support it."""
    lines = []
    if run["train_args"] and run["train_args"].get("model", {}).get("tokenizer_name") is None:
        lines.append("Its tokenizer was learned on the training split: it knows that domain's vocabulary only.")
    if max_length is not None:
        lines.append(
            f"It was trained on texts cut to {max_length} tokens; with the package installed, the "
            "text-classification pipeline cuts longer inputs the same way (`truncation=True` is its default for "
            "this model). Loaded through remote code alone, pass `truncation=True` to the pipeline."
        )
    seed = run["train_args"].get("training", {}).get("seed")
    if run["metrics"] and comparison and comparison["multi_seed"]:
        lines.append(f"The scores above are one run (seed {seed}); the comparison's rows give the spread over seeds.")
    elif run["metrics"]:
        lines.append(f"The scores above are one run (seed {seed}); their variance over seeds is not measured here.")
    else:
        lines.append("No evaluation results came with this folder.")
    return lines


def render_card(run: dict, args, num_parameters: int, revision: str, revision_note: str) -> ModelCard:
    """The card: ModelCardData (YAML header and model-index) and the template's sections, all from the run."""
    config, metrics = run["config"], run["metrics"]
    architecture = config["architectures"][0]
    auto_class, task = HEADS[architecture]
    dataset, base = dataset_name(run, args.dataset_id), base_model(run, args.base_model)
    scores = metrics.get(metrics.get("split"), {})
    hub_data = hub_dataset(run, args.dataset_id)
    card_data = ModelCardData(
        model_name=args.repo_id.split("/")[-1],
        library_name="transformers",
        license=args.license,
        pipeline_tag=task,
        tags=["recurrent-transformer", config.get("recurrent_cell", "lstm"), task, "custom_code"],
        datasets=[hub_data] if hub_data else None,
        base_model=base,
        metrics=sorted({kind for key, (kind, _) in HEADLINE_METRICS.items() if key in scores}) or None,
        eval_results=eval_results(metrics, dataset, task),
    )
    selection = metrics.get("best_validation", {})
    selection_metric = next((key for key in selection if key != "step"), None)
    max_length = run["train_args"].get("model", {}).get("max_length")
    return ModelCard.from_template(
        card_data,
        template_path=str(args.template or template_path()),
        model_name=args.repo_id.split("/")[-1],
        repo_id=args.repo_id,
        revision=revision,
        revision_note=revision_note,
        architecture_class=architecture,
        auto_class=auto_class,
        provenance=provenance(run, dataset, base),
        num_parameters=f"{num_parameters:,}",
        package_version=__version__,
        transformers_version=transformers.__version__,
        architecture=[(name, describe_value(config.get(name))) for name in ARCHITECTURE_FIELDS if name in config],
        training_data=training_data_text(run, dataset),
        training=training_rows(run),
        split=metrics.get("split"),
        num_samples=scores.get("num_samples", "all"),
        results=[(key, f"{scores[key]:.4f}") for key in HEADLINE_METRICS if key in scores],
        per_class=per_class_rows(scores),
        selection_metric=selection_metric,
        selection_value=None if selection.get(selection_metric) is None else f"{selection[selection_metric]:.4f}",
        selection_step=selection.get("step"),
        comparison=run.get("comparison"),
        limitations=limitations(run, run.get("comparison"), max_length),
    )
