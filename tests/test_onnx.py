"""ONNX export of the sequence classifier (`recurrent-transformer export-onnx`), run by onnxruntime against eager,
padding included: the bidirectional LSTM reads each row's real tokens before its padding, and the exported graph
must do the same. What the exporter cannot reproduce exactly is refused before anything is written."""

import pytest
import torch
from ecosystem_helpers import r8_rows, trained_folder
from train_helpers import error_line
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from recurrent_transformer import cli

onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("onnx", reason="ONNX export is in the dev extra: pip install -e '.[dev]'")


ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = trained_folder(tmp_path_factory.mktemp("onnx") / "model", "sequence", recurrent_hidden_size=16)
    result = cli.run("export-onnx", ["--model_dir", str(folder)])
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
    # R8 texts cut to 2, 5, ..., 20 words: rows of different lengths under the 48-token cut, all but one padded.
    long_rows = [row for row in r8_rows(100) if len(row["text"].split()) >= 40][:7]
    texts = [" ".join(row["text"].split()[: 2 + 3 * index]) for index, row in enumerate(long_rows)]
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
        cli.run("export-onnx", ["--model_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: {tmp_path / 'model.safetensors'} not found: expected the trained weights (save_pretrained)"


@pytest.mark.parametrize(
    ("head", "overrides", "message"),
    [
        ("causal", {}, "the exporter takes a sequence classifier"),
        ("sequence", {"recurrent_cell": "mingru"}, "recurrent_cell 'mingru'"),
        ("sequence", {"recurrent_cell": "gla"}, "recurrent_cell 'gla'"),
        ("sequence", {"recurrent_window": 4}, "recurrent_window"),
    ],
    ids=["causal-lm", "mingru", "gla", "local-window"],
)
def test_what_cannot_be_exported_exactly_is_refused(tmp_path, capsys, head, overrides, message):
    folder = trained_folder(tmp_path / "model", head, steps=1, rows=40, **overrides)
    before = sorted(path.name for path in folder.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        cli.run("export-onnx", ["--model_dir", str(folder)])
    assert exit_info.value.code == 2
    assert message in error_line(capsys)
    assert sorted(path.name for path in folder.iterdir()) == before  # no onnx/ folder written
