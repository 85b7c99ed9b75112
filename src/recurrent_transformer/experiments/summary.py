"""`recurrent-transformer compare-summary`: several comparisons side by side, one table and one plot of every model's
score on every data set.

    recurrent-transformer compare-summary runs/compare/r8 runs/compare/trec runs/compare/sst2 \
        runs/compare/thucnews --output docs/comparison.png
    recurrent-transformer compare-summary runs/compare/new/trec docs/comparison.json --output docs/comparison.png

Each argument is an output folder of `recurrent-transformer compare` (its results.json holds each model's mean and
std over seeds), or the .json an earlier summary wrote. The table (printed, and written as .md beside the plot,
with .json) has one line per data set (the folder's name) and one column per model: accuracy, then macro F1, in % as
mean ± std. Sources that name the same data set (on the same split) share its line: a model takes its scores from
the first source that has it, so a comparison of new presets can be set beside an earlier summary's models (the
.json records each model's folder under "sources"). A last column says whether the line's first preset (that of
its first source; '+MLM' rows aside) beat every other neural model on mean accuracy. The plot shows the accuracies
as grouped bars with the std as error bars. Bad input (a missing folder or results.json, a data set on two
different splits) prints one `error:` line and exits with status 2.
"""

from pathlib import Path

from ..cli import PositionalParser, UsageError, run_command
from ..files import read_json, write_json
from .baseline import SVM_LABEL
from .report import MLM_SUFFIX, format_score

RESULTS_FILE = "results.json"  # the comparison writes it
SCORE_KEYS = ("accuracy", "f1_macro", "runs")


def read_results(folder: Path) -> dict:
    path = folder / RESULTS_FILE
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: expected an output folder of `recurrent-transformer compare`")
    if not path.is_file():
        raise UsageError(f"{path} is missing: the comparison has not finished (or the folder is not one)")
    results = read_json(path, "the results.json of `recurrent-transformer compare`")
    rows = results.get("rows") if isinstance(results, dict) else None
    if (
        not rows
        or "split" not in results
        or any(key not in row.get("summary", {}) for row in rows for key in ("accuracy", "f1_macro"))
    ):
        raise UsageError(
            f"{path} is not a results.json of `recurrent-transformer compare` (rows with accuracy and f1_macro)"
        )
    return results


def read_summary(path: Path) -> dict[str, dict]:
    """The lines of an earlier summary's .json, by data set."""
    summary = read_json(path, "a summary written by `recurrent-transformer compare-summary`")
    lines = summary.get("data_sets") if isinstance(summary, dict) else None
    if (
        not isinstance(lines, list)
        or not lines
        or any(not {"data", "split", "reference", "scores"} <= set(line) for line in lines)
        or any(key not in score for line in lines for score in line["scores"].values() for key in SCORE_KEYS)
    ):
        raise UsageError(
            f"{path} is not a summary written by `recurrent-transformer compare-summary` (data_sets with scores)"
        )
    return {line["data"]: line for line in lines}


def comparison_line(results: dict) -> dict:
    """A comparison's results.json as one summary line: scores by model, the first row its reference."""
    scores = {
        row["label"]: {key: row["summary"][key] for key in ("accuracy", "f1_macro")} | {"runs": len(row["runs"])}
        for row in results["rows"]
    }
    return {"split": results["split"], "reference": results["rows"][0]["label"], "scores": scores}


def source_of(line: dict, model: str, path: Path) -> str:
    """Where a model's scores come from: its comparison folder (an earlier summary passes on what it recorded)."""
    return line.get("sources", {}).get(model, str(path))


def read_sources(paths: list[Path]) -> dict[str, dict]:
    """Every source's lines merged by data set: the first source of a data set sets its split and reference; a model
    takes its scores from the first source that has it."""
    merged: dict[str, dict] = {}
    for path in paths:
        is_summary = path.suffix.lower() == ".json" and path.is_file()
        found = read_summary(path) if is_summary else {path.name: comparison_line(read_results(path))}
        for name, line in found.items():
            if name not in merged:
                merged[name] = {"split": line["split"], "reference": line["reference"], "scores": {}, "sources": {}}
            elif merged[name]["split"] != line["split"]:
                raise UsageError(
                    f"{path} has data set {name!r} on its {line['split']} split, an earlier source on its "
                    f"{merged[name]['split']} split: one line cannot hold both"
                )
            for model, score in line["scores"].items():
                if model not in merged[name]["scores"]:
                    merged[name]["scores"][model] = score
                    merged[name]["sources"][model] = source_of(line, model, path)
    return merged


