"""The parts of scripts/compare.py that are not training: the classical baseline, the summary table and the plots.

The baseline is what a user tries first on a text classification task: TF-IDF features with a linear SVM, word 1-2
grams for space-separated text and character 1-3 grams for Chinese, Japanese or Korean text (which has no spaces
between words). Its regularisation strength C is chosen on the validation split, never on test. The table and the
plots read per-run results (the `metrics.json` and `eval_history.json` files the runs wrote), so what the table
says is what the runs' own files say.
"""

import importlib.util
import multiprocessing
import re
import time
from dataclasses import dataclass, field

import numpy as np

from .data import LabelledData
from .metrics import classification_metrics

# The scores the table and the bar chart show, all macro averages besides accuracy.
HEADLINE = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
HEADLINE_TITLES = {
    "accuracy": "accuracy",
    "precision_macro": "precision (macro)",
    "recall_macro": "recall (macro)",
    "f1_macro": "F1 (macro)",
}
# Han ideographs, kana and Hangul: scripts written without spaces between words.
CJK_PATTERN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
CJK_SHARE = 0.3  # text with at least this share of CJK characters (spaces aside) gets character n-grams
SVM_ANALYZERS = ("auto", "word", "char")
SVM_LABEL = "TF-IDF + LinearSVC"  # the classical baseline's row
MLM_SUFFIX = "+MLM"  # a preset's row after masked-LM pre-training


def compare_worker(script: str, payload: dict) -> str:
    """Entry of a worker process of `scripts/compare.py --parallel_runs`: loads the script from its path and runs
    one job given as plain data, however the parent itself imported the script (a worker can import this package,
    but not a script that is not on its path)."""
    # The worker is the only process of its run; transformers' collators take any process not named so for a
    # DataLoader worker and refuse to seed their masking generator there.
    multiprocessing.current_process().name = "MainProcess"
    spec = importlib.util.spec_from_file_location("compare_worker_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_payload(payload)


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


@dataclass
class Row:
    """One line of the table: a model (a preset, a preset with MLM pre-training, or the classical baseline) and
    its runs, one per seed. Each run is {'seed', 'folder', 'metrics' (its metrics.json), 'history' (its
    eval_history.json), 'train_tokens_per_second', 'train_seconds', 'wall_seconds'}."""

    label: str
    num_parameters: int | None
    runs: list[dict] = field(default_factory=list)
    parameter_warning: bool = False

    def scores(self, name: str) -> list[float]:
        return [run["metrics"][run["metrics"]["split"]][name] for run in self.runs]

    def values(self, key: str) -> list[float]:
        return [run[key] for run in self.runs if run.get(key) is not None]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarize(row: Row) -> dict:
    """Mean and std of each headline score; means of the speed and time columns (None where not measured)."""
    summary = {name: dict(zip(("mean", "std"), mean_std(row.scores(name)), strict=True)) for name in HEADLINE}
    for key in ("train_tokens_per_second", "train_seconds", "wall_seconds"):
        values = row.values(key)
        summary[key] = float(np.mean(values)) if values else None
    summary["runs"] = len(row.runs)
    return summary


def format_score(score: dict, runs: int) -> str:
    """A score ({'mean', 'std'} over `runs` runs) in percent: 'mean ± std' over several runs, the value alone
    for one."""
    mean, std = 100 * score["mean"], 100 * score["std"]
    return f"{mean:.2f} ± {std:.2f}" if runs > 1 else f"{mean:.2f}"


def format_number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown_table(rows: list[Row], split: str) -> str:
    """The comparison table: scores in percent on `split`, mean ± std over the runs, and cost columns."""
    titles = [HEADLINE_TITLES[name] for name in HEADLINE]
    header = ["model", "runs", *titles, "parameters", "train tokens/s", "train s", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    for row in rows:
        summary = summarize(row)
        scores = [format_score(summary[name], summary["runs"]) for name in HEADLINE]
        parameters = format_number(row.num_parameters) + (" (!)" if row.parameter_warning else "")
        cells = [
            row.label,
            str(summary["runs"]),
            *scores,
            parameters,
            format_number(summary["train_tokens_per_second"]),
            format_number(summary["train_seconds"], 1),
            format_number(summary["wall_seconds"], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _color_map(rows: list[Row]) -> dict[str, tuple]:
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    return {row.label: palette(index % 10) for index, row in enumerate(rows)}


def plot_validation_curves(rows: list[Row], x_key: str, xlabel: str, path, title: str) -> None:
    """Validation accuracy of every run against `x_key` of its eval history ('step' or 'train_seconds'): one
    colour per model, one line per seed; a model without a history (the baseline) is a dashed level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = _color_map(rows)
    figure, axes = plt.subplots(figsize=(8, 5))
    for row in rows:
        for index, run in enumerate(row.runs):
            label = row.label if index == 0 else None
            if run.get("history"):
                xs = [entry[x_key] for entry in run["history"]]
                ys = [entry["accuracy"] for entry in run["history"]]
                axes.plot(xs, ys, marker="o", markersize=3, color=colors[row.label], alpha=0.8, label=label)
            elif run.get("validation_accuracy") is not None:
                axes.axhline(run["validation_accuracy"], color=colors[row.label], linestyle="--", label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("validation accuracy")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_final_scores(rows: list[Row], split: str, path) -> None:
    """Grouped bars: the headline scores of each model on `split`, mean with the std over runs as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = _color_map(rows)
    figure, axes = plt.subplots(figsize=(max(8, 1.6 * len(rows) + 4), 5))
    width = 0.8 / len(rows)
    positions = np.arange(len(HEADLINE))
    for index, row in enumerate(rows):
        summary = summarize(row)
        means = [summary[name]["mean"] for name in HEADLINE]
        stds = [summary[name]["std"] for name in HEADLINE]
        axes.bar(
            positions + index * width, means, width, yerr=stds, capsize=3, label=row.label, color=colors[row.label]
        )
    axes.set_xticks(positions + width * (len(rows) - 1) / 2, [HEADLINE_TITLES[name] for name in HEADLINE])
    lowest = min(min(row.scores(name)) for row in rows for name in HEADLINE)
    axes.set_ylim(max(0.0, lowest - 0.1), 1.0)
    axes.set_ylabel(f"{split} score (mean ± std over seeds)")
    axes.set_title(f"final {split} scores")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
