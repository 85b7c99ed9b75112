"""`recurrent-transformer push-to-hub`: publish a saved model folder on the Hugging Face Hub: model, tokenizer, the
two code files, the folder's record files and a generated model card.

    recurrent-transformer push-to-hub --model_dir runs/r8 --repo_id your-name/r8-hybrid-small --dry_run
    recurrent-transformer push-to-hub --model_dir runs/r8 --repo_id your-name/r8-hybrid-small
    recurrent-transformer push-to-hub --model_dir runs/r8 --repo_id your-name/r8-hybrid-small --private \
        --revision experiments --commit_message "hybrid-small, 10 epochs" --comparison runs/compare/r8

Any folder saved by `save_pretrained` with its tokenizer can be published: one from `recurrent-transformer train`
(its metrics.json, train_args.json and run_info.json feed the card), one saved by the `Trainer` or by `train-lm`, or
by hand (the card then says what is not known). The command loads the model, sets the full `auto_map` (every head,
so the repository loads through any Auto class with `trust_remote_code=True`), saves it with its code files into a
staging folder beside the tokenizer and the record files, and renders the card (`card.py`). `--dry_run` prints each
file it would upload with its size, and needs neither a token nor a network.

An upload is two commits: the files, then README.md, whose loading snippets pin `revision` to the first commit
(a card cannot name the commit that contains it). Bad input, a missing token or no network print one
`error: ...` line and exit with status 2; nothing is uploaded unless huggingface_hub's calls succeed.
"""

import importlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from transformers import AutoTokenizer
from transformers.utils import logging as transformers_logging

from . import modeling_recurrent_transformer
from .card import CARD, HEADS, read_comparison, read_run, render_card
from .cli import UsageError, parse_arguments, run_command
from .configuration_recurrent_transformer import AUTO_MAP, RecurrentTransformerConfig

# The folder's record files, uploaded beside the model so that every number on the card can be checked.
RECORD_FILES = ("metrics.json", "train_args.json", "run_info.json", "confusion_matrix.png", "conversion.json")


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "a model folder saved by save_pretrained, with its tokenizer"})
    repo_id: str = field(metadata={"help": "the Hub repository, 'user-or-org/name'"})
    revision: str = field(default="main", metadata={"help": "branch to commit to (created when missing)"})
    private: bool = field(default=False, metadata={"help": "create the repository private"})
    commit_message: str | None = field(default=None, metadata={"help": "message of the files' commit"})
    dry_run: bool = field(default=False, metadata={"help": "stage and list the files with sizes; upload nothing"})
    license: str = field(default="apache-2.0", metadata={"help": "license id for the card's metadata"})
    dataset_id: str | None = field(
        default=None, metadata={"help": "a Hub data set id for the card's metadata; unset: the Hub data set trained on"}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "the Hub model id it was initialised from; unset: init_from or the conversion's source"},
    )
    template: str | None = field(default=None, metadata={"help": "the card's Jinja template; unset: model_card.md"})
    staging_dir: str | None = field(default=None, metadata={"help": "keep the staged files here; unset: a temp dir"})
    token: str | None = field(default=None, metadata={"help": "Hub token; unset: HF_TOKEN or `hf auth login`'s"})
    comparison: str | None = field(
        default=None,
        metadata={
            "help": "a comparison output folder on the same data (checked): the card shows its table (every model "
            "against the baselines, mean ± std over seeds)"
        },
    )


def check_folder(model_dir: str) -> Path:
    """The checks that need nothing loaded: the weights, the config and a tokenizer are there."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise UsageError(f"model_dir {str(folder)!r} is not a folder: expected a model folder saved by save_pretrained")
    if not (folder / "model.safetensors").is_file():
        raise UsageError(f"{folder / 'model.safetensors'} not found: expected the trained weights (save_pretrained)")
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()):
        raise UsageError(f"{folder / 'tokenizer.json'} not found: expected the model's tokenizer (save_pretrained)")
    return folder


# -- staging --------------------------------------------------------------------------------------------------------


def stage(folder: Path, staging: Path, architecture: str) -> int:
    """Save model (with the full auto_map and the code files), tokenizer and record files into `staging`.

    Loading and saving again, rather than copying, writes the package's current code files next to weights that
    load with them, and an `auto_map` naming every head. Returns the number of parameters."""
    model_class = getattr(modeling_recurrent_transformer, architecture)
    auto_class, _ = HEADS[architecture]
    model = model_class.from_pretrained(folder)
    RecurrentTransformerConfig.register_for_auto_class("AutoConfig")
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


# -- upload ---------------------------------------------------------------------------------------------------------


def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection errors (huggingface_hub 2.x uses httpx2, 1.x httpx)."""
    errors: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module_name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def find_token(args: PushArguments) -> str:
    """--token, HF_TOKEN or the saved login; checked before staging, so a missing token costs nothing."""
    token = args.token or get_token()
    if not token:
        raise UsageError(
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
        raise UsageError(
            f"cannot upload to {args.repo_id}: huggingface_hub is in offline mode (HF_HUB_OFFLINE=1); unset it on a "
            "machine with a network, or use --dry_run"
        ) from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "no status"
        hint = " (is the token valid, with write access?)" if status in (401, 403) else ""
        first_line = str(error).splitlines()[0]
        raise UsageError(f"the Hub refused the upload to {args.repo_id}: HTTP {status}{hint}: {first_line}") from error
    except transport_errors() as error:
        raise UsageError(
            f"cannot reach the Hub at {api.endpoint} ({type(error).__name__}: {error}): check the network, or use "
            "--dry_run"
        ) from error
    return card_commit.commit_url


# -- main -----------------------------------------------------------------------------------------------------------


def check_publish(args: PushArguments) -> dict:
    """Every check before anything is staged: the folder, its records, the comparison, the template, the
    repository id and (for an upload) the token. Returns what the card is made from."""
    folder = check_folder(args.model_dir)
    run = read_run(folder)
    run["comparison"] = read_comparison(args.comparison, run)
    if args.template is not None and not Path(args.template).is_file():
        raise UsageError(f"card template {args.template} not found: expected a Jinja Markdown file (model_card.md)")
    if "/" not in args.repo_id:
        raise UsageError(f"repo_id {args.repo_id!r} is not 'user-or-org/name'")
    if args.staging_dir and Path(args.staging_dir).exists() and any(Path(args.staging_dir).iterdir()):
        raise UsageError(f"staging_dir {args.staging_dir!r} is not empty: choose an empty or new folder")
    if not args.dry_run:
        find_token(args)
    return run


def publish(args: PushArguments, run: dict, staging: Path) -> dict:
    """Stage the folder, render the card, then list the files (--dry_run) or upload them."""
    num_parameters = stage(run["folder"], staging, run["config"]["architectures"][0])

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


def push_to_hub(args: PushArguments) -> dict:
    """Check, stage (into --staging_dir or a temporary folder), render and upload; returns what was staged."""
    transformers_logging.disable_progress_bar()  # stdout lists the files; stderr stays for errors
    run = check_publish(args)
    if args.staging_dir:
        Path(args.staging_dir).mkdir(parents=True, exist_ok=True)
        return publish(args, run, Path(args.staging_dir))
    with tempfile.TemporaryDirectory(prefix="push_to_hub-") as temporary:
        return publish(args, run, Path(temporary))


def run(argv: list[str]) -> dict:
    (args,) = parse_arguments((PushArguments,), argv)
    return push_to_hub(args)


def main(argv: list[str] | None = None) -> dict:
    """Stage, render and upload (or list, with --dry_run). Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
