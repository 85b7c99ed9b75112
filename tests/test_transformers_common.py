"""transformers' own common model and config tests (`ModelTesterMixin`, `ConfigTester`) run against our model.

The mixins come from the source distribution of the installed transformers version (see `transformers_sdist.py`);
without network and without a cached copy, this module is skipped. One config runs through every class of a
tester, and the heads refuse one direction each, so there are two testers: an encoder (bidirectional; Model,
SequenceClassification, TokenClassification, MaskedLM) and a decoder (causal; Model, SequenceClassification,
TokenClassification, CausalLM), each on the default all-hybrid layers and on recurrence-only layers (LSTM, minGRU
and gla cells); the encoder also in the layout of a converted BERT checkpoint (post-norm, embedding norm, absolute
positions, gated recurrence at zero, classification pooler).
"""

import contextlib
import unittest
import warnings
from unittest import mock

import pytest
import torch
from transformers.models.auto import modeling_auto
from transformers_sdist import SdistUnavailable, load_common_tests

from recurrent_transformer import (
    RecurrentTransformerConfig,
    RecurrentTransformerForCausalLM,
    RecurrentTransformerForMaskedLM,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
    RecurrentTransformerModel,
)
from recurrent_transformer.modeling_recurrent_transformer import cached_length

try:
    with warnings.catch_warnings():
        # The sdist marks some tests with marks only transformers' own pytest config declares (flash_attn_test, ...).
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        test_modeling_common, test_configuration_common = load_common_tests()
except SdistUnavailable as error:
    pytest.skip(f"transformers' common tests are unavailable: {error}", allow_module_level=True)

ModelTesterMixin = test_modeling_common.ModelTesterMixin
ConfigTester = test_configuration_common.ConfigTester
ids_tensor = test_modeling_common.ids_tensor
random_attention_mask = test_modeling_common.random_attention_mask

# The mixin decides which inputs and labels a class gets from the class names in transformers' Auto tables, which
# `AutoModel*.register` does not fill in; the fixture below adds ours for the duration of this module.
AUTO_TABLES = {
    "MODEL_MAPPING_NAMES": RecurrentTransformerModel,
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": RecurrentTransformerForSequenceClassification,
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": RecurrentTransformerForTokenClassification,
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES": RecurrentTransformerForMaskedLM,
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES": RecurrentTransformerForCausalLM,
}
RECURRENCE_ONLY = ["linear_attention", "linear_attention"]
# What conversion.converted_config sets for a BERT-family checkpoint (tests/test_conversion.py checks the values).
CONVERTED_LAYOUT = {
    "norm_placement": "post",
    "embedding_norm": True,
    "position_embedding_type": "absolute",
    "recurrent_gate": True,
    "recurrent_gate_init": 0.0,
    "classifier_pooler": True,
    "classifier_pooling": "first",
    "layer_types": ["hybrid", "full_attention"],
}


