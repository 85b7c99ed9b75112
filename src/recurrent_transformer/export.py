"""`recurrent-transformer export-onnx`: a trained sequence classifier to ONNX, checked against the eager model with
onnxruntime.

    recurrent-transformer export-onnx --model_dir runs/r8                   # writes runs/r8/onnx/model.onnx
    recurrent-transformer export-onnx --model_dir runs/r8 --output runs/r8.onnx --opset 17

The graph takes `input_ids` and `attention_mask` (int64, dynamic batch and sequence axes) and returns `logits`.
It is checked on a padded batch of texts of different lengths: the largest absolute difference from the eager
model must stay under `--atol` (default 1e-4), or the script fails. Needs the `export` extra (onnx,
onnxruntime, onnxscript).

Why the TorchScript exporter (`dynamo=False`): `torch.export` (the default `dynamo=True` route) refuses the model,
since the forward pass branches on data (`if not bool(new_tokens.all())`: the padding-free fast path) and packed
the row-dependent gathers are data-dependent too. The TorchScript exporter traces one path; tracing a padded example
records the padding path, which is exact for unpadded batches too: each direction of an LSTM/GRU/RNN runs over rows
whose real tokens are gathered in front of their padding (reversed for the backward direction), and maps to ONNX's
recurrent operators and gathers. So the example batch is always padded.
"""

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .cli import UsageError, parse_arguments, run_command

INPUT_NAMES = ["input_ids", "attention_mask"]
CLASSIFIER = "RecurrentTransformerForSequenceClassification"
# Texts of different lengths: the traced example must hold padding (see the module docstring).
EXAMPLE_TEXTS = [
    "the company said net profit rose in the first quarter on higher sales of oil and grain",
    "shares fell",
    "the bank raised its interest rate",
]


@dataclass
class ExportArguments:
    model_dir: str = field(
        metadata={"help": "a saved sequence classifier with its tokenizer (recurrent-transformer train)"}
    )
    output: str | None = field(default=None, metadata={"help": "the .onnx file; unset: <model_dir>/onnx/model.onnx"})
    opset: int = field(default=17, metadata={"help": "ONNX opset version"})
    atol: float = field(default=1e-4, metadata={"help": "largest allowed |onnx - eager| on the padded check batch"})


def load(model_dir: str):
    folder = Path(model_dir)
    for name, expected in (("config.json", "the model's config"), ("model.safetensors", "the trained weights")):
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name} not found: expected {expected} (save_pretrained)")
    check_exportable(folder, json.loads((folder / "config.json").read_text()))
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load a sequence classifier and tokenizer from {folder}: {error}") from error
    return model, tokenizer


def check_exportable(folder: Path, config: dict) -> None:
    """Refuse what the traced graph cannot reproduce: another head (loading it as a classifier would export a freshly
    initialised score layer), and layers whose traced loops depend on the example's length (minGRU's scan, gla's
    chunks, local windows, blockwise sliding-window attention): the graph would be exact for that length only."""
    architectures = config.get("architectures") or []
    if architectures != [CLASSIFIER]:
        raise UsageError(
            f"{folder} holds {architectures or 'no architectures entry'}: the exporter takes a sequence classifier "
            f"({CLASSIFIER}, as `recurrent-transformer train` saves)"
        )
    cell = config.get("recurrent_cell")
    reasons = {
        f"recurrent_cell {cell!r} (its scan and chunks unroll to the traced length)": cell in ("mingru", "gla")
        and any(kind != "full_attention" for kind in config.get("layer_types", [])),
        "recurrent_window (local windows unfold to the traced length)": config.get("recurrent_window") is not None,
        "'hybrid_sliding' layers (blockwise attention follows the traced length)": "hybrid_sliding"
        in config.get("layer_types", []),
    }
    refused = [reason for reason, applies in reasons.items() if applies]
    if refused:
        raise UsageError(
            f"{folder} cannot be exported to ONNX exactly: {'; '.join(refused)}; lstm, gru and rnn "
            "cells over whole sequences export exactly"
        )


def padded_batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    if bool(batch["attention_mask"].all()):
        raise UsageError("the example batch has no padding: the traced graph would miss the padded path")
    return {name: batch[name] for name in INPUT_NAMES}


def export(model, example: dict[str, torch.Tensor], output: Path, opset: int) -> None:
    """torch.onnx's TorchScript exporter with dynamic batch and sequence axes (see the module docstring)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {"logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about each Python-level check it freezes (input-id range, the padding branch).
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (example["input_ids"], example["attention_mask"]),
            str(output),
            input_names=INPUT_NAMES,
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )


def max_difference(model, session, batch: dict[str, torch.Tensor]) -> float:
    """Largest |onnxruntime - eager| over the logits of one batch."""
    with torch.no_grad():
        eager = model(**batch).logits
    exported = session.run(["logits"], {name: batch[name].numpy() for name in INPUT_NAMES})[0]
    return float((torch.from_numpy(exported) - eager).abs().max())


def export_and_check(args: ExportArguments) -> dict:
    model, tokenizer = load(args.model_dir)
    output = Path(args.output) if args.output else Path(args.model_dir) / "onnx" / "model.onnx"
    export(model, padded_batch(tokenizer, EXAMPLE_TEXTS[:2]), output, args.opset)

    import onnx
    import onnxruntime

    onnx.checker.check_model(str(output))
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    # Another batch size and other lengths than the traced example's, with padding.
    difference = max_difference(model, session, padded_batch(tokenizer, EXAMPLE_TEXTS[::-1]))
    if difference > args.atol:
        raise UsageError(f"{output}: onnxruntime's logits differ from eager by {difference:.3g} > atol={args.atol}")
    print(f"wrote {output}; onnxruntime vs eager on a padded batch: max abs difference {difference:.3g}")
    return {"output": str(output), "max_abs_difference": difference}


def run(argv: list[str]) -> dict:
    (args,) = parse_arguments((ExportArguments,), argv)
    return export_and_check(args)


def main(argv: list[str] | None = None) -> dict:
    """Export and check; returns the file and the measured difference. Errors: one `error:` line, exit status 2."""
    return run_command(run, argv)
