"""Config: defaults, layer patterns, validation errors that name the field, JSON round trip, presets."""

import json

import pytest
import torch
from conftest import tiny_config
from train_helpers import REPO_ROOT

from recurrent_transformer import RecurrentTransformerConfig, RecurrentTransformerForSequenceClassification
from recurrent_transformer.presets import available_presets, load_preset


def test_defaults_are_the_hybrid_small_preset():
    config = RecurrentTransformerConfig()
    assert config.layer_types == ["hybrid"] * 4
    assert config.recurrent_hidden_size == config.hidden_size == 256
    assert config.number_of_conv_states == 2  # LSTM: h and c
    preset = load_preset("hybrid-small")
    for field in ("hidden_size", "num_hidden_layers", "layer_types", "recurrent_cell", "intermediate_size"):
        assert getattr(preset, field) == getattr(config, field), field


def test_layout_fields_default_to_the_pre_norm_model_without_extras():
    """Configs and folders saved before these fields existed must compute what they computed then."""
    config = RecurrentTransformerConfig()
    assert config.norm_placement == "pre"
    assert not (config.embedding_norm or config.recurrent_gate or config.classifier_pooler)


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("hybrid", ["hybrid"] * 4),
        ("linear_attention", ["linear_attention"] * 4),
        ("RRRA", ["linear_attention"] * 3 + ["full_attention"]),
        ("HA", ["hybrid", "full_attention", "hybrid", "full_attention"]),
    ],
)
def test_layer_pattern_expands_and_only_the_list_is_saved(pattern, expected, tmp_path):
    config = RecurrentTransformerConfig(layer_pattern=pattern)
    assert config.layer_types == expected
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["layer_types"] == expected
    assert saved.get("layer_pattern") is None
    assert RecurrentTransformerConfig.from_pretrained(tmp_path).layer_types == expected


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(hidden_size=30), "hidden_size"),
        (dict(recurrent_cell="lstmx"), "recurrent_cell"),
        (dict(layer_types=["lstm", "hybrid", "hybrid", "hybrid"]), "layer_types"),
        (dict(layer_types=["hybrid"] * 3), "layer_types"),
        (dict(layer_pattern="XY"), "layer_pattern"),
        (dict(recurrent_window=1), "recurrent_window"),
        (dict(position_embedding_type="sinusoidal"), "position_embedding_type"),
        (dict(intermediate_size=-1), "intermediate_size"),
        (dict(recurrent_hidden_size=33), "recurrent_hidden_size"),
        (dict(layer_pattern="hybrid_sliding", bidirectional=False), "sliding_window"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(classifier_pooling="first", bidirectional=False), "classifier_pooling"),
        (dict(classifier_pooling="max"), "classifier_pooling"),
        (dict(pad_token_id=9000), "pad_token_id"),
        (dict(hidden_size=36, num_attention_heads=4, position_embedding_type="rope"), "rope"),
        (dict(norm_placement="middle"), "norm_placement"),
        (dict(recurrent_gate_init=float("nan")), "recurrent_gate_init"),
        (dict(recurrent_cell="gla", recurrent_hidden_size=12, num_attention_heads=4), "recurrent_hidden_size=12"),
        (dict(recurrent_cell="gru2"), "recurrent_cell"),
    ],
)
def test_invalid_values_raise_an_error_naming_the_field(overrides, field):
    # transformers' @strict wraps a ValueError in huggingface_hub's StrictDataclass*Error: the message matters.
    with pytest.raises(Exception, match=field) as error:
        RecurrentTransformerConfig(**overrides)
    assert "Error" in type(error.value).__name__


def test_json_round_trip(tmp_path):
    config = tiny_config(
        recurrent_cell="mingru",
        recurrent_window=4,
        bidirectional=False,
        num_labels=5,
        norm_placement="post",
        embedding_norm=True,
        recurrent_gate=True,
        recurrent_gate_init=0.5,
        classifier_pooler=True,
    )
    path = tmp_path / "config.json"
    config.to_json_file(path)
    loaded = RecurrentTransformerConfig.from_json_file(path)
    assert loaded.to_dict() == config.to_dict()