@pytest.fixture(scope="module", autouse=True)
def model_names_in_auto_tables():
    with contextlib.ExitStack() as stack:
        for table, model_class in AUTO_TABLES.items():
            names = getattr(modeling_auto, table)
            stack.enter_context(mock.patch.dict(names, {RecurrentTransformerConfig.model_type: model_class.__name__}))
        yield


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The models here are tiny: a second intra-op thread only adds synchronisation, which costs 10-50x on a
    loaded 2-core machine (measured: 14 ms vs 625 ms per forward pass)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecurrentTransformerModelTester:
    """Tiny configs and inputs for the common tests (sizes as in transformers' own testers)."""

    def __init__(
        self,
        parent,
        bidirectional: bool,
        layer_types: list[str] | None = None,
        batch_size=13,
        seq_length=7,
        is_training=True,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=3,
        pad_token_id=0,
        extra_config=None,
    ):
        self.parent = parent
        self.extra_config = extra_config or {}
        self.bidirectional = bidirectional
        self.layer_types = layer_types
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_labels = num_labels
        self.pad_token_id = pad_token_id

    def get_config(self) -> RecurrentTransformerConfig:
        return RecurrentTransformerConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            layer_types=self.layer_types,
            bidirectional=self.bidirectional,
            num_labels=self.num_labels,
            pad_token_id=self.pad_token_id,
            **self.extra_config,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        sequence_labels = ids_tensor([self.batch_size], self.num_labels)
        token_labels = ids_tensor([self.batch_size, self.seq_length], self.num_labels)
        return self.get_config(), input_ids, attention_mask, sequence_labels, token_labels

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask, _, _ = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask}

    def check_model(self, config, input_ids, attention_mask):
        model = RecurrentTransformerModel(config).eval()
        result = model(input_ids, attention_mask=attention_mask)
        expected = (self.batch_size, self.seq_length, self.hidden_size)
        self.parent.assertEqual(result.last_hidden_state.shape, expected)

    def check_sequence_classification(self, config, input_ids, attention_mask, labels):
        model = RecurrentTransformerForSequenceClassification(config).eval()
        result = model(input_ids, attention_mask=attention_mask, labels=labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))
        self.parent.assertTrue(result.loss.isfinite())

    def check_token_classification(self, config, input_ids, attention_mask, labels):
        model = RecurrentTransformerForTokenClassification(config).eval()
        result = model(input_ids, attention_mask=attention_mask, labels=labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.seq_length, self.num_labels))
        self.parent.assertTrue(result.loss.isfinite())

    def check_language_model(self, model_class, config, input_ids, attention_mask):
        model = model_class(config).eval()
        result = model(input_ids, attention_mask=attention_mask, labels=input_ids)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.seq_length, self.vocab_size))
        self.parent.assertTrue(result.loss.isfinite())


class RecurrentTransformerCommonTests(ModelTesterMixin):
    """What the four test classes share; each sets the direction and the layer kinds."""

    bidirectional: bool
    layer_types: list[str] | None = None
    extra_config: dict | None = None  # fields beyond the direction and the layer kinds
    language_model_class: type
    # The mixin runs this test only for models added from 2023 on, read from a copyright line our files lack.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        extra = dict(self.extra_config or {})
        layer_types = extra.pop("layer_types", self.layer_types)
        self.model_tester = RecurrentTransformerModelTester(
            self, bidirectional=self.bidirectional, layer_types=layer_types, extra_config=extra
        )
        config_kwargs = {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "bidirectional": self.bidirectional,
        }
        if layer_types is not None:
            config_kwargs["layer_types"] = layer_types
        config_kwargs.update(extra)
        self.config_tester = ConfigTester(self, config_class=RecurrentTransformerConfig, **config_kwargs)

    def _check_caches_are_equal(self, cache1, cache2):
        """Layer by layer: keys and values, and each recurrent state slot. The mixin's fallback compares
        `Cache.get_seq_length()`, which raises when no layer has attention; the model counts tokens itself."""
        self.assertEqual(len(cache1.layers), len(cache2.layers))
        self.assertGreater(cached_length(cache1), 0)
        self.assertEqual(cached_length(cache1), cached_length(cache2))
        for layer1, layer2 in zip(cache1.layers, cache2.layers, strict=True):
            for name in ("keys", "values"):
                if getattr(layer1, name, None) is not None:
                    torch.testing.assert_close(getattr(layer1, name), getattr(layer2, name), rtol=1e-5, atol=1e-5)
            for name in ("conv_states", "recurrent_states"):
                states1, states2 = getattr(layer1, name, {}), getattr(layer2, name, {})
                self.assertEqual(states1.keys(), states2.keys())
                for state_idx, state in states1.items():
                    if state is None:
                        self.assertIsNone(states2[state_idx])
                    else:
                        torch.testing.assert_close(state, states2[state_idx], rtol=1e-5, atol=1e-5)

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        config, input_ids, attention_mask, _, _ = self.model_tester.prepare_config_and_inputs()
        self.model_tester.check_model(config, input_ids, attention_mask)

    def test_for_sequence_classification(self):
        config, input_ids, attention_mask, sequence_labels, _ = self.model_tester.prepare_config_and_inputs()
        self.model_tester.check_sequence_classification(config, input_ids, attention_mask, sequence_labels)

    def test_for_token_classification(self):
        config, input_ids, attention_mask, _, token_labels = self.model_tester.prepare_config_and_inputs()
        self.model_tester.check_token_classification(config, input_ids, attention_mask, token_labels)

    def test_language_model(self):
        config, input_ids, attention_mask, _, _ = self.model_tester.prepare_config_and_inputs()
        self.model_tester.check_language_model(self.language_model_class, config, input_ids, attention_mask)


