"""Tiny trained folders for the ecosystem tests (pipelines, PEFT, ONNX): one tokenizer learned on a few hundred
R8 texts, and each head trained for a few steps in Python, saved as `save_pretrained` writes it. Seconds, not the
training script's minute: the script's own folders are tested in test_publish.py."""

import csv
import itertools
from pathlib import Path

import torch

from recurrent_transformer import (
    RecurrentTransformerConfig,
    RecurrentTransformerForCausalLM,
    RecurrentTransformerForMaskedLM,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
)
from recurrent_transformer.data import train_tokenizer

R8_TRAIN = Path(__file__).resolve().parent / "fixtures" / "r8" / "train.csv"  # 480 R8 rows, tests/fixtures/README.md
MAX_LENGTH = 48
TAGS = ["WORD", "NUMBER"]  # token classification: does the piece hold a digit (learnable from R8's own text)


def r8_rows(count: int) -> list[dict]:
    with R8_TRAIN.open(newline="") as handle:
        return list(itertools.islice(csv.DictReader(handle), count))


def r8_tokenizer(rows: list[dict]):
    return train_tokenizer([row["text"] for row in rows], vocab_size=600, model_max_length=MAX_LENGTH)


def tiny_config(tokenizer, **overrides) -> RecurrentTransformerConfig:
    values = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=0.0,
    )
    return RecurrentTransformerConfig(**(values | overrides))


def batches(tokenizer, rows: list[dict], batch_size: int = 16):
    """Padded batches of the rows' texts, endlessly."""
    for start in itertools.cycle(range(0, len(rows) - batch_size + 1, batch_size)):
        chunk = rows[start : start + batch_size]
        yield chunk, tokenizer([row["text"] for row in chunk], padding=True, truncation=True, return_tensors="pt")


def labels_for(head: str, model, chunk: list[dict], encoded, tokenizer) -> torch.Tensor:
    input_ids = encoded["input_ids"]
    if head == "sequence":
        return torch.tensor([model.config.label2id[row["label"]] for row in chunk])
    if head == "token":
        pieces = [tokenizer.convert_ids_to_tokens(row) for row in input_ids.tolist()]
        tags = torch.tensor([[int(any(char.isdigit() for char in piece)) for piece in row] for row in pieces])
        return tags.masked_fill(encoded["attention_mask"] == 0, -100)
    if head == "masked":
        labels = input_ids.clone()
        chosen = (torch.rand(input_ids.shape) < 0.15) & (encoded["attention_mask"] == 1)
        encoded["input_ids"] = input_ids.masked_fill(chosen, tokenizer.mask_token_id)
        return labels.masked_fill(~chosen, -100)
    return input_ids.masked_fill(encoded["attention_mask"] == 0, -100)  # causal: the model shifts the labels


def train_steps(model, tokenizer, rows: list[dict], head: str, steps: int, learning_rate: float = 3e-3) -> list[float]:
    """A few AdamW steps on R8 text; returns the losses."""
    optimizer = torch.optim.AdamW([param for param in model.parameters() if param.requires_grad], lr=learning_rate)
    model.train()
    losses = []
    for _, (chunk, encoded) in zip(range(steps), batches(tokenizer, rows), strict=False):
        labels = labels_for(head, model, chunk, encoded, tokenizer)
        loss = model(**encoded, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def build_model(head: str, tokenizer, rows: list[dict], **overrides):
    labels = sorted({row["label"] for row in rows})
    if head == "sequence":
        label2id = {label: index for index, label in enumerate(labels)}
        config = tiny_config(tokenizer, id2label=dict(enumerate(labels)), label2id=label2id, **overrides)
        return RecurrentTransformerForSequenceClassification(config)
    if head == "token":
        config = tiny_config(
            tokenizer, id2label=dict(enumerate(TAGS)), label2id={tag: i for i, tag in enumerate(TAGS)}, **overrides
        )
        return RecurrentTransformerForTokenClassification(config)
    if head == "masked":
        return RecurrentTransformerForMaskedLM(tiny_config(tokenizer, **overrides))
    return RecurrentTransformerForCausalLM(tiny_config(tokenizer, bidirectional=False, **overrides))


def trained_folder(folder: Path, head: str, steps: int = 15, rows: int = 300, **overrides) -> Path:
    """A head trained for `steps` steps on R8 text, saved with its tokenizer into `folder`."""
    torch.manual_seed(0)
    data = r8_rows(rows)
    tokenizer = r8_tokenizer(data)
    model = build_model(head, tokenizer, data, **overrides)
    train_steps(model, tokenizer, data, head, steps)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
