"""transformers' pipelines, as they are, on our saved folders: each one's answer equals the model's own output."""

import pytest
import torch
from ecosystem_helpers import MAX_LENGTH, TAGS, trained_folder
from train_helpers import R8_TEST, run_command
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, pipeline

TEXTS = ["oil prices rose sharply in heavy trading", "the company reported net profit of 12 mln dlrs"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pipelines")
    return {head: trained_folder(root / head, head) for head in ("sequence", "token", "masked", "causal")}


def test_text_classification_pipeline(folders):
    classify = pipeline("text-classification", model=str(folders["sequence"]))
    results = classify(TEXTS, top_k=None)
    with torch.no_grad():
        probabilities = classify.model(**classify.tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.softmax(
            -1
        )
    labels = classify.model.config.id2label
    for result, row in zip(results, probabilities, strict=True):
        assert {item["label"] for item in result} == set(labels.values())
        best = result[0]
        assert best["label"] == labels[int(row.argmax())]
        assert best["score"] == pytest.approx(float(row.max()), abs=1e-5)


def test_token_classification_pipeline(folders):
    tag = pipeline("token-classification", model=str(folders["token"]), ignore_labels=[])
    result = tag(TEXTS[1])
    tokenizer = tag.tokenizer
    encoded = tokenizer(TEXTS[1], return_tensors="pt", return_special_tokens_mask=True)
    special = encoded.pop("special_tokens_mask")[0]
    with torch.no_grad():
        predicted = tag.model(**encoded).logits[0].argmax(-1)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    real = [index for index in range(len(pieces)) if not special[index]]  # [UNK] pieces are tagged too
    assert [item["index"] for item in result] == real
    # An [UNK] piece is reported as the text it stands for (from the offsets), every other piece as itself.
    assert [item["word"] for item in result if pieces[item["index"]] != tokenizer.unk_token] == [
        pieces[index] for index in real if pieces[index] != tokenizer.unk_token
    ]
    assert [item["entity"] for item in result] == [TAGS[int(predicted[index])] for index in real]
    assert all(TEXTS[1][item["start"] : item["end"]] == item["word"].removeprefix("##") for item in result)


def test_fill_mask_pipeline(folders):
    fill = pipeline("fill-mask", model=str(folders["masked"]))
    text = "oil prices [MASK] sharply"
    result = fill(text, top_k=3)
    model = AutoModelForMaskedLM.from_pretrained(folders["masked"])
    tokenizer = AutoTokenizer.from_pretrained(folders["masked"])
    encoded = tokenizer(text, return_tensors="pt")
    position = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero())
    with torch.no_grad():
        top = model(**encoded).logits[0, position].softmax(-1).topk(3)
    assert [item["token"] for item in result] == top.indices.tolist()
    assert [item["score"] for item in result] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert all("[MASK]" not in item["sequence"] for item in result)


def test_text_generation_pipeline(folders):
    generate = pipeline("text-generation", model=str(folders["causal"]))
    full = generate(TEXTS, max_new_tokens=6, do_sample=False)
    new = generate(TEXTS, max_new_tokens=6, do_sample=False, return_full_text=False)
    model = AutoModelForCausalLM.from_pretrained(folders["causal"])
    tokenizer = AutoTokenizer.from_pretrained(folders["causal"])
    for text, full_outputs, new_outputs in zip(TEXTS, full, new, strict=True):
        prompt = tokenizer(text, return_tensors="pt")
        direct = model.generate(**prompt, max_new_tokens=6, do_sample=False)[0, prompt["input_ids"].shape[1] :]
        assert len(direct) == 6
        assert new_outputs[0]["generated_text"] == tokenizer.decode(direct, skip_special_tokens=True)
        assert full_outputs[0]["generated_text"].startswith(text)


def test_text_classification_pipeline_truncates_like_training_and_evaluate(folders, tmp_path):
    """Texts longer than the tokenizer's model_max_length (the training max_length): the pipeline's default cuts them
    as training and `evaluate` do, so its labels are the ones `evaluate` scores (accuracy 1.0 against them)."""
    import csv

    with R8_TEST.open(newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:40]
    classify = pipeline("text-classification", model=str(folders["sequence"]))
    tokenizer, model = classify.tokenizer, classify.model
    assert tokenizer.model_max_length == MAX_LENGTH
    assert sum(len(tokenizer(text)["input_ids"]) > MAX_LENGTH for text in texts) >= 30  # long texts
    results = classify(texts, top_k=None)
    with torch.no_grad():
        cut = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits.softmax(-1)
        whole = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    labels = model.config.id2label
    for result, row in zip(results, cut, strict=True):
        assert {item["label"]: item["score"] for item in result} == pytest.approx(
            {labels[index]: float(score) for index, score in enumerate(row)}, abs=1e-5
        )
    assert (cut - whole).abs().max() > 1e-3  # without the cut the scores differ: the test can tell
    # A file labelled with the pipeline's predictions, scored by evaluate: every prediction agrees.
    path = tmp_path / "predicted.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([text, result[0]["label"]] for text, result in zip(texts, results, strict=True))
    scores = run_command(
        "evaluate", ["--model_dir", folders["sequence"], "--data_file", path, "--metrics_backend", "sklearn"]
    )
    assert scores["accuracy"] == 1.0 and scores["max_length"] == MAX_LENGTH
    # A flag given to the pipeline still wins.
    untruncated = pipeline("text-classification", model=str(folders["sequence"]), truncation=False)(
        texts[:1], top_k=None
    )
    assert {item["label"]: item["score"] for item in untruncated[0]} == pytest.approx(
        {labels[index]: float(score) for index, score in enumerate(whole[0])}, abs=1e-5
    )
