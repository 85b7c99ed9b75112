"""ONNX export of the sequence classifier (scripts/export_onnx.py), run by onnxruntime against eager, padding
included: the bidirectional LSTM packs padded batches, and the exported graph must do the same."""

import pytest
import torch
from ecosystem_helpers import DATA_DIR, r8_rows, trained_folder
from train_helpers import load_script
from transformers import AutoModelForSequenceClassification, AutoTokenizer

onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("onnx", reason="ONNX export is in the dev extra: pip install -e '.[dev]'")

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"shared data not found at {DATA_DIR}")

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = trained_folder(tmp_path_factory.mktemp("onnx") / "model", "sequence", recurrent_hidden_size=16)
    result = load_script("export_onnx").main(["--model_dir", str(folder)])
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    session = onnxruntime.InferenceSession(result["output"], providers=["CPUExecutionProvider"])
    return result, model, tokenizer, session


def run_both(model, session, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        eager = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    (logits,) = session.run(["logits"], {name: batch[name].numpy() for name in ("input_ids", "attention_mask")})
    return torch.from_numpy(logits), eager


def test_export_script_writes_a_checked_graph(exported):
    result, *_ = exported
    assert result["output"].endswith("onnx/model.onnx")
    assert result["max_abs_difference"] < ATOL


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_onnx_equals_eager_on_padded_r8_batches(exported, padding_side):
    _, model, tokenizer, session = exported
    tokenizer.padding_side = padding_side
    # R8 texts cut to 3, 8, ..., 33 words: rows of different lengths, all but the longest padded.
    texts = [" ".join(row["text"].split()[: 3 + 5 * index]) for index, row in enumerate(r8_rows(7))]
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).sum(dim=1).gt(0).sum() >= 5
    onnx_logits, eager = run_both(model, session, batch)
    torch.testing.assert_close(onnx_logits, eager, atol=ATOL, rtol=0)
    # Each padded row equals the same text scored alone (no padding): padding changes nothing.
    for index, text in enumerate(texts):
        alone, _ = run_both(model, session, tokenizer([text], truncation=True, return_tensors="pt"))
        torch.testing.assert_close(alone[0], onnx_logits[index], atol=ATOL, rtol=0)


def test_onnx_takes_any_batch_size_and_length(exported):
    _, model, tokenizer, session = exported
    for texts in (["oil"], ["grain exports rose"] * 5, ["a much longer text " * 8, "short"]):
        onnx_logits, eager = run_both(model, session, tokenizer(texts, padding=True, return_tensors="pt"))
        assert onnx_logits.shape == eager.shape
        torch.testing.assert_close(onnx_logits, eager, atol=ATOL, rtol=0)


def test_export_of_a_folder_without_weights_fails_clearly(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        load_script("export_onnx").main(["--model_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: {tmp_path / 'model.safetensors'} not found: expected the trained weights (save_pretrained)"
