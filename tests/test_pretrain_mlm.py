"""`recurrent-transformer pretrain-mlm` on an R8 slice: the MLM loss falls, the folder it saves gives its body to a
classifier (equal tensors, a fresh head), and train's --init_from fine-tunes from it."""

import json
import math

import datasets
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import R8_TRAIN, REPO_ROOT, SMOKE, error_line, files_under, run_command
from transformers import AutoModelForMaskedLM, AutoTokenizer

from recurrent_transformer import RecurrentTransformerForMaskedLM, RecurrentTransformerForSequenceClassification
from recurrent_transformer.machine import cpu_description
from recurrent_transformer.training.mlm import masked_lm_loss

TINY_LSTM = REPO_ROOT / "configs" / "compare" / "presets" / "tiny-lstm.json"


def pretrain_args(output_dir, *extra):
    """The tiny preset for 40 steps on 300 R8 texts: about 10 s."""
    return [
        *("--train_file", R8_TRAIN, "--model_config", "tiny", "--output_dir", output_dir),
        *("--max_train_samples", 300, "--max_eval_samples", 64, "--max_length", 64, "--tokenizer_vocab_size", 1000),
        *("--max_steps", 40, "--learning_rate", 3e-3, "--per_device_train_batch_size", 16, "--logging_steps", 5),
        *("--use_cpu", "--save_strategy", "no", "--disable_tqdm", "true", "--seed", 3),
        *extra,
    ]


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("mlm") / "run"
    return output_dir, run_command("pretrain-mlm", pretrain_args(output_dir))


def test_mlm_run_saves_a_masked_lm_folder(mlm_run):
    output_dir, results = mlm_run
    for name in ("model.safetensors", "config.json", "tokenizer.json", "train_args.json", "mlm_metrics.json"):
        assert (output_dir / name).is_file(), name
    assert not list(output_dir.glob("*.bin")), "nothing is pickled"
    config = json.loads((output_dir / "config.json").read_text())
    assert config["architectures"] == ["RecurrentTransformerForMaskedLM"] and config["sparse_prediction"] is True
    assert isinstance(AutoModelForMaskedLM.from_pretrained(output_dir), RecurrentTransformerForMaskedLM)
    assert json.loads((output_dir / "mlm_metrics.json").read_text()) == json.loads(json.dumps(results))
    assert results["global_step"] == 40 and results["split_sizes"] == {"train": 300, "validation": 48}
    # The CPU it got, as a classifier run's run_info.json says it: CPU seconds / (seconds x threads).
    share = results["train_cpu_seconds"] / (results["train_seconds"] * torch.get_num_threads())
    assert results["train_cpu_share"] == pytest.approx(share) and 0 < share < 1.5
    assert results["cpu"] == cpu_description()


def test_mlm_loss_decreases(mlm_run):
    _, results = mlm_run
    # The validation loss under one fixed masking, before and after: like for like.
    assert results["final_eval_loss"] < results["initial_eval_loss"] - 0.1, results
    losses = [entry["loss"] for entry in results["train_loss_history"]]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.1, losses


def test_classifier_loads_the_body_with_a_fresh_head(mlm_run):
    output_dir, _ = mlm_run
    saved = load_file(output_dir / "model.safetensors")
    model, info = RecurrentTransformerForSequenceClassification.from_pretrained(
        output_dir, num_labels=8, output_loading_info=True
    )
    body = {f"model.{name}": tensor for name, tensor in model.model.state_dict().items()}
    assert body, "no body weights"
    for name, tensor in body.items():
        assert torch.equal(tensor, saved[name]), name
    assert set(info["missing_keys"]) == {"score.weight", "score.bias"}
    assert not any(name.startswith("score") for name in saved)
    # Freshly initialised as the config says: normal(0, initializer_range) weights, zero bias.
    assert model.score.weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.3)
    assert torch.equal(model.score.bias, torch.zeros(8))


def test_train_init_from_fine_tunes_from_the_pretrained_body(mlm_run, tmp_path):
    output_dir, _ = mlm_run
    run_dir = tmp_path / "fine-tuned"
    # Learning rate 0: AdamW leaves every weight where it started, so the saved body is the pre-trained one.
    run_command(
        "train",
        [SMOKE, "--output_dir", run_dir, "--init_from", output_dir, "--learning_rate", 0, "--max_steps", 2],
    )
    fine_tuned, pretrained = load_file(run_dir / "model.safetensors"), load_file(output_dir / "model.safetensors")
    body = [name for name in fine_tuned if name.startswith("model.")]
    assert body and all(torch.equal(fine_tuned[name], pretrained[name]) for name in body)
    run_info = json.loads((run_dir / "run_info.json").read_text())
    assert run_info["init_from"] == str(output_dir)
    # No --tokenizer_name: the pre-trained folder's tokenizer, whose ids the embeddings were trained on.
    assert (run_dir / "tokenizer.json").read_text() == (output_dir / "tokenizer.json").read_text()


def test_init_from_a_different_preset_is_refused(mlm_run, tmp_path, capsys):
    output_dir, _ = mlm_run
    with pytest.raises(SystemExit) as stopped:
        run_command(
            "train", [SMOKE, "--output_dir", tmp_path / "out", "--init_from", output_dir, "--model_config", TINY_LSTM]
        )
    assert stopped.value.code == 2
    assert "init_from" in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_causal_preset_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_command("pretrain-mlm", pretrain_args(tmp_path / "out", "--config_overrides", "bidirectional=false"))
    assert stopped.value.code == 2
    assert "needs a bidirectional preset" in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_output_folder_holding_another_run_is_left_alone(mlm_run, capsys):
    output_dir, _ = mlm_run
    before = {name: (output_dir / name).read_bytes() for name in files_under(output_dir)}
    with pytest.raises(SystemExit) as stopped:
        run_command("pretrain-mlm", pretrain_args(output_dir))
    assert stopped.value.code == 2
    assert "already holds another run" in error_line(capsys)
    assert {name: (output_dir / name).read_bytes() for name in files_under(output_dir)} == before


def test_the_mlm_loss_is_scored_longest_texts_first(mlm_run):
    """The validation MLM loss reads length-sorted batches: few padded positions on long documents."""
    output_dir, _ = mlm_run
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    model = RecurrentTransformerForMaskedLM.from_pretrained(output_dir)
    texts = [" ".join(["profit"] * (3 + (index * 7) % 40)) for index in range(24)]
    dataset = datasets.Dataset.from_dict(dict(tokenizer(texts)))
    widths = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                           with_kwargs=True)  # fmt: skip
    loss = masked_lm_loss(model, dataset, tokenizer, 0.5, batch_size=4)
    hook.remove()
    assert len(widths) == 6 and widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    assert math.isfinite(loss)
