"""Publish a trained folder on the Hugging Face Hub: model, tokenizer, the two code files and a generated card.

    python scripts/push_to_hub.py --model_dir runs/r8 --repo_id your-name/r8-hybrid-small --dry_run
    python scripts/push_to_hub.py --model_dir runs/r8 --repo_id your-name/r8-hybrid-small
    python scripts/push_to_hub.py --model_dir runs/r8 --repo_id your-name/r8-hybrid-small --private \
        --revision experiments --commit_message "hybrid-small, 10 epochs"

The folder is what scripts/train.py writes (config.json, model.safetensors, the tokenizer, metrics.json,
train_args.json, run_info.json). The script loads the model, sets the full `auto_map` (every head, so the
repository loads through any Auto class with `trust_remote_code=True`), saves it with its code files into a
staging folder beside the tokenizer and the run's record files, and renders `model_card.md` into README.md with
huggingface_hub's `ModelCard`: the YAML header's model-index and every number in the text come from the run's
files. `--dry_run` prints each file it would upload with its size, and needs neither a token nor a network.

An upload is two commits: the files, then README.md, whose loading snippets pin `revision` to the first commit
(a card cannot name the commit that contains it). Bad input, a missing token or no network print one
`error: ...` line and exit with status 2; nothing is uploaded unless huggingface_hub's calls succeed.
"""

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from transformers import AutoTokenizer, HfArgumentParser
from transformers.utils import logging as transformers_logging

import recurrent_transformer
from recurrent_transformer.cli import unshadow_libraries
from recurrent_transformer.compare import MLM_SUFFIX, format_score
from recurrent_transformer.configuration_recurrent_transformer import AUTO_MAP

unshadow_libraries(__file__)  # scripts/evaluate.py must not stand in for the evaluate library

TEMPLATE = Path(__file__).resolve().parents[1] / "model_card.md"
CARD = "README.md"
# The head saved in config.json's `architectures` -> (the Auto class that loads it, the pipeline task it serves).
HEADS = {
    "RecurrentTransformerForSequenceClassification": ("AutoModelForSequenceClassification", "text-classification"),
    "RecurrentTransformerForTokenClassification": ("AutoModelForTokenClassification", "token-classification"),
    "RecurrentTransformerForMaskedLM": ("AutoModelForMaskedLM", "fill-mask"),
    "RecurrentTransformerForCausalLM": ("AutoModelForCausalLM", "text-generation"),
}
# The run's record files, uploaded beside the model so that every number on the card can be checked.
RECORD_FILES = ("metrics.json", "train_args.json", "run_info.json", "confusion_matrix.png")
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
    "model": ("model_config", "tokenizer_algorithm", "tokenizer_vocab_size", "max_length"),
    "training": (
        "seed", "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
        "learning_rate", "lr_scheduler_type", "warmup_ratio", "weight_decay", "max_grad_norm",
        "metric_for_best_model", "early_stopping_patience",
    ),
}  # fmt: skip
RUN_INFO_FIELDS = ("global_step", "best_step", "global_batch_size", "num_processes", "device", "mixed_precision")


class PublishError(ValueError):
    """Bad input, no token or no network: printed as one line, exit status 2."""


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "a folder written by scripts/train.py"})
    repo_id: str = field(metadata={"help": "the Hub repository, 'user-or-org/name'"})
    revision: str = field(default="main", metadata={"help": "branch to commit to (created when missing)"})
    private: bool = field(default=False, metadata={"help": "create the repository private"})
    commit_message: str | None = field(default=None, metadata={"help": "message of the files' commit"})
    dry_run: bool = field(default=False, metadata={"help": "stage and list the files with sizes; upload nothing"})
    license: str = field(default="apache-2.0", metadata={"help": "license id for the card's metadata"})
    dataset_id: str | None = field(
        default=None, metadata={"help": "the card's data set id; unset: the Hub data set trained on, else its folder"}
    )
    template: str = field(default=str(TEMPLATE), metadata={"help": "the card's Jinja template"})
    staging_dir: str | None = field(default=None, metadata={"help": "keep the staged files here; unset: a temp dir"})
    token: str | None = field(default=None, metadata={"help": "Hub token; unset: HF_TOKEN or `hf auth login`'s"})
    comparison: str | None = field(
        default=None,
        metadata={
            "help": "a scripts/compare.py output folder on the same data: the card shows its table (every model "
            "against the baselines, mean ± std over seeds)"
        },
    )


def parse_args(argv: list[str] | None = None) -> PushArguments:
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    return args


# -- reading the run ------------------------------------------------------------------------------------------------