def test_saved_config_holds_the_full_auto_map(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
        "AutoModelForMaskedLM",
        "AutoModelForCausalLM",
    }


def classifier_parameters(preset: str) -> int:
    """Parameters of the preset as an 8-label sequence classifier (the README's preset table counts them so)."""
    return sum(
        p.numel() for p in RecurrentTransformerForSequenceClassification(load_preset(preset, num_labels=8)).parameters()
    )


def test_presets_load_and_baselines_match_the_hybrid_in_parameters():
    assert {"hybrid-small", "lstm-baseline", "transformer-baseline", "local-rnn", "mingru-hybrid", "tiny"} <= set(
        available_presets()
    )
    counts = {name: classifier_parameters(name) for name in ("hybrid-small", "lstm-baseline", "transformer-baseline")}
    for name in ("lstm-baseline", "transformer-baseline"):
        assert abs(counts[name] / counts["hybrid-small"] - 1) <= 0.05, counts
    lstm = load_preset("lstm-baseline")
    assert set(lstm.layer_types) == {"linear_attention"} and lstm.intermediate_size == 0
    assert set(load_preset("transformer-baseline").layer_types) == {"full_attention"}


LONG_DOCUMENT_PRESETS = ("mingru-rrl", "mingru-rra", "gla-rrl", "lstm-rrrl", "lstm-rrra", "lstm-rrrl-noffn")


@pytest.mark.parametrize("name", LONG_DOCUMENT_PRESETS)
def test_long_document_presets_match_the_hybrid_in_parameters(name):
    """The layouts where recurrence replaces attention are compared against the baselines at equal size."""
    count, reference = classifier_parameters(name), classifier_parameters("hybrid-small")
    assert abs(count / reference - 1) <= 0.05, (name, count, reference)


def test_lstm_rrrl_noffn_is_three_lstm_layers_and_local_attention_without_feed_forward():
    config = load_preset("lstm-rrrl-noffn")
    assert config.layer_types == ["linear_attention"] * 3 + ["sliding_attention"]
    assert config.intermediate_size == 0 and config.recurrent_cell == "lstm" and config.bidirectional
    assert config.position_embedding_type == "none" and config.sliding_window == 128


COMPARE_PRESET_FILES = sorted((REPO_ROOT / "configs" / "compare" / "presets").glob("*.json"))


@pytest.mark.parametrize("path", COMPARE_PRESET_FILES, ids=lambda path: path.stem)
def test_every_preset_file_in_configs_builds_a_classifier_that_runs(path):
    """Each JSON preset that the compare configs and the README pass to --presets loads, builds and classifies a
    padded batch (compare itself checks their parameter counts against its reference preset when it starts)."""
    model = RecurrentTransformerForSequenceClassification(load_preset(path, num_labels=3)).eval()
    input_ids = torch.randint(1, model.config.vocab_size, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="hybrid-small"):
        load_preset("hybird-small")


def test_preset_overrides():
    config = load_preset("lstm-baseline", num_hidden_layers=2, vocab_size=100)
    assert config.layer_types == ["linear_attention"] * 2 and config.vocab_size == 100


def test_preset_layer_pattern_override_replaces_its_layer_list():
    config = load_preset("hybrid-small", bidirectional=False, layer_pattern="S", sliding_window=16)
    assert config.layer_types == ["hybrid_sliding"] * 4


def test_layer_pattern_contradicting_layer_types_is_an_error():
    with pytest.raises(ValueError, match="layer_pattern='R' contradicts layer_types"):
        RecurrentTransformerConfig(layer_types=["hybrid"] * 4, layer_pattern="R")
    # A pattern that agrees with the list is accepted, as is the default pattern beside any list.
    assert RecurrentTransformerConfig(layer_types=["linear_attention"] * 4, layer_pattern="R").layer_pattern is None
    assert RecurrentTransformerConfig(layer_types=["full_attention"] * 4).layer_types == ["full_attention"] * 4


def test_hybrid_sliding_preset_is_a_bounded_causal_decoder():
    config = load_preset("hybrid-sliding")
    assert not config.bidirectional and set(config.layer_types) == {"hybrid_sliding"} and config.sliding_window
