"""The comparison's report: rows of runs read back from the files the runs wrote (so what the table says is what
the runs' own files say), mean ± std over seeds, the markdown table and the plots."""

from dataclasses import dataclass, field

import numpy as np

# The scores the table and the bar chart show, all macro averages besides accuracy.
HEADLINE = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
HEADLINE_TITLES = {
    "accuracy": "accuracy",
    "precision_macro": "precision (macro)",
    "recall_macro": "recall (macro)",
    "f1_macro": "F1 (macro)",
}
MLM_SUFFIX = "+MLM"  # a preset's row after masked-LM pre-training


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
