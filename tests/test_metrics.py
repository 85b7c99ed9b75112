"""metrics.py: headline scores, the per-class report, the confusion matrix and its PNG, the evaluate backend."""

import textwrap

import numpy as np
import pytest
from sklearn.metrics import f1_score

from recurrent_transformer import metrics
from recurrent_transformer.metrics import classification_metrics, save_confusion_matrix

LABELS = ["cat", "dog", "eel"]
REFERENCES = [0, 0, 0, 1, 1, 2]
PREDICTIONS = [0, 0, 1, 1, 1, 1]


def test_scores_by_hand():
    scores = classification_metrics(PREDICTIONS, REFERENCES, LABELS, backend="sklearn")
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # per class F1: cat 2*1*(2/3)/(1+2/3) = 0.8, dog 2*0.5*1/1.5 = 2/3, eel 0 (never predicted)
    assert scores["f1_macro"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    assert scores["f1_weighted"] == pytest.approx((3 * 0.8 + 2 * 2 / 3 + 0) / 6)
    assert scores["per_class"]["eel"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1.0}
    assert scores["per_class"]["dog"]["precision"] == pytest.approx(0.5)
    assert scores["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert scores["num_samples"] == 6 and scores["metrics_backend"] == "sklearn"


def test_classes_absent_from_both_sides_still_count_in_macro_scores():
    scores = classification_metrics([0, 1], [0, 1], ["a", "b", "c"], backend="sklearn")
    assert scores["accuracy"] == 1.0
    assert scores["f1_macro"] == pytest.approx(2 / 3)
    assert set(scores["per_class"]) == {"a", "b", "c"}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="must be equal 1-d"):
        classification_metrics([0, 1], [0], LABELS, backend="sklearn")
    with pytest.raises(ValueError, match="not one of"):
        classification_metrics([0], [0], LABELS, backend="torch")


def test_confusion_matrix_png(tmp_path):
    path = save_confusion_matrix([[2, 1, 0], [0, 2, 0], [0, 1, 0]], LABELS, tmp_path / "cm.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


FAKE_MODULE = """
import datasets
import evaluate
from sklearn.metrics import {function}


class Fake(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="", citation="", inputs_description="",
            features=datasets.Features({{"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}}),
        )

    def _compute(self, predictions, references, **kwargs):
        return {{"{name}": float({function}(references, predictions, **kwargs))}}
"""


def test_evaluate_backend_matches_sklearn(tmp_path, monkeypatch):
    """evaluate.load("accuracy") first looks for ./accuracy/accuracy.py: stand-ins there (the Hub's modules wrap
    the same scikit-learn functions) exercise the evaluate path without a network."""
    pytest.importorskip("evaluate")
    functions = {
        "accuracy": "accuracy_score",
        "precision": "precision_score",
        "recall": "recall_score",
        "f1": "f1_score",
    }
    for name, function in functions.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.py").write_text(textwrap.dedent(FAKE_MODULE.format(name=name, function=function)))
    monkeypatch.chdir(tmp_path)
    metrics.load_evaluate_metrics.cache_clear()
    try:
        rng = np.random.default_rng(0)
        references, predictions = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
        through_evaluate = classification_metrics(predictions, references, LABELS, backend="evaluate")
    finally:
        metrics.load_evaluate_metrics.cache_clear()
    through_sklearn = classification_metrics(predictions, references, LABELS, backend="sklearn")
    assert through_evaluate["metrics_backend"] == "evaluate"
    for name in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "recall_weighted"):
        assert through_evaluate[name] == pytest.approx(through_sklearn[name]), name
    assert through_evaluate["per_class"] == through_sklearn["per_class"]
    assert through_evaluate["f1_macro"] == pytest.approx(f1_score(references, predictions, average="macro"))


def test_auto_backend_falls_back_to_sklearn(monkeypatch):
    monkeypatch.setattr(metrics, "load_evaluate_metrics", lambda: None)
    scores = classification_metrics(PREDICTIONS, REFERENCES, LABELS, backend="auto")
    assert scores["metrics_backend"] == "sklearn"
    with pytest.raises(RuntimeError, match="could not be loaded"):
        classification_metrics(PREDICTIONS, REFERENCES, LABELS, backend="evaluate")
