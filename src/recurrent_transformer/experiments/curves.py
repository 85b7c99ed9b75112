"""`recurrent-transformer loss-curves`: training-loss curves of several runs side by side, a table of how far each
strays from the first, and a plot.

    recurrent-transformer loss-curves runs/fp32-seed42 runs/bf16-seed42 runs/fp32-seed43 --output runs/curves.png

Each argument is an output folder of `recurrent-transformer train` (or a comparison's run folder); its loss_history.json holds the
mean training loss of every `--logging_steps` window. The first folder is the reference. For every other run the
table gives the mean and the largest absolute difference from the reference's loss over the steps both logged,
and its first and last logged loss. To judge whether a change (bf16 autocast, a new kernel) trains like the
reference, put a second seed of the reference beside it: its distance is the run-to-run noise.
Bad input (a missing folder or history, no shared steps) prints one `error:` line and exits with status 2.
"""

import json
from pathlib import Path

from ..cli import PositionalParser, UsageError, run_command
from ..files import write_json
from ..training.checkpoints import LOSS_HISTORY_FILE


def read_history(run_dir: Path) -> dict[int, float]:
    """{step: mean training loss} from a run folder's loss_history.json."""
    path = run_dir / LOSS_HISTORY_FILE
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a folder")
    if not path.is_file():
        raise UsageError(f"{path} is missing: the folder is not a training run (or it logged no loss yet)")
    try:
        entries = json.loads(path.read_text())
        return {int(entry["step"]): float(entry["loss"]) for entry in entries}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UsageError(f"{path} is not a list of {{step, loss}} entries ({error})") from error


def compare_curves(histories: dict[str, dict[int, float]]) -> list[dict]:
    """One row per run: its distance from the first run's curve over the steps both logged."""
    names = list(histories)
    reference = histories[names[0]]
    rows = []
    for name in names:
        curve = histories[name]
        shared = sorted(set(curve) & set(reference))
        if not shared:
            raise UsageError(f"{name} and {names[0]} logged no step in common")
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


def compare_runs(run_dirs: list[str], output: str | None = None) -> dict:
    if len(run_dirs) < 2:
        raise UsageError("give at least two run folders: the reference first")
    histories = {}
    for folder in run_dirs:
        if folder in histories:
            raise UsageError(f"{folder} is named twice")
        histories[folder] = read_history(Path(folder))
    rows = compare_curves(histories)
    table = format_table(rows)
    print(table)
    if output:
        output_path = Path(output)
        if output_path.suffix != ".png":
            raise UsageError(f"--output {output} should end in .png")
        plot(histories, output_path)
        output_path.with_suffix(".md").write_text(table + "\n")
        write_json(output_path.with_suffix(".json"), rows)
    return {"rows": rows, "table": table}


def run(argv: list[str]) -> dict:
    parser = PositionalParser(prog="recurrent-transformer loss-curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="training run folders; the first is the reference")
    parser.add_argument("--output", help="write the plot here (.png), with the table beside it (.md, .json)")
    args = parser.parse_args(argv)
    return compare_runs(args.run_dirs, args.output)


def main(argv: list[str] | None = None) -> dict:
    """Compare the curves as the command line says. Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
