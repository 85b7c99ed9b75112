"""BERT/RoBERTa checkpoints converted into the recurrent Transformer: same function at step 0, exact padding once
the recurrence is on, gradients reach it, the written folder reloads, bad input gives clear errors.

Every source is a tiny random checkpoint saved into a temporary folder (nothing comes from the Hub); its
parameters are all perturbed so that LayerNorms, biases, the token-type row and the pad rows are not at their
initial values and a misplaced weight cannot go unnoticed.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BLOCK_PACKAGE, CELLS, padded_batch, randomize_biases
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertTokenizer,
    GPT2Config,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaModel,
)

from recurrent_transformer import (
    RecurrentTransformerForMaskedLM,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
    RecurrentTransformerModel,
)
from recurrent_transformer.conversion import (
    RECORD_FILE,
    convert_checkpoint,
    convert_to_folder,
    load_conversion_record,
    recurrent_layer_indices,
    save_converted,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ENGLISH_WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park", "big", "small", "happy", "##s"]
ENGLISH_TEXTS = ["the cat sat on the mat", "a dog ran", "the big dogs ran in a small park", "happy cats"]
CHINESE_CHARS = list("我们喜欢学习中文今天天气很好他去北京")
CHINESE_TEXTS = ["我们喜欢学习中文", "今天天气很好", "他去北京了", "我们很好"]
# name -> (source class, tokens of its WordPiece vocabulary or None for RoBERTa, texts)
SOURCES = {
    "bert-cls-english": (BertForSequenceClassification, ENGLISH_WORDS, ENGLISH_TEXTS),
    "bert-cls-chinese": (BertForSequenceClassification, CHINESE_CHARS, CHINESE_TEXTS),
    "bert-mlm-english": (BertForMaskedLM, ENGLISH_WORDS, ENGLISH_TEXTS),
    "bert-mlm-chinese": (BertForMaskedLM, CHINESE_CHARS, CHINESE_TEXTS),
    "roberta-model": (RobertaModel, None, None),
    "roberta-cls": (RobertaForSequenceClassification, None, None),
}
CLASSIFICATION_SOURCES = ("bert-cls-english", "bert-cls-chinese", "roberta-cls")
ROBERTA_VOCAB = 40
LENGTHS = (7, 4, 5)
TOLERANCE = dict(atol=1e-5, rtol=0)


def perturb(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)


def build_source(name: str, folder) -> None:
    source_class, words, _ = SOURCES[name]
    torch.manual_seed(0)
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=3)
    if words is None:  # RoBERTa: positions start at pad_token_id + 1 = 2
        config = RobertaConfig(vocab_size=ROBERTA_VOCAB, max_position_embeddings=26, type_vocab_size=1, **shape)
    else:
        config = BertConfig(vocab_size=len(SPECIALS) + len(words), max_position_embeddings=24, **shape)
        BertTokenizer(vocab={token: i for i, token in enumerate(SPECIALS + words)}).save_pretrained(folder)
    model = source_class(config)
    perturb(model, seed=len(name))
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def source_folders(tmp_path_factory) -> dict:
    folders = {}
    for name in SOURCES:
        folders[name] = tmp_path_factory.mktemp(name)
        build_source(name, folders[name])
    return folders


def source_batch(name: str, folder) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input_ids and attention_mask: BERT numbers positions 0..L-1 whatever the mask, so right
    padding is the case where padded and unpadded source outputs agree."""
    _, words, texts = SOURCES[name]
    if words is not None:
        encoded = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"]
    generator = torch.Generator().manual_seed(3)
    sequences = [torch.randint(3, ROBERTA_VOCAB, (length,), generator=generator) for length in LENGTHS]
    sequences = [torch.cat([torch.tensor([0]), seq, torch.tensor([2])]) for seq in sequences]  # <s> ... </s>
    return padded_batch(sequences, "right", pad_token_id=1)  # RoBERTa finds padding from the pad id


def assert_same_on_real_tokens(actual, expected, attention_mask, msg=""):
    real = attention_mask.bool()
    torch.testing.assert_close(actual[real], expected[real], **TOLERANCE, msg=msg)


def recurrent_parameter_names(model) -> set[str]:
    return {name for name, _ in model.named_parameters() if ".recurrent" in name}


