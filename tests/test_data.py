"""data.py: loading and checking labelled text, the validation split, tokenizer training, tokenizing, padding."""

import collections

import datasets
import pytest
from train_helpers import R8_TEST, R8_TEST_ROWS, R8_TRAIN, THUCNEWS_TRAIN
from transformers import AutoTokenizer

from recurrent_transformer.cli import UsageError
from recurrent_transformer.data import (
    SPECIAL_TOKENS,
    load_labelled_data,
    make_collator,
    tokenize_splits,
    train_tokenizer,
    training_texts,
)

TRAIN_ROWS = 480  # tests/fixtures/r8/train.csv


def write_csv(path, rows, header="text,label"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def r8():
    return load_labelled_data(train_file=R8_TRAIN, test_file=R8_TEST, seed=0)


def test_label_names_are_the_sorted_training_labels(r8):
    assert r8.label_names == ["acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"]
    assert r8.label2id["earn"] == 2 and r8.id2label[2] == "earn"
    assert r8.splits["test"].features["label"].names == r8.label_names


def test_validation_split_is_stratified_seeded_and_disjoint(r8):
    train, validation = r8.splits["train"], r8.splits["validation"]
    assert len(train) + len(validation) == TRAIN_ROWS
    assert len(validation) == pytest.approx(TRAIN_ROWS / 10, abs=1)
    shares = collections.Counter(validation["label"])
    full = collections.Counter(train["label"]) + shares
    for label, count in full.items():  # each class keeps its share, to one row
        assert abs(shares[label] - count * len(validation) / TRAIN_ROWS) <= 1
    # Together the two splits hold each row of the file once (R8 has repeated texts: compare counts).
    file_rows = datasets.load_dataset("csv", data_files=str(R8_TRAIN), split="train")["text"]
    assert collections.Counter(train["text"]) + collections.Counter(validation["text"]) == collections.Counter(
        file_rows
    )
    again = load_labelled_data(train_file=R8_TRAIN, seed=0)
    assert again.splits["validation"]["text"] == validation["text"]
    other_seed = load_labelled_data(train_file=R8_TRAIN, seed=1)
    assert other_seed.splits["validation"]["text"] != validation["text"]


def test_test_split_is_kept_whole_and_in_order(r8):
    assert len(r8.splits["test"]) == R8_TEST_ROWS
    first_row = R8_TEST.read_text().splitlines()[1]
    assert first_row.startswith(r8.splits["test"][0]["text"][:40])


def test_max_samples_take_seeded_subsets_after_the_split():
    data = load_labelled_data(train_file=R8_TRAIN, test_file=R8_TEST, max_train_samples=50, max_test_samples=20)
    assert (len(data.splits["train"]), len(data.splits["test"])) == (50, 20)
    assert len(set(data.splits["train"]["label"])) > 1  # a random subset, not the file's first rows
    full = load_labelled_data(train_file=R8_TRAIN, test_file=R8_TEST)
    assert data.splits["validation"]["text"] == full.splits["validation"]["text"]


def test_custom_columns_json_and_integer_labels(tmp_path):
    rows = [{"sentence": f"text number {i}", "target": i % 3, "extra": "x"} for i in range(30)]
    datasets.Dataset.from_list(rows).to_json(tmp_path / "train.jsonl")
    data = load_labelled_data(train_file=tmp_path / "train.jsonl", text_column="sentence", label_column="target")
    assert data.label_names == ["0", "1", "2"]
    assert data.splits["train"].column_names == ["text", "label"]


def test_integer_labels_sort_by_value(tmp_path):
    path = write_csv(tmp_path / "train.csv", [f"row {i},{label}" for i, label in enumerate([2, 10, 1] * 4)])
    assert load_labelled_data(train_file=path).label_names == ["1", "2", "10"]


def test_hub_class_labels_become_their_names(monkeypatch):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["b", "a"])})
    hub = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": ["x", "y", "z", "w"] * 3, "label": [0, 1, 1, 0] * 3}, features),
        test=datasets.Dataset.from_dict({"text": ["q"], "label": [0]}, features),
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: hub)
    data = load_labelled_data(dataset_name="someone/some_data")
    assert data.label_names == ["a", "b"]
    assert data.splits["test"]["label"] == [data.label2id["b"]]


