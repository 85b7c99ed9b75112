"""Bad input to `recurrent-transformer train`: one line naming the cause, exit status 2, and the output folder
untouched (so the corrected command runs in the same folder)."""

import subprocess

import pytest
from train_helpers import R8_TEST, R8_TRAIN, REPO_ROOT, SMOKE, files_under, launch_env, python, run_command


def write_csv(path, rows, header="text,label"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def good_csv(tmp_path):
    return write_csv(tmp_path / "good.csv", [f"text {i},{'ab'[i % 2]}" for i in range(20)])


def fails_with(capsys, output_dir, argv, message):
    """Run train.py with `argv` on top of smoke.yaml; check the exit status, the single line, the clean folder."""
    before = files_under(output_dir) if output_dir.exists() else None
    with pytest.raises(SystemExit) as stopped:
        run_command("train", [SMOKE, "--output_dir", output_dir, *argv])
    assert stopped.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, error_lines
    assert message in error_lines[0], error_lines[0]
    if before is None:
        assert not output_dir.exists(), "the output folder was created"
    else:
        assert files_under(output_dir) == before
    return error_lines[0]


def test_missing_training_file(tmp_path, capsys):
    fails_with(capsys, tmp_path / "out", ["--train_file", tmp_path / "nope.csv"], "train_file: file")
    fails_with(capsys, tmp_path / "out", ["--test_file", "no/such/test.csv"], "does not exist (relative to")


def test_missing_text_column_names_the_columns(tmp_path, capsys):
    path = write_csv(tmp_path / "train.csv", ["hello,a", "world,b"], header="sentence,label")
    line = fails_with(capsys, tmp_path / "out", ["--train_file", path], "train data has no column 'text'")
    assert "its columns are ['sentence', 'label']" in line


def test_missing_label_column_names_the_columns(tmp_path, capsys, good_csv):
    line = fails_with(
        capsys, tmp_path / "out", ["--train_file", good_csv, "--label_column", "topic"], "no column 'topic'"
    )
    assert "['text', 'label']" in line and "--label_column" in line


def test_empty_data(tmp_path, capsys, good_csv):
    empty = write_csv(tmp_path / "empty.csv", [])
    fails_with(capsys, tmp_path / "out", ["--train_file", empty], "train data is empty")
    fails_with(capsys, tmp_path / "out", ["--train_file", good_csv, "--test_file", empty], "test data is empty")


def test_validation_labels_unseen_in_training(tmp_path, capsys, good_csv):
    validation = write_csv(tmp_path / "validation.csv", ["one,a", "two,zebra"])
    fails_with(
        capsys,
        tmp_path / "out",
        ["--train_file", good_csv, "--validation_file", validation, "--test_file", good_csv],
        "validation data has labels never seen in the training data: ['zebra']",
    )


def test_unknown_preset(tmp_path, capsys):
    line = fails_with(capsys, tmp_path / "out", ["--model_config", "hybrid-huge"], "unknown model preset 'hybrid-huge'")
    assert "tiny" in line  # the message lists the presets there are


def test_bad_model_override(tmp_path, capsys):
    fails_with(capsys, tmp_path / "out", ["--config_overrides", "hidden_size=30"], "model config 'tiny'")


def test_output_folder_holding_another_run_is_left_alone(tmp_path, capsys):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "metrics.json").write_text('{"accuracy": 0.97}')
    line = fails_with(capsys, output_dir, [], "already holds another run (metrics.json)")
    assert "--overwrite_output_dir" in line
    assert (output_dir / "metrics.json").read_text() == '{"accuracy": 0.97}'


def test_overwrite_output_dir_replaces_the_run(tmp_path):
    output_dir = tmp_path / "out"
    (output_dir / "checkpoints" / "step-0000099").mkdir(parents=True)
    (output_dir / "metrics.json").write_text("{}")
    (output_dir / "notes.txt").write_text("mine")
    run_command(
        "train",
        [SMOKE, "--output_dir", output_dir, "--overwrite_output_dir", "--max_steps", 1, "--disable_tqdm"],
    )
    assert not (output_dir / "checkpoints" / "step-0000099").exists()  # a stale checkpoint could be resumed
    assert '"test"' in (output_dir / "metrics.json").read_text()
    assert (output_dir / "notes.txt").read_text() == "mine"  # files the script does not write are kept


