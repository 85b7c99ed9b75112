"""Labelled text -> tokenized `datasets` splits for sequence classification (the training side only).

`load_labelled_data` reads a Hub data set by name or local CSV/JSON/Parquet files, keeps a text and a label
column, reads the label names from the training split (sorted), and cuts a seeded (stratified where possible)
validation split from train when none is given; the test split is never used to choose anything.
`train_tokenizer` fits a WordPiece or BPE tokenizer on the training text with BERT's normalizer and
pre-tokenizer, so that every CJK character is its own pre-token, and wraps it as a `PreTrainedTokenizerFast`
that `AutoTokenizer.from_pretrained` loads back. Bad input raises `cli.UsageError` with one message naming the cause.
"""

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.utils import logging

from .cli import UsageError

logger = logging.get_logger(__name__)

# Special tokens in id order: [PAD] is 0, which the model configs use as pad_token_id.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# File suffix -> the `datasets` builder that reads it.
FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Split names a Hub data set may use for its validation data.
VALIDATION_SPLIT_NAMES = ("validation", "valid", "dev")
TOKENIZER_ALGORITHMS = ("wordpiece", "bpe")


@dataclass
class LabelledData:
    """Splits with columns `text` (str) and `label` (ClassLabel ids), and the label names in id order."""

    splits: datasets.DatasetDict
    label_names: list[str]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}


def check_data_file(path: str | Path, argument: str) -> Path:
    """An existing file in a format `datasets` reads, else `UsageError` naming the argument."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise UsageError(f"{argument}: file {str(path)!r} does not exist{where}")
    if path.suffix.lower() not in FILE_FORMATS:
        raise UsageError(f"{argument}: {str(path)!r} is not one of the formats {sorted(FILE_FORMATS)}")
    return path


def load_data_file(path: Path, name: str, cache_dir: str | None = None) -> datasets.Dataset:
    """One file as a `Dataset`; each file is read on its own, so one file's columns or emptiness is reported
    against that file rather than as a schema clash between splits."""
    builder = FILE_FORMATS[path.suffix.lower()]
    # keep_default_na=False: a CSV cell holding "NA" or "null" is text, not a missing value.
    extra = {"keep_default_na": False} if builder == "csv" else {}
    try:
        return datasets.load_dataset(builder, data_files={name: str(path)}, split=name, cache_dir=cache_dir, **extra)
    except ValueError as error:
        if "corresponds to no data" in str(error):  # datasets' words for a file with no rows
            raise UsageError(f"{name} data is empty: {str(path)!r} has no rows") from error
        raise UsageError(f"could not read {name} data {str(path)!r}: {error}") from error
    except (datasets.exceptions.DatasetGenerationError, OSError) as error:
        cause = error.__cause__ or error
        raise UsageError(f"could not read {name} data {str(path)!r}: {type(cause).__name__}: {cause}") from error


def _load_hub(name: str, config_name: str | None, cache_dir: str | None) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(name, config_name, cache_dir=cache_dir)
    except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as error:
        raise UsageError(
            f"could not load the data set {name!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            "Without a network, pass local files instead: --train_file path/train.csv --test_file path/test.csv "
            "(and --validation_file, or a validation split is cut from train)"
        ) from error


def _as_string_labels(split: datasets.Dataset) -> datasets.Dataset:
    feature = split.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        # A Hub data set's integer ids become its names, so every source reaches the same code path.
        return split.cast_column("label", datasets.Value("string")).map(
            lambda batch: {"label": [feature.int2str(int(label)) for label in batch["label"]]}, batched=True
        )
    if feature.dtype != "string":
        return split.cast_column("label", datasets.Value("string"))
    return split


def _label_sort_key(label: str):
    # Integer labels sort by value ("2" before "10"), other labels alphabetically.
    return (0, int(label), "") if re.fullmatch(r"-?\d+", label) else (1, 0, label)


def _clean_split(split: datasets.Dataset, name: str, text_column: str, label_column: str) -> datasets.Dataset:
    """Only the columns `text` and `label` (str); `UsageError` if a column, a row or a label is missing."""
    missing = [column for column in (text_column, label_column) if column not in split.column_names]
    if missing:
        raise UsageError(
            f"{name} data has no column {' or '.join(repr(column) for column in missing)}; its columns are "
            f"{split.column_names} (choose them with --text_column and --label_column)"
        )
    if len(split) == 0:
        raise UsageError(f"{name} data is empty: it has a header but no rows")
    split = split.select_columns([text_column, label_column])
    if text_column != "text" or label_column != "label":
        split = split.rename_columns({text_column: "text", label_column: "label"})
    missing_labels = sum(label is None or label == "" for label in split["label"])
    if missing_labels:
        raise UsageError(f"{name} data has {missing_labels} rows without a label in column {label_column!r}")
    split = _as_string_labels(split)
    if any(text is None for text in split["text"]):
        split = split.map(lambda batch: {"text": [text or "" for text in batch["text"]]}, batched=True)
    return split


def load_labelled_data(
    *,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    text_column: str = "text",
    label_column: str = "label",
    validation_split: float = 0.1,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    max_test_samples: int | None = None,
    cache_dir: str | None = None,
) -> LabelledData:
    """Load, check and split labelled text; see the module docstring.

    The returned splits are `train`, `validation` and, when test data is given, `test`. The `max_*_samples`
    slices are seeded random subsets, taken after the validation split is cut.
    """
    if (dataset_name is None) == (train_file is None):
        raise UsageError("give either a Hub data set (--dataset_name) or local files (--train_file ...), not both")
    if not 0 < validation_split < 1:
        raise UsageError(f"validation_split must lie between 0 and 1, got {validation_split}")
    if dataset_name is not None:
        raw = _load_hub(dataset_name, dataset_config_name, cache_dir)
        if "train" not in raw:
            raise UsageError(f"the data set {dataset_name!r} has no 'train' split; its splits are {list(raw)}")
        splits = {"train": raw["train"]}
        validation_name = next((name for name in VALIDATION_SPLIT_NAMES if name in raw), None)
        if validation_name is not None:
            splits["validation"] = raw[validation_name]
        if "test" in raw:
            splits["test"] = raw["test"]
    else:
        files = {"train": check_data_file(train_file, "train_file")}
        if validation_file is not None:
            files["validation"] = check_data_file(validation_file, "validation_file")
        if test_file is not None:
            files["test"] = check_data_file(test_file, "test_file")
        splits = {name: load_data_file(path, name, cache_dir) for name, path in files.items()}

    splits = {name: _clean_split(split, name, text_column, label_column) for name, split in splits.items()}
    label_names = sorted(set(splits["train"]["label"]), key=_label_sort_key)
    for name in ("validation", "test"):
        if name in splits:
            unseen = sorted(set(splits[name]["label"]) - set(label_names), key=_label_sort_key)
            if unseen:
                raise UsageError(
                    f"{name} data has labels never seen in the training data: {unseen}; training labels are "
                    f"{label_names}"
                )
    class_label = datasets.ClassLabel(names=label_names)
    splits = {name: split.cast_column("label", class_label) for name, split in splits.items()}

    if "validation" not in splits:
        splits["train"], splits["validation"] = split_validation(splits["train"], validation_split, seed)
    for name, limit in (("train", max_train_samples), ("validation", max_eval_samples), ("test", max_test_samples)):
        if name in splits and limit is not None and limit < len(splits[name]):
            splits[name] = splits[name].shuffle(seed=seed).select(range(limit)).flatten_indices()
    return LabelledData(datasets.DatasetDict(splits), label_names)


def split_fingerprint(split: datasets.Dataset) -> str:
    """A short SHA-256 of a split's rows (label name and text, in order): the same rows give the same value on any
    machine and from any path, so a model card can tell whether a comparison ran on the data its model saw."""
    digest = hashlib.sha256()
    names = split.features["label"].names
    for text, label in zip(split["text"], split["label"], strict=True):
        digest.update(f"{names[label]}\t{text}\n".encode())
    return digest.hexdigest()[:16]


def split_validation(train: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Cut a seeded validation split from train, stratified by label unless a class is too small for it."""
    if len(train) < 2:
        raise UsageError(f"training data has {len(train)} row: too few to cut a validation split from it")
    try:
        parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column="label")
    except ValueError as error:
        logger.warning(f"validation split not stratified ({error}); cutting a plain random split")
        parts = train.train_test_split(test_size=fraction, seed=seed)
    return parts["train"].flatten_indices(), parts["test"].flatten_indices()