# ---------------------------------------------------------------------------------------------------------------
# Step 0: the converted model computes what the source computed
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("source_name", list(SOURCES))
def test_converted_model_reproduces_the_source_with_recurrence_in_every_layer(source_name, cell, source_folders):
    folder = source_folders[source_name]
    model, record = convert_checkpoint(folder, recurrent_layers="all", recurrent_cell=cell)
    assert model.config.layer_types == ["hybrid", "hybrid"] and record["recurrent_layers"] == [0, 1]
    source_body = AutoModel.from_pretrained(folder).eval()
    input_ids, attention_mask = source_batch(source_name, folder)
    with torch.no_grad():
        for row in range(input_ids.shape[0]):  # each text alone, no padding
            ids = input_ids[row : row + 1, attention_mask[row].bool()]
            torch.testing.assert_close(
                model.model(ids).last_hidden_state, source_body(ids).last_hidden_state, **TOLERANCE, msg=f"row {row}"
            )
        expected = source_body(input_ids, attention_mask=attention_mask).last_hidden_state
        actual = model.model(input_ids, attention_mask=attention_mask).last_hidden_state
        assert_same_on_real_tokens(actual, expected, attention_mask, msg="right padding")
        if source_name in CLASSIFICATION_SOURCES:
            source = AutoModelForSequenceClassification.from_pretrained(folder).eval()
            torch.testing.assert_close(
                model(input_ids, attention_mask=attention_mask).logits,
                source(input_ids, attention_mask=attention_mask).logits,
                **TOLERANCE,
            )


def test_none_spec_reproduces_the_source_with_no_new_parameters(source_folders):
    folder = source_folders["bert-cls-chinese"]
    model, record = convert_checkpoint(folder, recurrent_layers="none")
    assert model.config.layer_types == ["full_attention", "full_attention"]
    assert model.config.id2label == AutoConfig.from_pretrained(folder).id2label and model.config.num_labels == 3
    assert record["new_parameters"] == [] and record["recurrent_layers"] == [] and record["head"] == "pretrained"
    source = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    input_ids, attention_mask = source_batch("bert-cls-chinese", folder)
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids, attention_mask=attention_mask).logits,
            source(input_ids, attention_mask=attention_mask).logits,
            **TOLERANCE,
        )


def test_last_k_spec_puts_recurrence_in_the_last_layers(source_folders):
    folder = source_folders["bert-mlm-english"]
    model, record = convert_checkpoint(
        folder, RecurrentTransformerModel, recurrent_layers="last:1", recurrent_cell="gru"
    )
    assert model.config.layer_types == ["full_attention", "hybrid"] and record["recurrent_layers"] == [1]
    assert model.layers[0].recurrent is None and model.layers[1].recurrent is not None
    input_ids, attention_mask = source_batch("bert-mlm-english", folder)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder).eval()(input_ids, attention_mask=attention_mask)
        actual = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert_same_on_real_tokens(actual, expected.last_hidden_state, attention_mask)


@pytest.mark.parametrize(
    "options",
    [dict(recurrent_hidden_size=16), dict(recurrent_window=3, recurrent_cell="gru"), dict(bidirectional=False)],
    ids=["narrow-state", "local-window", "causal"],
)
def test_recurrence_options_convert(options, source_folders):
    """A narrower state (with its output projection) and a local window still leave the step-0 function alone;
    bidirectional=False makes attention causal, so there the model only has to build and pool the last token."""
    folder = source_folders["bert-cls-english"]
    model, record = convert_checkpoint(folder, **options)
    assert all(record[name] == value for name, value in options.items() if name in record)
    input_ids, attention_mask = source_batch("bert-cls-english", folder)
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask).logits
        expected = AutoModelForSequenceClassification.from_pretrained(folder).eval()(
            input_ids, attention_mask=attention_mask
        )
    if options.get("bidirectional", True):
        torch.testing.assert_close(logits, expected.logits, **TOLERANCE)
    else:
        assert model.config.classifier_pooling == "last" and torch.isfinite(logits).all()


def test_a_loaded_model_converts_like_its_folder(source_folders):
    folder = source_folders["roberta-model"]
    torch.manual_seed(1)
    from_folder, _ = convert_checkpoint(folder, RecurrentTransformerModel, recurrent_cell="mingru")
    torch.manual_seed(1)
    from_model, record = convert_checkpoint(
        AutoModel.from_pretrained(folder), RecurrentTransformerModel, "all", "mingru"
    )
    assert record["source_architecture"] == "RobertaModel"
    for name, tensor in from_folder.state_dict().items():
        assert torch.equal(from_model.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("all", [0, 1, 2, 3]),
        ("none", []),
        ("last:2", [2, 3]),
        ("last:0", []),
        ("0, 2", [0, 2]),
        ([3, 1], [1, 3]),
        ("AHAH", [1, 3]),
    ],
)
def test_recurrent_layer_specs(spec, expected):
    assert recurrent_layer_indices(spec, num_hidden_layers=4) == expected