def test_unseen_test_labels_are_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["one,a", "two,b", "three,a", "four,b"])
    test = write_csv(tmp_path / "test.csv", ["five,c"])
    with pytest.raises(UsageError, match=r"test data has labels never seen in the training data: \['c'\]"):
        load_labelled_data(train_file=train, test_file=test)


def test_rows_without_label_are_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["one,a", "two,", "three,b"])
    with pytest.raises(UsageError, match="1 rows without a label"):
        load_labelled_data(train_file=train)


def test_unknown_format_is_refused(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("hello\n")
    with pytest.raises(UsageError, match="not one of the formats"):
        load_labelled_data(train_file=path)


@pytest.fixture(scope="module")
def thucnews_tokenizer():
    data = load_labelled_data(train_file=THUCNEWS_TRAIN)
    return train_tokenizer(training_texts(data.splits["train"]), vocab_size=3000, min_frequency=1, model_max_length=64)


def test_chinese_characters_are_single_tokens(thucnews_tokenizer):
    text = "科学家观测到恒星"
    assert thucnews_tokenizer.tokenize(text) == list(text)
    mixed = thucnews_tokenizer.tokenize("iPhone新品发布")
    assert mixed[-4:] == ["新", "品", "发", "布"] and "".join(mixed[:-4]).replace("##", "") == "iphone"


@pytest.mark.parametrize("algorithm", ["wordpiece", "bpe"])
def test_trained_tokenizer_round_trips_through_auto_tokenizer(tmp_path, algorithm):
    data = load_labelled_data(train_file=R8_TRAIN, max_train_samples=300)
    tokenizer = train_tokenizer(
        training_texts(data.splits["train"]), algorithm=algorithm, vocab_size=500, model_max_length=32
    )
    assert len(tokenizer) == 500
    assert [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = data.splits["train"][0]["text"]
    encoded = loaded(text, truncation=True)
    assert encoded["input_ids"] == tokenizer(text, truncation=True)["input_ids"]
    assert encoded["input_ids"][0] == loaded.cls_token_id == 2 and encoded["input_ids"][-1] == loaded.sep_token_id
    assert len(encoded["input_ids"]) == 32 == loaded.model_max_length
    assert (loaded.pad_token_id, loaded.unk_token_id, loaded.mask_token_id) == (0, 1, 4)
    assert loaded.decode(loaded("net profit")["input_ids"], skip_special_tokens=True) == "net profit"


def test_tokenize_splits_and_dynamic_padding():
    data = load_labelled_data(train_file=R8_TRAIN, max_train_samples=40, max_eval_samples=8)
    tokenizer = train_tokenizer(training_texts(data.splits["train"]), vocab_size=400, model_max_length=48)
    tokenized = tokenize_splits(data.splits, tokenizer, max_length=48)
    assert tokenized["train"].column_names == ["labels", "input_ids", "attention_mask"]
    lengths = [len(ids) for ids in tokenized["train"]["input_ids"]]
    assert max(lengths) == 48 and min(lengths) < 48  # truncated, not padded
    rows = [tokenized["train"][i] for i in range(4)]
    batch = make_collator(tokenizer)(rows)
    longest = max(len(row["input_ids"]) for row in rows)
    assert batch["input_ids"].shape == (4, longest)
    for row, ids, mask in zip(rows, batch["input_ids"], batch["attention_mask"], strict=True):
        assert mask.sum().item() == len(row["input_ids"])
        assert ids[len(row["input_ids"]) :].eq(tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == [row["labels"] for row in rows]
