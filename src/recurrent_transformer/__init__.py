"""recurrent-transformer: Transformers with recurrent (LSTM, GRU, RNN, minGRU) sub-layers for Hugging Face.

Importing the package registers the config and every model class with transformers' Auto classes, and marks them
for `register_for_auto_class`, so each `save_pretrained` also writes the two code files that let the folder load
with `trust_remote_code=True` where the package is not installed. It also makes the text-classification pipeline
truncate this model's inputs to the tokenizer's length by default, as training and evaluation do (`pipelines`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_recurrent_transformer import RecurrentTransformerConfig
from .modeling_recurrent_transformer import (
    RecurrentTransformerForCausalLM,
    RecurrentTransformerForMaskedLM,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
    RecurrentTransformerModel,
    RecurrentTransformerPreTrainedModel,
)
from .pipelines import register_pipelines

__version__ = "0.1.0"

AUTO_CLASSES = {
    AutoModel: RecurrentTransformerModel,
    AutoModelForSequenceClassification: RecurrentTransformerForSequenceClassification,
    AutoModelForTokenClassification: RecurrentTransformerForTokenClassification,
    AutoModelForMaskedLM: RecurrentTransformerForMaskedLM,
    AutoModelForCausalLM: RecurrentTransformerForCausalLM,
}

AutoConfig.register(RecurrentTransformerConfig.model_type, RecurrentTransformerConfig, exist_ok=True)
RecurrentTransformerConfig.register_for_auto_class("AutoConfig")
for auto_class, model_class in AUTO_CLASSES.items():
    auto_class.register(RecurrentTransformerConfig, model_class, exist_ok=True)
    model_class.register_for_auto_class(auto_class.__name__)
register_pipelines()

__all__ = [
    "RecurrentTransformerConfig",
    "RecurrentTransformerPreTrainedModel",
    "RecurrentTransformerModel",
    "RecurrentTransformerForSequenceClassification",
    "RecurrentTransformerForTokenClassification",
    "RecurrentTransformerForMaskedLM",
    "RecurrentTransformerForCausalLM",
]