@pytest.mark.parametrize(
    "spec,message",
    [
        ("last:5", "more than the source's 4 layers"),
        ("0,4", r"names layers \[4\] outside 0..3"),
        ([-1], r"names layers \[-1\] outside"),
        ("HAH", "has 3 letters but the source has 4 layers"),
        ("every other", "does not parse"),
        ("-1", "does not parse"),
        (2, "does not parse"),
        ([1.5], "does not parse"),
    ],
)
def test_bad_recurrent_layer_specs_raise_a_clear_error(spec, message):
    with pytest.raises(ValueError, match=f"recurrent_layers=.*{message}"):
        recurrent_layer_indices(spec, num_hidden_layers=4)


# ---------------------------------------------------------------------------------------------------------------
# Once the recurrence is on
# ---------------------------------------------------------------------------------------------------------------


def switched_on(folder, cell: str):
    """A converted model whose gates are 0.5 and whose biases are random: the recurrence now matters."""
    torch.manual_seed(0)
    model, _ = convert_checkpoint(folder, recurrent_cell=cell)
    randomize_biases(model)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.recurrent_gate.fill_(0.5)
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
def test_switched_on_model_keeps_padding_exact_and_reloads_bit_identically(cell, source_folders, tmp_path):
    model = switched_on(source_folders["bert-cls-english"], cell)
    generator = torch.Generator().manual_seed(5)
    sequences = [torch.randint(5, model.config.vocab_size, (length,), generator=generator) for length in LENGTHS]
    with torch.no_grad():
        alone = [model.model(seq[None]).last_hidden_state[0] for seq in sequences]
        for side in ("right", "left"):  # positions come from the mask, so left padding is exact too
            input_ids, attention_mask = padded_batch(sequences, side)
            batched = model.model(input_ids, attention_mask=attention_mask).last_hidden_state
            for row, expected in enumerate(alone):
                torch.testing.assert_close(
                    batched[row, attention_mask[row].bool()], expected, **TOLERANCE, msg=f"{side} row {row}"
                )

    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is RecurrentTransformerForSequenceClassification
    assert loaded.config.norm_placement == "post" and loaded.config.recurrent_gate
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask).logits
        assert torch.equal(loaded(input_ids, attention_mask=attention_mask).logits, expected)


def test_gradients_reach_the_recurrence_after_one_step(source_folders):
    torch.manual_seed(0)
    no_dropout = dict(hidden_dropout_prob=0.0, attention_dropout=0.0, classifier_dropout=0.0)
    model, record = convert_checkpoint(source_folders["bert-cls-english"], recurrent_cell="lstm", **no_dropout)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    input_ids, attention_mask = source_batch("bert-cls-english", source_folders["bert-cls-english"])
    labels = torch.tensor([0, 1, 2, 1])
    recurrent = [name for name in record["new_parameters"] if "recurrent_gate" not in name]
    gates = [name for name in record["new_parameters"] if "recurrent_gate" in name]

    def gradients() -> dict:
        optimizer.zero_grad()
        model(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        return {name: param.grad for name, param in model.named_parameters()}

    first = gradients()
    assert all(first[name].abs().sum() > 0 for name in gates)
    assert all(first[name] is None or not first[name].any() for name in recurrent)  # the zero gate blocks them
    optimizer.step()
    assert all(dict(model.named_parameters())[name].abs().min() > 0 for name in gates)
    second = gradients()
    missing = [name for name in recurrent if second[name] is None or not second[name].any()]
    assert not missing, f"no gradient after one step for {missing}"


def test_loading_with_added_recurrence_starts_the_new_gates_at_zero(source_folders, tmp_path):
    """from_pretrained initialises missing weights with `_init_weights`, which must set the gate to its init."""
    folder = source_folders["bert-cls-english"]
    model, _ = convert_checkpoint(folder, recurrent_layers="none")
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, layer_types=["hybrid", "hybrid"])
    widened = AutoModelForSequenceClassification.from_pretrained(tmp_path, config=config).eval()
    assert all(not layer.recurrent_gate.any() for layer in widened.model.layers)
    input_ids, attention_mask = source_batch("bert-cls-english", folder)
    with torch.no_grad():
        torch.testing.assert_close(
            widened(input_ids, attention_mask=attention_mask).logits,
            model(input_ids, attention_mask=attention_mask).logits,
            **TOLERANCE,
        )


# ---------------------------------------------------------------------------------------------------------------
# New parameters, the written folder
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source_name,fresh_head",
    [
        ("bert-cls-english", set()),
        ("roberta-cls", set()),
        ("bert-mlm-english", {"pooler.weight", "pooler.bias", "score.weight", "score.bias"}),  # no pooler saved
        ("roberta-model", {"pooler.weight", "pooler.bias", "score.weight", "score.bias"}),
    ],
)
def test_new_parameters_are_the_recurrent_parts_and_a_fresh_head(source_name, fresh_head, source_folders):
    model, record = convert_checkpoint(source_folders[source_name], recurrent_cell="gru")
    assert set(record["new_parameters"]) == recurrent_parameter_names(model) | fresh_head
    assert record["head"] == ("new" if fresh_head else "pretrained")
    assert len(recurrent_parameter_names(model)) == 2 * (1 + 2 + 8)  # per layer: gate, norm, bidirectional GRU


