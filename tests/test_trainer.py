"""The model under transformers' `Trainer`: built with `AutoModelForSequenceClassification.from_config`, trained on
an R8 slice with our tokenizer and collator, saved with `trainer.save_model`, reloaded through the Auto classes."""

import collections

import numpy as np
import pytest
import torch
from train_helpers import R8_TEST, R8_TRAIN, one_thread, reset_accelerate
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from recurrent_transformer import RecurrentTransformerForSequenceClassification
from recurrent_transformer.data import (
    load_labelled_data,
    make_collator,
    tokenize_splits,
    train_tokenizer,
    training_texts,
)
from recurrent_transformer.metrics import classification_metrics
from recurrent_transformer.presets import load_preset


@pytest.fixture
def fresh_accelerate():
    reset_accelerate()  # Trainer builds its own Accelerator; start and leave the process-wide state clean
    yield
    reset_accelerate()


def test_trainer_fine_tunes_saves_and_reloads(tmp_path, fresh_accelerate):
    data = load_labelled_data(train_file=R8_TRAIN, test_file=R8_TEST)
    tokenizer = train_tokenizer(training_texts(data.splits["train"]), vocab_size=2000, model_max_length=64)
    tokenized = tokenize_splits(data.splits, tokenizer, max_length=64)
    config = load_preset(
        "tiny",
        vocab_size=len(tokenizer),
        num_labels=len(data.label_names),
        id2label=data.id2label,
        label2id=data.label2id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForSequenceClassification.from_config(config)
    assert isinstance(model, RecurrentTransformerForSequenceClassification)

    def compute_metrics(prediction):
        scores = classification_metrics(
            prediction.predictions.argmax(-1),
            prediction.label_ids,
            data.label_names,
            backend="sklearn",
            per_class=False,
        )
        return {name: value for name, value in scores.items() if name in ("accuracy", "f1_macro")}

    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=250,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        learning_rate=3e-3,
        warmup_steps=25,
        weight_decay=0.01,
        eval_strategy="steps",
        eval_steps=125,
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=make_collator(tokenizer),
        compute_metrics=compute_metrics,
    )
    with one_thread():
        trainer.train()
        test = trainer.predict(tokenized["test"])
    majority = max(collections.Counter(tokenized["test"]["labels"]).values()) / len(tokenized["test"])
    assert test.metrics["test_accuracy"] > majority + 0.15, (test.metrics, majority)
    assert any("eval_f1_macro" in entry for entry in trainer.state.log_history)

    trainer.save_model(str(tmp_path / "model"))
    assert (tmp_path / "model" / "model.safetensors").is_file()
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert reloaded.config.id2label == data.id2label
    texts = data.splits["test"]["text"][:16]
    batch = reloaded_tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
    trained = trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained(**batch).logits, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(reloaded(**batch).logits.argmax(-1).numpy(), test.predictions[:16].argmax(-1))