def summarize(comparisons: dict[str, dict]) -> tuple[list[str], list[dict]]:
    """The models (in first-seen order) and one line per data set: scores by model, and whether the reference
    preset beat the other neural models on mean accuracy."""
    models: list[str] = []
    lines = []
    for name, line in comparisons.items():
        scores, reference = line["scores"], line["reference"]
        models.extend(label for label in scores if label not in models)
        rivals = [label for label in scores if label not in (reference, SVM_LABEL) and not label.endswith(MLM_SUFFIX)]
        beats = all(scores[reference]["accuracy"]["mean"] > scores[label]["accuracy"]["mean"] for label in rivals)
        lines.append(
            {"data": name, "split": line["split"], "reference": reference, "scores": scores, "beats": beats}
            | {"sources": line["sources"]}
        )
    # As compare.py orders its rows: each '+MLM' row after its preset, the classical baseline last.
    first_seen = {label: index for index, label in enumerate(models)}
    models.sort(
        key=lambda label: (label == SVM_LABEL, first_seen.get(label.removesuffix(MLM_SUFFIX), first_seen[label]), label)
    )
    return models, lines


def markdown(models: list[str], lines: list[dict]) -> str:
    header = ["data set (split)", *models, "first preset beats the other neural models"]
    table = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(models) + "---|"]
    for line in lines:
        cells = [f"{line['data']} ({line['split']})"]
        for model in models:
            score = line["scores"].get(model)
            cells.append(
                "-"
                if score is None
                else " / ".join(format_score(score[name], score["runs"]) for name in ("accuracy", "f1_macro"))
            )
        cells.append("yes" if line["beats"] else "no")
        table.append("| " + " | ".join(cells) + " |")
    return "\n".join(table) + "\n\nEach cell: accuracy / macro F1 in %, mean ± std over seeds.\n"


def plot(models: list[str], lines: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(max(8, 2.2 * len(lines) + 3), 5))
    width = 0.8 / len(models)
    positions = np.arange(len(lines))
    lowest = 1.0
    for index, model in enumerate(models):
        means = [line["scores"].get(model, {}).get("accuracy", {}).get("mean", np.nan) for line in lines]
        stds = [line["scores"].get(model, {}).get("accuracy", {}).get("std", 0.0) for line in lines]
        lowest = min([lowest, *[mean for mean in means if mean == mean]])
        axes.bar(positions + index * width, 100 * np.array(means), width, yerr=100 * np.array(stds), capsize=3,
                 label=model)  # fmt: skip
    axes.set_xticks(positions + width * (len(models) - 1) / 2, [f"{line['data']} ({line['split']})" for line in lines])
    axes.set_ylim(max(0.0, 100 * lowest - 10), 100)
    axes.set_ylabel("accuracy in % (mean ± std over seeds)")
    axes.set_title("each model on each data set")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(len(models), 5))
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def summarize_folders(folders: list[str], output: str) -> dict:
    path = Path(output)
    if path.suffix.lower() != ".png":
        raise UsageError(f"--output {output!r} must end in .png (the table goes beside it as .md and .json)")
    models, lines = summarize(read_sources([Path(folder) for folder in folders]))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(models, lines)
    plot(models, lines, path)
    path.with_suffix(".md").write_text(text)
    summary = {"models": models, "data_sets": lines}
    write_json(path.with_suffix(".json"), summary)
    print(text)
    return summary


def run(argv: list[str]) -> dict:
    parser = PositionalParser(prog="recurrent-transformer compare-summary", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folders",
        nargs="+",
        help="output folders of `recurrent-transformer compare` (one per data set), or an earlier summary's .json",
    )
    parser.add_argument("--output", required=True, help="the plot (.png); the table is written beside it")
    args = parser.parse_args(argv)
    return summarize_folders(args.folders, args.output)


def main(argv: list[str] | None = None) -> dict:
    """Summarize as the command line says. Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
