"""`recurrent-transformer push-to-hub` on a folder from `train` (and on folders saved by the Trainer or by hand): the
dry run's file list, the rendered card (parsed by huggingface_hub, numbers equal to metrics.json, metadata only what
is true), a comparison on other data refused, and the real upload call failing clearly offline or without a token
(this machine cannot reach the Hub; nothing pretends an upload happened)."""

import json
import shutil

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard
from train_helpers import SMOKE, run_command
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from recurrent_transformer.configuration_recurrent_transformer import AUTO_MAP

REPO_ID = "someone/r8-tiny"
UPLOADED = {
    "README.md",
    "config.json",
    "model.safetensors",
    "configuration_recurrent_transformer.py",
    "modeling_recurrent_transformer.py",
    "tokenizer.json",
    "tokenizer_config.json",
    "metrics.json",
    "train_args.json",
    "run_info.json",
    "confusion_matrix.png",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The tiny preset, 10 steps on an R8 slice, scored on 32 test texts."""
    output_dir = tmp_path_factory.mktemp("publish") / "run"
    run_command(
        "train",
        [SMOKE, "--output_dir", output_dir, "--max_steps", 10, "--eval_steps", 10, "--max_test_samples", 32]
        + ["--max_train_samples", 200, "--disable_tqdm"],
    )
    return output_dir


@pytest.fixture(scope="module")
def dry_run(run_dir, tmp_path_factory):
    staging = tmp_path_factory.mktemp("staging") / "stage"
    argv = ["--model_dir", run_dir, "--repo_id", REPO_ID, "--dry_run", "--staging_dir", staging]
    return staging, run_command("push-to-hub", argv)


def push(argv: list):
    return run_command("push-to-hub", argv)


def error_of(capsys, argv: list) -> str:
    with pytest.raises(SystemExit) as exit_info:
        push(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_dry_run_lists_every_file_with_its_size(run_dir, tmp_path, capsys):
    staging = tmp_path / "stage"
    push(["--model_dir", run_dir, "--repo_id", REPO_ID, "--dry_run", "--staging_dir", staging])
    printed = capsys.readouterr().out
    assert f"would upload {len(UPLOADED)} files to {REPO_ID}" in printed
    for name in UPLOADED:
        size = (staging / name).stat().st_size
        assert any(line.split()[0] == name and f"{size:,d} bytes" in line for line in printed.splitlines()), name


def test_dry_run_stages_the_model_tokenizer_code_and_card(dry_run, run_dir):
    staging, result = dry_run
    assert set(result["files"]) == UPLOADED and result["dry_run"]
    assert json.loads((staging / "config.json").read_text())["auto_map"] == AUTO_MAP
    model = AutoModelForSequenceClassification.from_pretrained(staging).eval()
    original = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(staging)
    batch = tokenizer(["oil prices rose", "net profit rose to 5 mln dlrs"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, original(**batch).logits, atol=0, rtol=0)


def test_card_parses_and_its_model_index_equals_metrics_json(dry_run, run_dir):
    staging, _ = dry_run
    card = ModelCard.load(staging / "README.md")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scores = metrics[metrics["split"]]
    data = card.data
    assert data.library_name == "transformers" and data.license == "apache-2.0"
    assert data.pipeline_tag == "text-classification"
    assert data.datasets is None and data.base_model is None  # local files, trained from scratch: no Hub ids
    assert "recurrent-transformer" in data.tags
    results = {result.metric_name: result for result in data.eval_results}
    assert set(results) == {"accuracy", "f1_macro", "precision_macro", "recall_macro"} | {
        "f1_weighted",
        "precision_weighted",
        "recall_weighted",
    }
    for name, result in results.items():
        assert result.metric_value == scores[name], name
        assert result.dataset_split == metrics["split"] and result.task_type == "text-classification"
        assert result.dataset_name == "r8"  # the training file's folder
    text = card.text
    assert "{{" not in text and "{%" not in text
    assert f"| accuracy | {scores['accuracy']:.4f} |" in text
    assert f'from_pretrained("{REPO_ID}", revision="main", trust_remote_code=True)' in text
    for section in ("## What the model is", "## Architecture", "## How to load it", "## Training data and settings"):
        assert section in text
    assert "## Results" in text and "## Limitations" in text
    assert "pip install recurrent-transformer" not in text  # there is no such release
    assert "Trained from scratch on `r8`." in text
    assert "their variance over seeds is not measured here" in text


def test_upload_offline_fails_with_one_clear_line(run_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    error = error_of(capsys, ["--model_dir", run_dir, "--repo_id", REPO_ID])
    assert error.startswith(f"error: cannot upload to {REPO_ID}: huggingface_hub is in offline mode"), error


def test_upload_without_network_fails_with_one_clear_line(run_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    error = error_of(capsys, ["--model_dir", run_dir, "--repo_id", REPO_ID])
    assert error.startswith("error: cannot reach the Hub at http://127.0.0.1:9"), error


def test_upload_without_token_fails_with_one_clear_line(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    error = error_of(capsys, ["--model_dir", run_dir, "--repo_id", REPO_ID])
    assert error.startswith("error: no Hugging Face token: run `hf auth login` or set HF_TOKEN"), error


def test_a_folder_without_weights_is_named(run_dir, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (folder / "model.safetensors").unlink()
    error = error_of(capsys, ["--model_dir", folder, "--repo_id", REPO_ID, "--dry_run"])
    assert error == f"error: {folder / 'model.safetensors'} not found: expected the trained weights (save_pretrained)"


def test_a_missing_folder_is_named(tmp_path, capsys):
    error = error_of(capsys, ["--model_dir", tmp_path / "nowhere", "--repo_id", REPO_ID, "--dry_run"])
    assert error.startswith(f"error: model_dir '{tmp_path / 'nowhere'}' is not a folder"), error


def test_a_comparison_folder_without_its_table_is_named(run_dir, tmp_path, capsys):
    (tmp_path / "compare").mkdir()
    argv = ["--model_dir", run_dir, "--repo_id", REPO_ID, "--dry_run", "--comparison", tmp_path / "compare"]
    error = error_of(capsys, argv)
    assert error.startswith(f"error: {tmp_path / 'compare' / 'results.json'} not found: expected the table"), error
    assert "not a folder" in error_of(capsys, [*argv[:-1], tmp_path / "nowhere"])


def card_of(capsys, tmp_path, folder, *extra) -> ModelCard:
    staging = tmp_path / "stage"
    push(["--model_dir", folder, "--repo_id", REPO_ID, "--dry_run", "--staging_dir", staging, *extra])
    capsys.readouterr()
    return ModelCard.load(staging / "README.md")


def test_a_folder_saved_by_the_trainer_is_published(run_dir, tmp_path, capsys):
    """The Trainer's save_model writes the model, the tokenizer and a pickled training_args.bin; no record files. The
    card says what is not known, and the pickle is not uploaded."""
    from transformers import Trainer, TrainingArguments

    folder = tmp_path / "trainer-saved"
    model = AutoModelForSequenceClassification.from_pretrained(run_dir)
    arguments = TrainingArguments(output_dir=str(tmp_path / "trainer"), report_to="none", use_cpu=True)
    Trainer(model=model, args=arguments, processing_class=AutoTokenizer.from_pretrained(run_dir)).save_model(folder)
    assert (folder / "training_args.bin").is_file()
    staging = tmp_path / "stage"
    result = push(["--model_dir", folder, "--repo_id", REPO_ID, "--dry_run", "--staging_dir", staging])
    assert "training_args.bin" not in result["files"] and "metrics.json" not in result["files"]
    card = ModelCard.load(staging / "README.md")
    assert card.data.eval_results is None and card.data.datasets is None
    assert "The folder holds no evaluation results" in card.text and "No evaluation results came" in card.text
    assert "carries no training record" in card.text and "{{" not in card.text


def test_init_from_a_hub_model_becomes_base_model(run_dir, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    args = json.loads((folder / "train_args.json").read_text())
    args["model"]["init_from"] = "google-bert/bert-base-uncased"
    (folder / "train_args.json").write_text(json.dumps(args))
    card = card_of(capsys, tmp_path, folder, "--dataset_id", "someone/r8-topics")
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert card.data.datasets == ["someone/r8-topics"]
    assert "Initialised from `google-bert/bert-base-uncased`, then fine-tuned on `someone/r8-topics`." in card.text
    assert "Trained from scratch" not in card.text


def fake_comparison(tmp_path, name: str, fingerprints: dict | None, data: dict) -> str:
    """A comparison folder's two files, as the comparison writes them, with given data fingerprints."""
    folder = tmp_path / name
    folder.mkdir()
    score = {"mean": 0.9, "std": 0.01}
    row = {"label": "tiny", "num_parameters": 1000, "summary": {"accuracy": score, "f1_macro": score}, "runs": [{}, {}]}
    results = {"split": "test", "rows": [row]} | ({"data_fingerprints": fingerprints} if fingerprints else {})
    settings = {
        "compare": {"seeds": "1,2", "pretrain_steps": 0},
        "training": {
            "max_steps": 12,
            "num_train_epochs": 3.0,
            "per_device_train_batch_size": 16,
            "learning_rate": 0.003,
        },
        "data": data,
    }
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "compare_args.json").write_text(json.dumps(settings))
    return str(folder)


