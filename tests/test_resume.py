"""--resume: a run stopped after a checkpoint and resumed ends exactly where an uninterrupted run ends."""

import json

import pytest
from train_helpers import R8_TRAIN, SMOKE, assert_same_weights, error_line, files_under, run_command

from recurrent_transformer.data import load_labelled_data, train_tokenizer, training_texts


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """One tokenizer for every run: tokenizer training is not reproducible (huggingface/tokenizers#1794)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    data = load_labelled_data(train_file=R8_TRAIN, max_train_samples=500)
    train_tokenizer(training_texts(data.splits["train"]), vocab_size=1000, model_max_length=64).save_pretrained(folder)
    return folder


def run_args(tokenizer_dir, output_dir):
    # 96 rows at 16 a batch: 6 micro-batches an epoch, 2 per step, so 3 steps an epoch and 8 steps cross two epoch
    # ends. The tiny preset's dropout (0.1) stays on: resuming must restore the RNG too.
    return [
        SMOKE,
        *("--output_dir", output_dir, "--tokenizer_name", tokenizer_dir),
        *("--max_train_samples", 96, "--max_eval_samples", 32, "--max_test_samples", 32),
        *("--max_steps", 8, "--gradient_accumulation_steps", 2, "--eval_steps", 2, "--warmup_steps", 2),
        *("--save_total_limit", "10", "--disable_tqdm", "--report_to", "tensorboard", "--logging_steps", 1),
    ]


@pytest.fixture(scope="module")
def uninterrupted(tokenizer_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    return output_dir, run_command("train", run_args(tokenizer_dir, output_dir))


@pytest.fixture(scope="module")
def uninterrupted_grouped(tokenizer_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted-grouped") / "run"
    return output_dir, run_command("train", [*run_args(tokenizer_dir, output_dir), "--group_by_length"])


def check_resumed_run(tokenizer_dir, reference_run, output_dir, stop_after_step, extra_args=()):
    """Stop a run after `stop_after_step`, resume it, and compare it with the uninterrupted `reference_run`."""
    reference_dir, reference = reference_run
    stopped = run_command(
        "train", [*run_args(tokenizer_dir, output_dir), *extra_args, "--stop_after_step", stop_after_step]
    )
    assert stopped == {"stopped_at_step": stop_after_step}
    assert not (output_dir / "metrics.json").exists()
    before = {name: (output_dir / name).read_bytes() for name in files_under(output_dir)}

    resumed = run_command("train", [*run_args(tokenizer_dir, output_dir), *extra_args, "--resume"])
    assert_same_weights(output_dir, reference_dir, atol=1e-6)
    assert resumed["test"] == reference["test"]
    assert resumed["global_step"] == 8
    # Nothing the first part wrote is lost; its arguments and checkpoints stay as they were.
    after = files_under(output_dir)
    assert set(before) <= after
    for name in ("train_args.json", "tokenizer.json", f"checkpoints/step-{stop_after_step:07d}/model.safetensors"):
        assert (output_dir / name).read_bytes() == before[name], name
    state = json.loads((output_dir / "checkpoints" / "step-0000008" / "trainer_state.json").read_text())
    reference_state = json.loads((reference_dir / "checkpoints" / "step-0000008" / "trainer_state.json").read_text())
    assert state == reference_state  # the same validations, best step and position in the data
    # The training-loss history continues where it stopped: the same loss at every step (times differ).
    losses = [(entry["step"], entry["loss"]) for entry in json.loads((output_dir / "loss_history.json").read_text())]
    expected = [
        (entry["step"], entry["loss"]) for entry in json.loads((reference_dir / "loss_history.json").read_text())
    ]
    assert [step for step, _ in losses] == [step for step, _ in expected] == list(range(1, 9))
    assert [loss for _, loss in losses] == pytest.approx([loss for _, loss in expected], abs=1e-6)
    run_info = json.loads((output_dir / "run_info.json").read_text())
    assert run_info["resumed_from"].endswith(f"step-{stop_after_step:07d}")
    # The same batches: the same real and padded tokens, counted across the interruption.
    reference_info = json.loads((reference_dir / "run_info.json").read_text())
    assert run_info["train_tokens"] == reference_info["train_tokens"]
    assert run_info["train_padding_share"] == reference_info["train_padding_share"]
    # CPU seconds are counted across the interruption too: the resumed total includes the checkpoint's.
    clock = json.loads((output_dir / "checkpoints" / f"step-{stop_after_step:07d}" / "clock.json").read_text())
    assert 0 < clock["train_cpu_seconds"] < run_info["train_cpu_seconds"]


@pytest.mark.parametrize("stop_after_step", [4, 3], ids=["mid-epoch", "epoch-end"])
def test_resumed_run_ends_with_the_uninterrupted_weights(tokenizer_dir, uninterrupted, tmp_path, stop_after_step):
    check_resumed_run(tokenizer_dir, uninterrupted, tmp_path / "run", stop_after_step)


def test_resumed_length_grouped_run_ends_with_the_uninterrupted_weights(
    tokenizer_dir, uninterrupted, uninterrupted_grouped, tmp_path
):
    """--group_by_length stopped mid-epoch (step 4: the second of the epoch's three steps) and resumed: the
    length-grouped order is drawn from (seed, epoch) alone, so the resumed run meets the same batches."""
    check_resumed_run(tokenizer_dir, uninterrupted_grouped, tmp_path / "run", 4, ["--group_by_length"])
    # The grouping did change the batches (their padding is measured in test_length_grouping.py): other weights.
    grouped_dir, shuffled_dir = uninterrupted_grouped[0], uninterrupted[0]
    grouped, shuffled = (json.loads((folder / "run_info.json").read_text()) for folder in (grouped_dir, shuffled_dir))
    assert grouped["group_by_length"] and not shuffled["group_by_length"]
    with pytest.raises(AssertionError):
        assert_same_weights(grouped_dir, shuffled_dir, atol=1e-6)


@pytest.fixture
def stopped_run(tokenizer_dir, tmp_path):
    """A run stopped after its step-4 checkpoint."""
    output_dir = tmp_path / "run"
    run_command("train", [*run_args(tokenizer_dir, output_dir), "--stop_after_step", 4])
    return output_dir


def test_resume_with_changed_settings_is_refused_with_the_differences(tokenizer_dir, stopped_run, capsys):
    before = {name: (stopped_run / name).read_bytes() for name in files_under(stopped_run)}
    changed = ["--learning_rate", 0.5, "--max_steps", 10]
    with pytest.raises(SystemExit) as stopped:
        run_command("train", [*run_args(tokenizer_dir, stopped_run), *changed, "--resume"])
    assert stopped.value.code == 2
    line = error_line(capsys)
    assert "training.max_steps: 8 -> 10" in line and "training.learning_rate: 0.001 -> 0.5" in line
    assert "--allow_changed_settings" in line
    assert {name: (stopped_run / name).read_bytes() for name in files_under(stopped_run)} == before


def test_resume_may_accept_changed_settings_explicitly(tokenizer_dir, stopped_run):
    """A raised max_steps, accepted: the run goes on to the new budget from the checkpoint, on the new schedule
    (not warmed up again from zero), and train_args.json records what changed."""
    argv = [*run_args(tokenizer_dir, stopped_run), "--max_steps", 10, "--resume", "--allow_changed_settings"]
    results = run_command("train", argv)
    assert results["global_step"] == 10
    saved = json.loads((stopped_run / "train_args.json").read_text())
    assert saved["training"]["max_steps"] == 10 and saved["changed_on_resume"] == ["training.max_steps: 8 -> 10"]
    rates = {
        entry["step"]: entry["learning_rate"] for entry in json.loads((stopped_run / "loss_history.json").read_text())
    }
    # Linear decay after 2 warm-up steps to 0 at step 10: at step 5 the new schedule gives 1e-3 * (10 - 5) / 8.
    assert rates[5] == pytest.approx(1e-3 * 5 / 8) and rates[10] == 0.0


def test_allow_changed_settings_needs_resume(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_command("train", [SMOKE, "--output_dir", tmp_path / "out", "--allow_changed_settings"])
    assert "--allow_changed_settings only applies with --resume" in error_line(capsys)


def test_resume_may_add_activation_checkpointing(tokenizer_dir, uninterrupted, stopped_run):
    """A run that ran out of memory resumes with --activation_checkpointing without --allow_changed_settings: it
    recomputes the same forward, so the run still ends with the uninterrupted run's weights."""
    argv = [*run_args(tokenizer_dir, stopped_run), "--resume", "--activation_checkpointing"]
    results = run_command("train", [*argv, "--checkpoint_every_n_layers", 2])
    assert results["global_step"] == 8
    assert_same_weights(stopped_run, uninterrupted[0], atol=1e-6)
    assert "changed_on_resume" not in json.loads((stopped_run / "train_args.json").read_text())
