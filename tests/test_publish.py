"""scripts/push_to_hub.py on a folder from scripts/train.py: the dry run's file list, the rendered card (parsed by
huggingface_hub, numbers equal to metrics.json), and the real upload call failing clearly offline or without a
token (this machine cannot reach the Hub; nothing pretends an upload happened)."""

import json
import shutil

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard
from train_helpers import DATA_DIR, SMOKE, load_script, run_script
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from recurrent_transformer.configuration_recurrent_transformer import AUTO_MAP

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"shared data not found at {DATA_DIR}")

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
    run_script(
        "train",
        [SMOKE, "--output_dir", output_dir, "--max_steps", 10, "--eval_steps", 10, "--max_test_samples", 32]
        + ["--max_train_samples", 200, "--disable_tqdm"],
    )
    return output_dir


@pytest.fixture(scope="module")
def dry_run(run_dir, tmp_path_factory):
    staging = tmp_path_factory.mktemp("staging") / "stage"
    argv = ["--model_dir", run_dir, "--repo_id", REPO_ID, "--dry_run", "--staging_dir", staging]
    return staging, load_script("push_to_hub").main([str(arg) for arg in argv])


def push(argv: list) -> None:
    load_script("push_to_hub").main([str(arg) for arg in argv])


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
    assert data.pipeline_tag == "text-classification" and data.datasets == ["r8"]
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
    text = card.text
    assert "{{" not in text and "{%" not in text
    assert f"| accuracy | {scores['accuracy']:.4f} |" in text
    assert f'from_pretrained("{REPO_ID}", revision="main", trust_remote_code=True)' in text
    for section in ("## What the model is", "## Architecture", "## How to load it", "## Training data and settings"):
        assert section in text
    assert "## Results" in text and "## Limitations" in text


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


@pytest.mark.parametrize(
    "remove,message",
    [
        ("metrics.json", "metrics.json not found: expected the run's scores"),
        ("model.safetensors", "model.safetensors not found: expected the trained weights"),
    ],
)
def test_a_folder_missing_a_file_is_named(run_dir, tmp_path, capsys, remove, message):
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (folder / remove).unlink()
    error = error_of(capsys, ["--model_dir", folder, "--repo_id", REPO_ID, "--dry_run"])
    assert error.startswith(f"error: {folder / remove} not found: expected"), error
    assert message in error


def test_a_missing_folder_is_named(tmp_path, capsys):
    error = error_of(capsys, ["--model_dir", tmp_path / "nowhere", "--repo_id", REPO_ID, "--dry_run"])
    assert error.startswith(f"error: model_dir '{tmp_path / 'nowhere'}' is not a folder"), error


def test_a_comparison_folder_without_its_table_is_named(run_dir, tmp_path, capsys):
    (tmp_path / "compare").mkdir()
    argv = ["--model_dir", run_dir, "--repo_id", REPO_ID, "--dry_run", "--comparison", tmp_path / "compare"]
    error = error_of(capsys, argv)
    assert error.startswith(f"error: {tmp_path / 'compare' / 'results.json'} not found: expected the table"), error
    assert "not a folder" in error_of(capsys, [*argv[:-1], tmp_path / "nowhere"])