def test_resume_without_a_checkpoint(tmp_path, capsys):
    fails_with(capsys, tmp_path / "out", ["--resume"], "no checkpoint in")


def test_bad_choice(tmp_path, capsys):
    fails_with(capsys, tmp_path / "out", ["--metric_for_best_model", "bleu"], "metric_for_best_model='bleu'")


def test_hub_data_set_offline_says_how_to_pass_local_files(tmp_path):
    """Through the command line, as a user sees it: HF_HUB_OFFLINE=1 stands for a machine without a network
    (without it the same message comes after the Hub client's retries, about 25 s here)."""
    output_dir = tmp_path / "out"
    completed = subprocess.run(
        [
            python(),
            "-m",
            "recurrent_transformer",
            "train",
            "configs/train/agnews.yaml",
            "--output_dir",
            str(output_dir),
        ],
        cwd=REPO_ROOT,
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    (line,) = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert "'fancyzhx/ag_news'" in line
    assert "--train_file path/train.csv --test_file path/test.csv" in line
    assert not output_dir.exists()


def test_evaluate_script_refuses_unknown_labels(tmp_path, capsys):
    """evaluate applies the same rule: labels the model was not trained on are named."""
    model_dir = tmp_path / "model"
    run_command(
        "train",
        [SMOKE, "--output_dir", model_dir, "--max_steps", 1, "--disable_tqdm", "--train_file", R8_TRAIN],
    )
    other = write_csv(tmp_path / "other.csv", ["some text,earn", "more text,sports"])
    with pytest.raises(SystemExit) as stopped:
        run_command("evaluate", ["--model_dir", model_dir, "--data_file", other])
    assert stopped.value.code == 2
    assert "labels the model does not know: ['sports']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_command("evaluate", ["--model_dir", tmp_path / "nothing", "--data_file", R8_TEST])
    assert "holds no config.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--learning_rate", "-0.001"], "learning_rate=-0.001 must be 0 or more"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size=0 must be a positive integer"),
        (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps=0 must be a positive integer"),
        (["--warmup_ratio", "1.5"], "warmup_ratio=1.5 must be in [0, 1]"),
        (["--max_steps", "0"], "max_steps=0 must be -1 (use num_train_epochs) or a positive integer"),
        (["--validation_split", "1"], "validation_split=1.0 must be between 0 and 1"),
        (
            ["--model_config", "transformer-baseline", "--max_length", "1024"],
            "max_length=1024 exceeds max_position_embeddings=512 of model config 'transformer-baseline'",
        ),
        (["--learnng_rate", "1e-3"], "unknown argument '--learnng_rate' (did you mean '--learning_rate'?)"),
        (["--model_config", "missing.json"], "model config file 'missing.json' does not exist"),
        (["--lr_schedule_by", "seconds"], "lr_schedule_by='seconds' decays over the time budget: set max_train_seconds"),
        (
            ["--lr_schedule_by", "seconds", "--max_train_seconds", "60"],
            "lr_schedule_by='seconds' counts the warm-up in steps: set warmup_steps",
        ),
        (["--checkpoint_every_n_layers", "2"], "checkpoint_every_n_layers=2 says which layers --activation_checkpointing"),
        (
            ["--activation_checkpointing", "--checkpoint_every_n_layers", "0"],
            "checkpoint_every_n_layers=0 must be a positive integer",
        ),
    ],
    ids=["negative-lr", "batch-0", "accumulation-0", "warmup-ratio", "max-steps-0", "validation-split",
         "max-length-over-positions", "mistyped-flag", "missing-config-file", "schedule-by-seconds-without-budget",
         "schedule-by-seconds-with-warmup-ratio", "checkpoint-layers-without-checkpointing", "checkpoint-layers-0"],
)  # fmt: skip
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    output_dir = tmp_path / "out"
    fails_with(capsys, output_dir, argv, message)
    # Nothing was written, so the corrected command runs in the same folder (no "already holds another run").
    results = run_command("train", [SMOKE, "--output_dir", output_dir, "--max_steps", 1, "--disable_tqdm"])
    assert results["global_step"] == 1
