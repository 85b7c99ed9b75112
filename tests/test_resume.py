"""--resume: a run stopped after a checkpoint and resumed ends exactly where an uninterrupted run ends."""

import json

import pytest
from train_helpers import DATA_DIR, R8_TRAIN, SMOKE, assert_same_weights, files_under, run_script

from recurrent_transformer.data import load_labelled_data, train_tokenizer, training_texts

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"shared data not found at {DATA_DIR}")


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
    return output_dir, run_script("train", run_args(tokenizer_dir, output_dir))


@pytest.mark.parametrize("stop_after_step", [4, 3], ids=["mid-epoch", "epoch-end"])
def test_resumed_run_ends_with_the_uninterrupted_weights(tokenizer_dir, uninterrupted, tmp_path, stop_after_step):
    reference_dir, reference = uninterrupted
    output_dir = tmp_path / "run"
    stopped = run_script("train", [*run_args(tokenizer_dir, output_dir), "--stop_after_step", stop_after_step])
    assert stopped == {"stopped_at_step": stop_after_step}
    assert not (output_dir / "metrics.json").exists()
    before = {name: (output_dir / name).read_bytes() for name in files_under(output_dir)}

    resumed = run_script("train", [*run_args(tokenizer_dir, output_dir), "--resume"])
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
    assert [step for step, _ in losses] == list(range(1, 9))
    assert losses == pytest.approx(expected, abs=1e-6)
    run_info = json.loads((output_dir / "run_info.json").read_text())
    assert run_info["resumed_from"].endswith(f"step-{stop_after_step:07d}")
