"""Classification metrics: accuracy, macro and weighted precision/recall/F1, a per-class report, a confusion matrix.

The headline numbers go through `evaluate` when its metric modules load (they come from the Hugging Face Hub or
its local cache); without them, as on a machine with no network, the same numbers come from scikit-learn, which
`evaluate`'s modules call themselves. The result names the backend that produced it (`metrics_backend`).
"""

import functools
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support
from transformers.utils import logging

logger = logging.get_logger(__name__)

METRIC_BACKENDS = ("auto", "evaluate", "sklearn")
# Names `metric_for_best_model` may take, all "higher is better".
SELECTION_METRICS = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro")


@functools.cache
def load_evaluate_metrics() -> dict | None:
    """`evaluate`'s accuracy, precision, recall and f1 modules, or None when they cannot be loaded."""
    try:
        import evaluate  # slow to import (it pulls in transformers.pipelines): only when asked for

        return {name: evaluate.load(name) for name in ("accuracy", "precision", "recall", "f1")}
    except Exception as error:  # evaluate raises FileNotFoundError, ConnectionError, ... when offline
        logger.warning(
            f"evaluate's metric modules are unavailable ({type(error).__name__}: {error}); using scikit-learn"
        )
        return None


def _headline_evaluate(modules: dict, predictions, references, labels) -> dict[str, float]:
    scores = {"accuracy": modules["accuracy"].compute(predictions=predictions, references=references)["accuracy"]}
    for average in ("macro", "weighted"):
        for name in ("precision", "recall", "f1"):
            extra = {"zero_division": 0} if name != "f1" else {}
            result = modules[name].compute(
                predictions=predictions, references=references, labels=labels, average=average, **extra
            )
            scores[f"{name}_{average}"] = float(result[name])
    return scores


def _headline_sklearn(predictions, references, labels) -> dict[str, float]:
    scores = {"accuracy": float(accuracy_score(references, predictions))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            references, predictions, labels=labels, average=average, zero_division=0
        )
        scores.update({f"precision_{average}": precision, f"recall_{average}": recall, f"f1_{average}": f1})
    return {name: float(value) for name, value in scores.items()}


def classification_metrics(
    predictions, references, label_names: list[str], backend: str = "auto", per_class: bool = True
) -> dict:
    """Headline scores (all in [0, 1]), `num_samples`, `metrics_backend`, and, with `per_class`, a report by
    label name (precision, recall, f1, support) and the confusion matrix (rows: true label, columns: predicted)."""
    if backend not in METRIC_BACKENDS:
        raise ValueError(f"metrics backend {backend!r} is not one of {METRIC_BACKENDS}")
    predictions = np.asarray(predictions, dtype=np.int64)
    references = np.asarray(references, dtype=np.int64)
    if predictions.shape != references.shape or predictions.ndim != 1:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} must be equal 1-d")
    if len(references) == 0:
        raise ValueError("no samples to score")
    labels = list(range(len(label_names)))
    modules = load_evaluate_metrics() if backend != "sklearn" else None
    if backend == "evaluate" and modules is None:
        raise RuntimeError("metrics backend 'evaluate' asked for, but its metric modules could not be loaded")
    if modules is not None:
        scores = _headline_evaluate(modules, predictions.tolist(), references.tolist(), labels)
    else:
        scores = _headline_sklearn(predictions, references, labels)
    scores["num_samples"] = len(references)
    scores["metrics_backend"] = "evaluate" if modules is not None else "sklearn"
    if per_class:
        report = classification_report(
            references, predictions, labels=labels, target_names=label_names, output_dict=True, zero_division=0
        )
        scores["per_class"] = {
            name: {key.replace("-score", ""): float(value) for key, value in report[name].items()}
            for name in label_names
        }
        scores["confusion_matrix"] = confusion_matrix(references, predictions, labels=labels).tolist()
    return scores


def save_confusion_matrix(matrix, label_names: list[str], path: str | Path, title: str | None = None) -> Path:
    """Write the confusion matrix as a PNG: counts in each cell, colours by share of the true label's row."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(label_names) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true label")
    ticks = np.arange(len(label_names))
    axes.set_xticks(ticks, labels=label_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=label_names)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    if title:
        axes.set_title(title)
    for row, column in np.ndindex(matrix.shape):
        colour = "white" if row_share[row, column] > 0.5 else "black"
        axes.text(column, row, str(matrix[row, column]), ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