def train_tokenizer(
    texts: Iterator[str] | list[str],
    *,
    algorithm: str = "wordpiece",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Fit a WordPiece or BPE vocabulary on `texts`; special tokens are [PAD]=0, [UNK], [CLS], [SEP], [MASK]."""
    if algorithm not in TOKENIZER_ALGORITHMS:
        raise UsageError(f"tokenizer algorithm {algorithm!r} is not one of {TOKENIZER_ALGORITHMS}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise UsageError(f"tokenizer_vocab_size={vocab_size} leaves no room beside the {len(SPECIAL_TOKENS)} specials")
    # Both models mark word-inner pieces with "##" so one decoder serves both.
    if algorithm == "wordpiece":
        model = models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS)
        )
    else:
        model = models.BPE(unk_token="[UNK]", continuing_subword_prefix="##")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            continuing_subword_prefix="##",
        )
    tokenizer = Tokenizer(model)
    # handle_chinese_chars puts spaces around each CJK character, so each becomes its own pre-token.
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return wrap_tokenizer(tokenizer, model_max_length)


def wrap_tokenizer(backend: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """A trained `tokenizers.Tokenizer` as the transformers tokenizer that `AutoTokenizer` saves and loads back,
    with this package's special tokens (also how a process receives the tokenizer another process trained)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def load_tokenizer(name_or_path: str, model_max_length: int | None = None) -> PreTrainedTokenizerBase:
    """An existing tokenizer by folder or Hub name; a [PAD] token is added when it has none."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise UsageError(f"could not load the tokenizer {name_or_path!r}: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    return without_token_types(tokenizer)


def without_token_types(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer, made to stop returning token_type_ids (also when saved): the models here take none (a converted
    BERT folds type 0 into its positions), so a tokenizer that returned them would hand the model an input it
    ignores."""
    input_names = [name for name in tokenizer.model_input_names if name != "token_type_ids"]
    tokenizer.model_input_names = tokenizer.init_kwargs["model_input_names"] = input_names
    return tokenizer


def training_texts(train: datasets.Dataset, batch_size: int = 1000) -> Iterator[list[str]]:
    """The training split's text in batches, the input `train_tokenizer` expects."""
    for start in range(0, len(train), batch_size):
        yield train[start : start + batch_size]["text"]


def tokenize_splits(
    splits: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> datasets.DatasetDict:
    """Columns `input_ids`, `attention_mask` and `labels`, truncated to `max_length`, unpadded."""

    def tokenize(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    tokenized = splits.map(tokenize, batched=True, remove_columns=["text"], desc="Tokenizing")
    return tokenized.rename_column("label", "labels")


def make_collator(tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None) -> DataCollatorWithPadding:
    """Pads each batch to its longest row (dynamic padding)."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