class RecurrentTransformerEncoderTests(RecurrentTransformerCommonTests):
    bidirectional = True
    all_model_classes = (
        RecurrentTransformerModel,
        RecurrentTransformerForSequenceClassification,
        RecurrentTransformerForTokenClassification,
        RecurrentTransformerForMaskedLM,
    )
    language_model_class = RecurrentTransformerForMaskedLM


class RecurrentTransformerDecoderTests(RecurrentTransformerCommonTests):
    bidirectional = False
    all_model_classes = (
        RecurrentTransformerModel,
        RecurrentTransformerForSequenceClassification,
        RecurrentTransformerForTokenClassification,
        RecurrentTransformerForCausalLM,
    )
    language_model_class = RecurrentTransformerForCausalLM

    @unittest.skip(
        "GenerationTesterMixin lives in tests/generation, which transformers' sdist does not carry; generate() is "
        "tested by this repository's own generation tests"
    )
    def test_generation_tester_mixin_inheritance(self):
        pass


class RecurrentTransformerEncoderTest(RecurrentTransformerEncoderTests, unittest.TestCase):
    pass


class RecurrentTransformerEncoderRecurrenceOnlyTest(RecurrentTransformerEncoderTests, unittest.TestCase):
    layer_types = RECURRENCE_ONLY
    has_attentions = False


class RecurrentTransformerDecoderTest(RecurrentTransformerDecoderTests, unittest.TestCase):
    pass


class RecurrentTransformerDecoderRecurrenceOnlyTest(RecurrentTransformerDecoderTests, unittest.TestCase):
    layer_types = RECURRENCE_ONLY
    has_attentions = False


class RecurrentTransformerConvertedLayoutTest(RecurrentTransformerEncoderTests, unittest.TestCase):
    """The layout a converted BERT-family checkpoint has (its step-0 equality with the source is in
    tests/test_conversion.py)."""

    extra_config = CONVERTED_LAYOUT


class RecurrentTransformerEncoderMinGRUTest(RecurrentTransformerEncoderTests, unittest.TestCase):
    layer_types = RECURRENCE_ONLY
    extra_config = {"recurrent_cell": "mingru", "mingru_candidate": "linear"}
    has_attentions = False


class RecurrentTransformerDecoderMinGRUTest(RecurrentTransformerDecoderTests, unittest.TestCase):
    layer_types = RECURRENCE_ONLY
    extra_config = {"recurrent_cell": "mingru", "mingru_candidate": "linear"}
    has_attentions = False


class RecurrentTransformerEncoderGLATest(RecurrentTransformerEncoderTests, unittest.TestCase):
    layer_types = RECURRENCE_ONLY
    extra_config = {"recurrent_cell": "gla"}
    has_attentions = False


class RecurrentTransformerDecoderGLATest(RecurrentTransformerDecoderTests, unittest.TestCase):
    layer_types = RECURRENCE_ONLY
    extra_config = {"recurrent_cell": "gla"}
    has_attentions = False
