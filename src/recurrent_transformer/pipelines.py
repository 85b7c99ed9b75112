"""Pipelines cut a recurrent-transformer classifier's inputs as its training and `recurrent-transformer evaluate` do.

A classifier here is trained on texts truncated to `max_length` tokens (saved as the tokenizer's
`model_max_length`), and `evaluate` scores the same way; transformers' text-classification pipeline does not truncate
unless told, so on long texts its predictions differed from the reported scores. With this package imported, the
pipeline's class for the task is a subclass that makes `truncation=True` the default for this model type only (a
flag given to `pipeline()` or to the call still wins); every other model gets the pipeline's own behaviour.
"""

from transformers.pipelines import PIPELINE_REGISTRY, TextClassificationPipeline

MODEL_TYPE = "recurrent_transformer"


class TextClassificationPipelineWithTruncation(TextClassificationPipeline):
    """transformers' text-classification pipeline; for a recurrent-transformer model `truncation` defaults to True
    (to the tokenizer's `model_max_length`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model.config, "model_type", None) == MODEL_TYPE:
            self._preprocess_params.setdefault("truncation", True)


def register_pipelines() -> None:
    """Make the subclass the text-classification task's pipeline (also its alias sentiment-analysis)."""
    task = PIPELINE_REGISTRY.supported_tasks["text-classification"]
    # transformers names the class by its dotted path and imports it when a pipeline is built.
    if task["impl"] == f"{TextClassificationPipeline.__module__}.{TextClassificationPipeline.__name__}":
        task["impl"] = f"{__name__}.{TextClassificationPipelineWithTruncation.__name__}"