def test_written_folder_reloads_through_the_auto_classes(source_folders, tmp_path):
    source_folder = source_folders["bert-mlm-chinese"]
    folder = tmp_path / "converted"
    model, record = convert_to_folder(source_folder, folder, recurrent_layers="last:1", num_labels=2)
    files = {path.name for path in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", RECORD_FILE} <= files
    assert {"configuration_recurrent_transformer.py", "modeling_recurrent_transformer.py"} <= files
    assert load_conversion_record(folder) == json.loads(json.dumps(record))
    assert record["source_architecture"] == "BertForMaskedLM" and record["source"] == str(source_folder)
    assert "cls.predictions.transform.dense.weight" in record["source_parameters_left_behind"]

    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer(CHINESE_TEXTS, padding=True, return_tensors="pt")
    expected_ids = AutoTokenizer.from_pretrained(source_folder)(CHINESE_TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(encoded["input_ids"], expected_ids["input_ids"])
    assert "token_type_ids" not in encoded  # the converted model folds token type 0 into its positions
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert type(loaded) is RecurrentTransformerForSequenceClassification and loaded.config.num_labels == 2
    with torch.no_grad():
        assert torch.equal(loaded(**encoded).logits, model(**encoded).logits)


REMOTE_SCRIPT = BLOCK_PACKAGE + textwrap.dedent(
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    folder, inputs_path, out_path = sys.argv[1:4]
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**torch.load(inputs_path)).logits
    json.dump({"class": type(model).__module__ + "." + type(model).__name__, "logits": logits.tolist()},
              open(out_path, "w"))
    """
)


def test_written_folder_loads_with_remote_code_where_the_package_is_missing(source_folders, tmp_path):
    folder = tmp_path / "converted"
    model, _ = convert_to_folder(source_folders["bert-cls-english"], folder, recurrent_cell="mingru")
    input_ids, attention_mask = source_batch("bert-cls-english", source_folders["bert-cls-english"])
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask}, tmp_path / "inputs.pt")
    (tmp_path / "load_remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "load_remote.py", str(folder), "inputs.pt", "out.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads((tmp_path / "out.json").read_text())
    assert not output["class"].startswith("recurrent_transformer."), output["class"]
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(torch.tensor(output["logits"]), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    GPT2Config(n_layer=1, n_embd=32, n_head=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model_type 'gpt2' is not supported.*\['bert', 'roberta'\]"):
        convert_checkpoint(tmp_path)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="source folder .*nowhere.* does not exist"):
        convert_checkpoint(tmp_path / "nowhere")


def test_a_head_that_cannot_be_mapped_is_refused(tmp_path):
    config = BertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    BertForQuestionAnswering(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="BertForQuestionAnswering has a head that cannot be mapped"):
        convert_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "model_class,overrides,message",
    [
        (RecurrentTransformerForTokenClassification, {}, "SequenceClassification head cannot be mapped to .*Token"),
        (RecurrentTransformerForMaskedLM, {}, "not a conversion target"),
        (RecurrentTransformerForSequenceClassification, {"num_labels": 5}, "num_labels=5 differs from the 3 labels"),
        (RecurrentTransformerForSequenceClassification, {"hidden_size": 64}, "hidden_size come from the source"),
        (RecurrentTransformerForSequenceClassification, {"recurrent_cell": "lstmx"}, "recurrent_cell"),
    ],
)
def test_conversions_that_cannot_hold_the_source_are_refused(model_class, overrides, message, source_folders):
    with pytest.raises(Exception, match=message) as error:
        convert_checkpoint(source_folders["bert-cls-english"], model_class, **overrides)
    assert "Error" in type(error.value).__name__


def test_saving_without_the_source_tokenizer_is_refused(source_folders, tmp_path):
    """The RoBERTa sources here have no tokenizer files: AutoTokenizer would still build one of 5 special tokens."""
    model, record = convert_checkpoint(source_folders["roberta-model"], recurrent_layers="none")
    with pytest.raises(ValueError, match="tokenizer has 5 tokens but the model's vocab_size is 40"):
        save_converted(model, record, tmp_path / "converted")
    assert not (tmp_path / "converted").exists()


def test_a_decoder_source_is_refused():
    config = BertConfig(
        vocab_size=20, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, is_decoder=True
    )
    with pytest.raises(ValueError, match="is_decoder"):
        convert_checkpoint(BertForMaskedLM(config))