def test_a_comparison_on_other_data_is_refused(run_dir, tmp_path, capsys):
    run_info = json.loads((run_dir / "run_info.json").read_text())
    data = json.loads((run_dir / "train_args.json").read_text())["data"]
    other = fake_comparison(tmp_path, "trec", {"test": "0123456789abcdef"}, data)
    error = error_of(capsys, ["--model_dir", run_dir, "--repo_id", REPO_ID, "--dry_run", "--comparison", other])
    assert "ran on other data than the model" in error
    # Without fingerprints (an older comparison), the data files decide.
    trec_files = data | {"train_file": "../shared/data/trec/train.csv", "test_file": "../shared/data/trec/test.csv"}
    legacy = fake_comparison(tmp_path, "legacy", None, trec_files)
    error = error_of(capsys, ["--model_dir", run_dir, "--repo_id", REPO_ID, "--dry_run", "--comparison", legacy])
    assert "ran on other data than the model" in error
    same = fake_comparison(tmp_path, "same", run_info["data_fingerprints"], data)
    card = card_of(capsys, tmp_path, run_dir, "--comparison", same)
    assert "## Against its baselines" in card.text and "| tiny | 2 | 90.00 ± 1.00 | 90.00 ± 1.00 | 1,000 |" in card.text
    assert "the comparison's rows give the spread over seeds" in card.text
    assert "variance over seeds is not measured" not in card.text
