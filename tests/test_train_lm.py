"""`recurrent-transformer train-lm` end to end on a slice of tiny Shakespeare, and its bad-input messages."""

import json

import pytest
import torch
from train_helpers import REPO_ROOT, SHAKESPEARE, run_command
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline


def test_train_lm_trains_saves_and_samples(tmp_path):
    output_dir = tmp_path / "lm"
    results = run_command(
        "train-lm",
        [
            str(REPO_ROOT / "configs/train/shakespeare_char.yaml"),
            "--text_file", str(SHAKESPEARE),
            "--output_dir", str(output_dir),
            "--max_iters", "30", "--eval_interval", "15", "--eval_iters", "2", "--warmup_iters", "5",
            "--lr_decay_iters", "30", "--sample_tokens", "70",  # past the 64 learned positions
        ]
    )  # fmt: skip
    assert [result["preset"] for result in results] == ["char-hybrid", "char-transformer"]
    for result in results:
        curve = [point["val_loss"] for point in result["curve"]]
        assert curve[-1] < curve[0], result["preset"]  # learning happens
        assert result["sample"].startswith("ROMEO:")
        folder = output_dir / result["preset"]
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer.decode(tokenizer("To be, or not")["input_ids"]) == "To be, or not"
        generated = pipeline("text-generation", model=model, tokenizer=tokenizer)("KING:", max_new_tokens=5)
        assert generated[0]["generated_text"].startswith("KING:")
    saved = json.loads((output_dir / "results.json").read_text())
    assert saved["results"][0]["val_loss_exact"] == pytest.approx(results[0]["val_loss_exact"])
    assert "char-hybrid" in (output_dir / "results.md").read_text()
    assert torch.isfinite(torch.tensor(results[0]["val_loss_exact"]))


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--text_file", "missing.txt"], "missing.txt"),
        (["--model_configs", "char-hybird"], "unknown model preset"),
    ],
)
def test_train_lm_bad_input_gives_one_clear_message(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command("train-lm", ["--output_dir", str(tmp_path / "out"), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_lm_refuses_to_overwrite_a_finished_run(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(SystemExit):
        run_command("train-lm", ["--output_dir", str(tmp_path)])
    assert "overwrite_output_dir" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"
