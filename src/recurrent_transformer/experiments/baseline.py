"""The classical reference of every comparison: TF-IDF features with a linear SVM, what a user tries first on a text
classification task. Word 1-2 grams for space-separated text and character 1-3 grams for Chinese, Japanese or
Korean text (which has no spaces between words); the regularisation strength C is chosen on the validation split,
never on test.
"""

import re
import time

import numpy as np

from ..data import LabelledData
from ..metrics import classification_metrics

# Han ideographs, kana and Hangul: scripts written without spaces between words.
CJK_PATTERN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
CJK_SHARE = 0.3  # text with at least this share of CJK characters (spaces aside) gets character n-grams
SVM_ANALYZERS = ("auto", "word", "char")
SVM_LABEL = "TF-IDF + LinearSVC"  # the classical baseline's row


def cjk_share(texts: list[str]) -> float:
    """Share of CJK characters among the non-space characters of `texts`."""
    characters = "".join(texts).replace(" ", "")
    return len(CJK_PATTERN.findall(characters)) / len(characters) if characters else 0.0


def svm_analyzer_for(texts: list[str], analyzer: str = "auto") -> str:
    """'char' for CJK text, else 'word' (`analyzer` other than 'auto' is returned as given)."""
    if analyzer not in SVM_ANALYZERS:
        raise ValueError(f"svm_analyzer={analyzer!r} is not one of {SVM_ANALYZERS}")
    if analyzer != "auto":
        return analyzer
    return "char" if cjk_share(texts[:2000]) >= CJK_SHARE else "word"


def tfidf_svm_baseline(
    data: LabelledData,
    *,
    analyzer: str = "auto",
    c_values: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0),
    metric: str = "f1_macro",
    metrics_backend: str = "auto",
    seed: int = 42,
) -> tuple[dict, dict]:
    """TF-IDF + LinearSVC fitted on train, C chosen on validation by `metric`, scored once on test (or on
    validation when there is no test split). Returns (metrics, info): metrics in train.py's metrics.json layout,
    info with the chosen settings, the number of weights and the wall time."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    texts = {name: list(split["text"]) for name, split in data.splits.items()}
    labels = {name: np.asarray(split["label"]) for name, split in data.splits.items()}
    chosen = svm_analyzer_for(texts["train"], analyzer)
    # Word 1-2 grams (min_df 2 drops the long tail of once-seen bigrams); character 1-3 grams for CJK text.
    ngrams = {"word": {"ngram_range": (1, 2), "min_df": 2}, "char": {"ngram_range": (1, 3), "min_df": 1}}[chosen]
    vectorizer = TfidfVectorizer(analyzer=chosen, sublinear_tf=True, lowercase=True, **ngrams)
    features = {"train": vectorizer.fit_transform(texts["train"])}
    features.update({name: vectorizer.transform(texts[name]) for name in texts if name != "train"})

    def fit(c_value: float):
        return LinearSVC(C=c_value, random_state=seed).fit(features["train"], labels["train"])

    def score(model, split: str, per_class: bool = False) -> dict:
        predictions = model.predict(features[split])
        return classification_metrics(
            predictions, labels[split], data.label_names, backend=metrics_backend, per_class=per_class
        )

    validation = {c_value: score(fit(c_value), "validation") for c_value in c_values}
    # Ties go to the smaller C, the stronger regulariser.
    best_c = max(c_values, key=lambda c_value: (validation[c_value][metric], -c_value))
    model = fit(best_c)
    final_split = "test" if "test" in data.splits else "validation"
    metrics = {
        "split": final_split,
        final_split: score(model, final_split, per_class=True),
        "best_validation": {
            metric: validation[best_c][metric],
            "accuracy": validation[best_c]["accuracy"],
            "C": best_c,
        },
        "validation_by_C": {str(c_value): scores[metric] for c_value, scores in validation.items()},
    }
    info = {
        "analyzer": chosen,
        "ngram_range": list(ngrams["ngram_range"]),
        "C": best_c,
        "num_features": len(vectorizer.vocabulary_),
        "num_parameters": int(model.coef_.size + model.intercept_.size),
        "wall_seconds": time.perf_counter() - started,
    }
    return metrics, info
