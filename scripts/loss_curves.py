"""Training-loss curves of several runs side by side: a table of how far each strays from the first, and a plot.

    python scripts/loss_curves.py runs/fp32-seed42 runs/bf16-seed42 runs/fp32-seed43 --output runs/bf16-curves.png

Each argument is a scripts/train.py output folder (or a compare.py run folder); its loss_history.json holds the
mean training loss of every `--logging_steps` window. The first folder is the reference. For every other run the
table gives the mean and the largest absolute difference from the reference's loss over the steps both logged,
and its first and last logged loss. To judge whether a change (bf16 autocast, a new kernel) trains like the
reference, put a second seed of the reference beside it: its distance is the run-to-run noise.
Bad input (a missing folder or history, no shared steps) prints one `error:` line and exits with status 2.
"""

import argparse
import json
import sys
from pathlib import Path

from recurrent_transformer.cli import unshadow_libraries

unshadow_libraries(__file__)

LOSS_HISTORY_FILE = "loss_history.json"  # scripts/train.py writes it


class CurveError(ValueError):
    """Bad input, reported as one line."""


def read_history(run_dir: Path) -> dict[int, float]:
    """{step: mean training loss} from a run folder's loss_history.json."""
    path = run_dir / LOSS_HISTORY_FILE
    if not run_dir.is_dir():
        raise CurveError(f"{run_dir} is not a folder")
    if not path.is_file():
        raise CurveError(f"{path} is missing: the folder is not a scripts/train.py run (or it logged no loss yet)")
    try:
        entries = json.loads(path.read_text())
        return {int(entry["step"]): float(entry["loss"]) for entry in entries}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CurveError(f"{path} is not a list of {{step, loss}} entries ({error})") from error


def compare_curves(histories: dict[str, dict[int, float]]) -> list[dict]:
    """One row per run: its distance from the first run's curve over the steps both logged."""
    names = list(histories)
    reference = histories[names[0]]
    rows = []
    for name in names:
        curve = histories[name]
        shared = sorted(set(curve) & set(reference))
        if not shared:
            raise CurveError(f"{name} and {names[0]} logged no step in common")
        gaps = [abs(curve[step] - reference[step]) for step in shared]
        steps = sorted(curve)
        rows.append(
            {
                "run": name,
                "logged_steps": len(steps),
                "last_step": steps[-1],
                "first_loss": curve[steps[0]],
                "last_loss": curve[steps[-1]],
                "mean_abs_gap": sum(gaps) / len(gaps),
                "max_abs_gap": max(gaps),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| run | logged steps | last step | first loss | last loss | mean abs gap to first run | max abs gap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['logged_steps']} | {row['last_step']} | {row['first_loss']:.4f} | "
            f"{row['last_loss']:.4f} | {row['mean_abs_gap']:.4f} | {row['max_abs_gap']:.4f} |"
        )
    return "\n".join(lines)


def plot(histories: dict[str, dict[int, float]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, curve in histories.items():
        steps = sorted(curve)
        axes.plot(steps, [curve[step] for step in steps], label=name)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss (mean over the logging window)")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    plt.close(figure)


def run(run_dirs: list[str], output: str | None = None) -> dict:
    if len(run_dirs) < 2:
        raise CurveError("give at least two run folders: the reference first")
    histories = {}
    for folder in run_dirs:
        if folder in histories:
            raise CurveError(f"{folder} is named twice")
        histories[folder] = read_history(Path(folder))
    rows = compare_curves(histories)
    table = format_table(rows)
    print(table)
    if output:
        output_path = Path(output)
        if output_path.suffix != ".png":
            raise CurveError(f"--output {output} should end in .png")
        plot(histories, output_path)
        output_path.with_suffix(".md").write_text(table + "\n")
        output_path.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    return {"rows": rows, "table": table}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="scripts/train.py output folders; the first is the reference")
    parser.add_argument("--output", help="write the plot here (.png), with the table beside it (.md, .json)")
    args = parser.parse_args(argv)
    try:
        return run(args.run_dirs, args.output)
    except CurveError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