def read_json(path: Path, expected: str) -> dict:
    """A JSON file of the run; a missing or broken one names the file and what it should hold."""
    if not path.is_file():
        raise PublishError(f"{path} not found: expected {expected}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PublishError(f"{path} is not valid JSON ({error}): expected {expected}") from error


def check_folder(model_dir: str) -> Path:
    """The checks that need nothing loaded: each file the card or the upload reads is there."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise PublishError(f"model_dir {str(folder)!r} is not a folder: expected the output folder of scripts/train.py")
    if not (folder / "model.safetensors").is_file():
        raise PublishError(f"{folder / 'model.safetensors'} not found: expected the trained weights (save_pretrained)")
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()):
        raise PublishError(f"{folder / 'tokenizer.json'} not found: expected the run's tokenizer (save_pretrained)")
    return folder


def read_run(folder: Path) -> dict:
    """config.json, metrics.json, train_args.json and (optional) run_info.json of a trained folder."""
    config = read_json(folder / "config.json", "the model's config (save_pretrained)")
    metrics = read_json(folder / "metrics.json", "the run's scores, as scripts/train.py writes them")
    split = metrics.get("split")
    if split not in metrics or not isinstance(metrics[split], dict) or "accuracy" not in metrics[split]:
        raise PublishError(
            f"{folder / 'metrics.json'} holds no scores: expected a 'split' key naming an entry with 'accuracy' "
            "(the metrics.json of scripts/train.py)"
        )
    architectures = config.get("architectures") or []
    if not architectures or architectures[0] not in HEADS:
        raise PublishError(
            f"{folder / 'config.json'} names architectures {architectures}: expected one of {sorted(HEADS)}"
        )
    run_info_path = folder / "run_info.json"
    return {
        "config": config,
        "metrics": metrics,
        "train_args": read_json(folder / "train_args.json", "the run's arguments, as scripts/train.py writes them"),
        "run_info": read_json(run_info_path, "the run's record") if run_info_path.exists() else {},
    }


def read_comparison(folder_name: str | None) -> dict | None:
    """The card's 'Against its baselines' section from a compare.py folder: each row's mean ± std over seeds, read
    from results.json, and the budget from compare_args.json."""
    if folder_name is None:
        return None
    folder = Path(folder_name)
    if not folder.is_dir():
        raise PublishError(
            f"comparison {str(folder)!r} is not a folder: expected an output folder of scripts/compare.py"
        )
    results = read_json(folder / "results.json", "the table of scripts/compare.py (results.json)")
    settings = read_json(folder / "compare_args.json", "the settings of scripts/compare.py (compare_args.json)")
    try:
        rows = [
            {
                "label": row["label"],
                "runs": len(row["runs"]),
                **{name: format_score(row["summary"][name], len(row["runs"])) for name in ("accuracy", "f1_macro")},
                "parameters": f"{row['num_parameters']:,}",
            }
            for row in results["rows"]
        ]
        training, compare = settings["training"], settings["compare"]
        budget = (
            f"{training['max_steps']} steps" if training["max_steps"] > 0 else f"{training['num_train_epochs']} epochs"
        )
        text = (
            f"Scores in % on the {results['split']} split, mean ± sample std over seeds "
            f"{', '.join(str(compare['seeds']).split(','))}; every "
            f"model trained with the same tokenizer, split and budget ({budget} at batch "
            f"{training['per_device_train_batch_size']}, learning rate {training['learning_rate']:g})"
        )
    except (KeyError, TypeError) as error:
        raise PublishError(
            f"{folder} holds no comparison table ({error!r} missing): expected results.json and compare_args.json "
            "as scripts/compare.py writes them"
        ) from None
    if any(row["label"].endswith(MLM_SUFFIX) for row in rows):
        text += f"; '+MLM' rows were pre-trained as masked LMs for {compare['pretrain_steps']} steps first"
    return {"rows": rows, "text": text + ". The table is the comparison's own `results.md`, in short."}


# -- staging --------------------------------------------------------------------------------------------------------


def stage(folder: Path, staging: Path, architecture: str) -> int:
    """Save model (with the full auto_map and the code files), tokenizer and record files into `staging`.

    Loading and saving again, rather than copying, writes the package's current code files next to weights that
    load with them, and an `auto_map` naming every head. Returns the number of parameters."""
    model_class = getattr(recurrent_transformer, architecture)
    auto_class, _ = HEADS[architecture]
    model = model_class.from_pretrained(folder)
    type(model.config).register_for_auto_class("AutoConfig")
    model_class.register_for_auto_class(auto_class)
    model.config.auto_map = dict(AUTO_MAP)
    model.save_pretrained(staging)
    AutoTokenizer.from_pretrained(folder).save_pretrained(staging)
    for name in RECORD_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, staging / name)
    saved_map = json.loads((staging / "config.json").read_text()).get("auto_map", {})
    if saved_map != AUTO_MAP:
        raise RuntimeError(f"config.json's auto_map is {saved_map}, expected {AUTO_MAP}")
    return model.num_parameters()


def staged_files(staging: Path) -> list[tuple[str, int]]:
    """(path in the repository, size in bytes) of every staged file, sorted."""
    return sorted(
        (str(path.relative_to(staging)), path.stat().st_size) for path in staging.rglob("*") if path.is_file()
    )


# -- the card -------------------------------------------------------------------------------------------------------


def dataset_id(run: dict, override: str | None) -> str:
    """The card's data set: as given, else the Hub data set trained on, else the training file's folder (r8)."""
    data = run["train_args"].get("data", {})
    if override:
        return override
    if data.get("dataset_name"):
        return data["dataset_name"]
    if data.get("train_file"):
        return Path(data["train_file"]).resolve().parent.name
    raise PublishError("train_args.json names no data set or training file: pass --dataset_id")


def eval_results(metrics: dict, dataset: str, task: str) -> list[EvalResult]:
    """The model-index: each headline score of metrics.json, exactly as the file holds it."""
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
    ]


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
        (name, describe_value(args.get(group, {}).get(name)))
        for group, names in TRAINING_FIELDS.items()
        for name in names
    ]
    rows += [(name, describe_value(run["run_info"][name])) for name in RUN_INFO_FIELDS if name in run["run_info"]]
    versions = run["run_info"].get("versions", {})
    rows += [(f"versions.{name}", version) for name, version in versions.items()]
    return rows


def training_data_text(run: dict, dataset: str) -> str:
    """Where the training text came from and how many texts each split held (run_info.json's split sizes)."""
    data = run["train_args"].get("data", {})
    sizes = run["run_info"].get("split_sizes", {})
    if data.get("dataset_name"):
        source = f"the Hub data set `{data['dataset_name']}`"
    else:
        files = [data.get(name) for name in ("train_file", "validation_file", "test_file") if data.get(name)]
        source = "the files " + ", ".join(f"`{Path(path).parent.name}/{Path(path).name}`" for path in files)
    text = f"Data set `{dataset}`, read from {source}."
    if sizes:
        text += " Texts per split: " + ", ".join(f"{name} {size}" for name, size in sizes.items()) + "."
    if not data.get("validation_file") and data.get("validation_split"):
        text += f" The validation split is a seeded {data['validation_split']:.0%} cut of the training file."
    labels = run["run_info"].get("label_names")
    if labels:
        text += f" Labels: {', '.join(labels)}."
    return text


def per_class_rows(scores: dict) -> list[dict]:
    return [
        {
            "label": label,
            **{key: f"{row[key]:.4f}" for key in ("precision", "recall", "f1")},
            "support": int(row["support"]),
        }
        for label, row in scores.get("per_class", {}).items()
    ]


def render_card(run: dict, args: PushArguments, num_parameters: int, revision: str, revision_note: str) -> ModelCard:
    """The card: ModelCardData (YAML header and model-index) and the template's sections, all from the run."""
    config, metrics = run["config"], run["metrics"]
    architecture = config["architectures"][0]
    auto_class, task = HEADS[architecture]
    dataset = dataset_id(run, args.dataset_id)
    split = metrics["split"]
    scores = metrics[split]
    model_name = args.repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        license=args.license,
        pipeline_tag=task,
        tags=["recurrent-transformer", config.get("recurrent_cell", "lstm"), task, "custom_code"],
        datasets=[dataset],
        metrics=sorted({metric_type for key, (metric_type, _) in HEADLINE_METRICS.items() if key in scores}),
        eval_results=eval_results(metrics, dataset, task),
    )
    selection = metrics.get("best_validation", {})
    selection_metric = next((key for key in selection if key != "step"), "none")
    selection_value = selection.get(selection_metric)
    return ModelCard.from_template(
        card_data,
        template_path=args.template,
        model_name=model_name,
        repo_id=args.repo_id,
        revision=revision,
        revision_note=revision_note,
        architecture_class=architecture,
        auto_class=auto_class,
        dataset=f"`{dataset}`",
        num_parameters=f"{num_parameters:,}",
        architecture=[(name, describe_value(config.get(name))) for name in ARCHITECTURE_FIELDS if name in config],
        training_data=training_data_text(run, dataset),
        training=training_rows(run),
        split=split,
        num_samples=scores.get("num_samples", "all"),
        results=[(key, f"{scores[key]:.4f}") for key in HEADLINE_METRICS if key in scores],
        per_class=per_class_rows(scores),
        selection_metric=selection_metric,
        selection_value="none" if selection_value is None else f"{selection_value:.4f}",
        selection_step=selection.get("step", "none"),
        max_length=run["train_args"].get("model", {}).get("max_length", "the tokenizer's model_max_length"),
        seed=run["train_args"].get("training", {}).get("seed", "unknown"),
        comparison=run.get("comparison"),
    )


# -- upload ---------------------------------------------------------------------------------------------------------


def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection errors (huggingface_hub 2.x uses httpx2, 1.x httpx)."""
    errors: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module_name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def find_token(args: PushArguments) -> str:
    """--token, HF_TOKEN or the saved login; checked before staging, so a missing token costs nothing."""
    token = args.token or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access "
            "(or use --dry_run to stage and list the files without uploading)"
        )
    return token


def upload(args: PushArguments, staging: Path, card_for_revision) -> str:
    """huggingface_hub's real calls: create the repository and branch, commit the files, then the pinned card."""
    api = HfApi(token=find_token(args))
    try:
        api.create_repo(args.repo_id, private=args.private or None, exist_ok=True)
        if args.revision != "main":
            api.create_branch(args.repo_id, branch=args.revision, exist_ok=True)
        files_commit = api.upload_folder(
            repo_id=args.repo_id,
            folder_path=staging,
            revision=args.revision,
            commit_message=args.commit_message or f"Upload {args.repo_id.split('/')[-1]} (recurrent-transformer)",
            ignore_patterns=[CARD],
        )
        card_for_revision(files_commit.oid).save(staging / CARD)
        card_commit = api.upload_file(
            path_or_fileobj=staging / CARD,
            path_in_repo=CARD,
            repo_id=args.repo_id,
            revision=args.revision,
            commit_message=f"Model card, loading snippets pinned to {files_commit.oid[:10]}",
        )
    except OfflineModeIsEnabled as error:
        raise PublishError(
            f"cannot upload to {args.repo_id}: huggingface_hub is in offline mode (HF_HUB_OFFLINE=1); unset it on a "
            "machine with a network, or use --dry_run"
        ) from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "no status"
        hint = " (is the token valid, with write access?)" if status in (401, 403) else ""
        first_line = str(error).splitlines()[0]
        raise PublishError(
            f"the Hub refused the upload to {args.repo_id}: HTTP {status}{hint}: {first_line}"
        ) from error
    except transport_errors() as error:
        raise PublishError(
            f"cannot reach the Hub at {api.endpoint} ({type(error).__name__}: {error}): check the network, or use "
            "--dry_run"
        ) from error
    return card_commit.commit_url


# -- main -----------------------------------------------------------------------------------------------------------


def publish(args: PushArguments, staging: Path) -> dict:
    folder = check_folder(args.model_dir)
    run = read_run(folder)
    run["comparison"] = read_comparison(args.comparison)
    if not Path(args.template).is_file():
        raise PublishError(f"card template {args.template} not found: expected a Jinja Markdown file (model_card.md)")
    if "/" not in args.repo_id:
        raise PublishError(f"repo_id {args.repo_id!r} is not 'user-or-org/name'")
    if not args.dry_run:
        find_token(args)
    num_parameters = stage(folder, staging, run["config"]["architectures"][0])

    def card_for_revision(revision: str) -> ModelCard:
        return render_card(run, args, num_parameters, revision, "the commit that uploaded these weights and code")

    branch_note = (
        "the branch name, a placeholder in this dry run: the uploaded card names the commit that holds these weights "
        "and code"
    )
    render_card(run, args, num_parameters, args.revision, branch_note).save(staging / CARD)
    files = staged_files(staging)
    result = {"repo_id": args.repo_id, "revision": args.revision, "files": dict(files), "dry_run": args.dry_run}
    if args.dry_run:
        print(f"dry run: would upload {len(files)} files to {args.repo_id} (branch {args.revision}):")
        for name, size in files:
            print(f"  {name:45s} {size:>12,d} bytes")
        print(f"  total {sum(size for _, size in files):,d} bytes; {CARD} pins the files' commit once uploaded")
        return result
    result["commit_url"] = upload(args, staging, card_for_revision)
    print(f"uploaded {len(files)} files to {args.repo_id}: {result['commit_url']}")
    return result


def main(argv: list[str] | None = None) -> dict:
    """Stage, render and upload (or list, with --dry_run); returns what was staged. Errors: one line, status 2."""
    args = parse_args(argv)
    transformers_logging.disable_progress_bar()  # stdout lists the files; stderr stays for errors
    try:
        if args.staging_dir:
            staging = Path(args.staging_dir)
            if staging.exists() and any(staging.iterdir()):
                raise PublishError(f"staging_dir {str(staging)!r} is not empty: choose an empty or new folder")
            staging.mkdir(parents=True, exist_ok=True)
            return publish(args, staging)
        with tempfile.TemporaryDirectory(prefix="push_to_hub-") as temporary:
            return publish(args, Path(temporary))
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
