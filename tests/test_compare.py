"""`recurrent-transformer compare` on an R8 slice with the parameter-matched tiny presets (configs/compare/smoke.yaml):
the table and the plots are written, the table says what the runs' own metrics files say, and bad input is refused."""

import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import REPO_ROOT, THUCNEWS_TEST, THUCNEWS_TRAIN, files_under, in_repo_root, run_command

from recurrent_transformer.cli import UsageError, parse_arguments
from recurrent_transformer.data import load_labelled_data
from recurrent_transformer.experiments.baseline import svm_analyzer_for, tfidf_svm_baseline
from recurrent_transformer.experiments.plan import ARGUMENT_CLASSES, check_parameters, check_settings
from recurrent_transformer.experiments.report import HEADLINE
from recurrent_transformer.experiments.resume import mlm_work_finished
from recurrent_transformer.files import write_json
from recurrent_transformer.machine import cpu_description
from recurrent_transformer.training.build import build_datasets, build_tokenizer

SMOKE = str(REPO_ROOT / "configs" / "compare" / "smoke.yaml")
LABELS = ["tiny", "tiny+MLM", "tiny-lstm", "tiny-transformer", "TF-IDF + LinearSVC"]
SEEDS = (1, 2)
PLOTS = ("validation_accuracy_vs_steps.png", "validation_accuracy_vs_seconds.png", "final_scores.png")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """3 tiny presets x 2 seeds, tiny+MLM x 2 seeds (6 MLM steps each), 12 steps a run, and the SVM: about 30 s."""
    output_dir = tmp_path_factory.mktemp("compare") / "out"
    return output_dir, run_command("compare", [SMOKE, "--output_dir", output_dir])


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The markdown table's cells by model name."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    return {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.strip("|").split("|")] for line in lines)}


def run_folders(output_dir, label):
    if label == "TF-IDF + LinearSVC":
        return [output_dir / "svm"]
    return [output_dir / "runs" / label / f"seed-{seed}" for seed in SEEDS]


def read(path):
    return json.loads(path.read_text())


def test_comparison_writes_the_table_and_the_plots(comparison):
    output_dir, results = comparison
    assert list(table_rows((output_dir / "results.md").read_text())) == LABELS
    for name in PLOTS:
        assert (output_dir / name).read_bytes()[:4] == b"\x89PNG", name
    assert read(output_dir / "results.json") == results
    assert [row["label"] for row in results["rows"]] == LABELS
    assert results["split"] == "test" and results["parameter_mismatch"] == []


def expected_score(score: dict, runs: int) -> str:
    """How a table cell must show a score: '%.2f ± %.2f' in percent over several runs, the mean alone for one."""
    return f"{100 * score['mean']:.2f} ± {100 * score['std']:.2f}" if runs > 1 else f"{100 * score['mean']:.2f}"


def test_table_numbers_equal_the_per_run_metrics_files(comparison):
    output_dir, results = comparison
    rows = table_rows((output_dir / "results.md").read_text())
    summaries = {row["label"]: row["summary"] for row in results["rows"]}
    for label in LABELS:
        folders = run_folders(output_dir, label)
        metrics = [read(folder / "metrics.json") for folder in folders]
        assert all(entry["split"] == "test" and entry["test"]["num_samples"] == 64 for entry in metrics)
        cells = rows[label]
        assert cells[0] == str(len(folders))
        for index, name in enumerate(HEADLINE):
            values = np.array([entry["test"][name] for entry in metrics])
            mean, std = values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0
            assert summaries[label][name] == {"mean": mean, "std": std}
            assert cells[1 + index] == expected_score({"mean": mean, "std": std}, len(values)), (label, name)
        if label == "TF-IDF + LinearSVC":
            continue
        run_infos = [read(folder / "run_info.json") for folder in folders]
        assert cells[5] == f"{run_infos[0]['num_parameters']:,}"
        assert cells[6] == f"{np.mean([info['train_tokens_per_second'] for info in run_infos]):,.0f}"


def test_presets_are_parameter_matched_and_share_tokenizer_and_split(comparison):
    output_dir, results = comparison
    counts = results["parameter_counts"]
    assert set(counts) == {"tiny", "tiny-lstm", "tiny-transformer"}
    assert all(abs(count / counts["tiny"] - 1) <= 0.05 for count in counts.values())
    shared_vocab = read(output_dir / "tokenizer" / "tokenizer.json")["model"]["vocab"]
    split_sizes = set()
    for label in LABELS[:-1]:
        for seed, folder in zip(SEEDS, run_folders(output_dir, label), strict=True):
            assert read(folder / "tokenizer.json")["model"]["vocab"] == shared_vocab
            run_info, train_args = read(folder / "run_info.json"), read(folder / "train_args.json")
            assert train_args["training"]["seed"] == seed and train_args["data"]["split_seed"] == SEEDS[0]
            assert run_info["global_step"] == 12 and run_info["stopped_by"] == "max_steps"
            split_sizes.add(json.dumps(run_info["split_sizes"]))
            history = read(folder / "eval_history.json")
            assert [entry["step"] for entry in history] == [4, 8, 12]
            assert 0 < history[0]["train_seconds"] < history[1]["train_seconds"] < history[2]["train_seconds"]
    assert len(split_sizes) == 1  # the same train, validation and test rows everywhere


def test_mlm_rows_fine_tune_from_their_own_pretrained_folder(comparison):
    output_dir, _ = comparison
    for seed, folder in zip(SEEDS, run_folders(output_dir, "tiny+MLM"), strict=True):
        pretrained = output_dir / "pretrain" / "tiny" / f"seed-{seed}"
        assert read(folder / "run_info.json")["init_from"] == str(pretrained)
        assert read(pretrained / "mlm_metrics.json")["global_step"] == 6


def test_resume_keeps_finished_runs_and_refuses_changed_settings(comparison, tmp_path, capsys):
    output_dir, results = comparison
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    kept = {name: (copy / name).read_bytes() for name in files_under(copy) if name.endswith("metrics.json")}
    resumed = run_command("compare", [SMOKE, "--output_dir", copy, "--resume"])
    assert {name: (copy / name).read_bytes() for name in kept} == kept
    assert [row["summary"] for row in resumed["rows"]] == [row["summary"] for row in results["rows"]]
    before = {name: (copy / name).read_bytes() for name in files_under(copy)}
    assert_refused(capsys, [SMOKE, "--output_dir", copy, "--resume", "--max_steps", 5], "settings differ")
    assert {name: (copy / name).read_bytes() for name in files_under(copy)} == before


def test_a_comparison_saved_before_a_setting_existed_resumes(comparison, tmp_path, capsys):
    """compare_args.json written before --group_by_length existed: the comparison ran as its default (shuffled)
    does, so it resumes; asking for length-grouped batches on resume is a change, refused."""
    output_dir, results = comparison
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    saved = read(copy / "compare_args.json")
    del saved["training"]["group_by_length"]
    (copy / "compare_args.json").write_text(json.dumps(saved))
    resumed = run_command("compare", [SMOKE, "--output_dir", copy, "--resume"])
    assert [row["summary"] for row in resumed["rows"]] == [row["summary"] for row in results["rows"]]
    line = assert_refused(capsys, [SMOKE, "--output_dir", copy, "--resume", "--group_by_length"], "settings differ")
    assert "training.group_by_length" in line


def test_published_card_shows_the_comparison_table(comparison, tmp_path):
    """push-to-hub --comparison: a run's card carries the comparison's rows, mean ± std as results.json says."""
    output_dir, results = comparison
    staging = tmp_path / "stage"
    argv = ["--model_dir", output_dir / "runs" / "tiny" / "seed-1", "--repo_id", "someone/r8-tiny", "--dry_run"]
    run_command("push-to-hub", [*argv, "--staging_dir", staging, "--comparison", output_dir])
    text = (staging / "README.md").read_text()
    assert "## Against its baselines" in text and "{{" not in text
    for row in results["rows"]:
        accuracy, f1 = (row["summary"][name] for name in ("accuracy", "f1_macro"))
        cells = [
            row["label"],
            str(len(row["runs"])),
            *[expected_score(score, len(row["runs"])) for score in (accuracy, f1)],
            f"{row['num_parameters']:,}",
        ]
        assert "| " + " | ".join(cells) + " |" in text, row["label"]


def test_summary_of_comparisons_equals_their_results(comparison, tmp_path, capsys):
    """compare-summary: one line per comparison folder, each cell the folder's results.json; the
    verdict column compares the first preset's mean accuracy with the other neural models' ('+MLM' rows aside)."""
    output_dir, results = comparison
    other = tmp_path / "other"
    shutil.copytree(output_dir, other, ignore=shutil.ignore_patterns("runs", "pretrain", "tokenizer"))
    png = tmp_path / "summary" / "all.png"
    summary = run_command("compare-summary", [output_dir, other, "--output", png])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert read(png.with_suffix(".json")) == json.loads(json.dumps(summary))
    table = table_rows(png.with_suffix(".md").read_text())
    assert table.pop("data set (split)")[:-1] == LABELS  # the header
    assert list(table) == ["out (test)", "other (test)"]
    assert summary["models"] == LABELS
    accuracy = {row["label"]: row["summary"]["accuracy"]["mean"] for row in results["rows"]}
    beats = all(accuracy["tiny"] > accuracy[label] for label in ("tiny-lstm", "tiny-transformer"))
    for cells in table.values():
        for label, text in zip(LABELS, cells, strict=False):
            row = next(row for row in results["rows"] if row["label"] == label)
            parts = [expected_score(row["summary"][name], len(row["runs"])) for name in ("accuracy", "f1_macro")]
            assert text == " / ".join(parts), label
        assert cells[-1] == ("yes" if beats else "no")
    for argv, message in (
        ([tmp_path / "nowhere", "--output", png], "is not a folder"),
        ([tmp_path / "summary", "--output", png], "results.json is missing"),
        ([output_dir, "--output", tmp_path / "x.jpg"], "must end in .png"),
    ):
        with pytest.raises(SystemExit) as stopped:
            run_command("compare-summary", argv)
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err


def test_summary_sets_a_new_comparison_beside_an_earlier_summary(comparison, tmp_path, capsys):
    """A comparison of a new preset (a folder of the same name) and an earlier summary's .json share each data set's
    line: the new folder's first preset is the line's reference, the other models keep the earlier scores, and the
    .json says where each model's scores come from. The same data set on another split is refused."""
    output_dir, results = comparison
    earlier = run_command("compare-summary", [output_dir, "--output", tmp_path / "earlier.png"])
    new = tmp_path / "new" / output_dir.name
    new.mkdir(parents=True)
    (row,) = [json.loads(json.dumps(row)) for row in results["rows"] if row["label"] == "tiny-lstm"]  # as if new
    row["label"] = "tiny-new"
    write_json(new / "results.json", results | {"rows": [row]})
    png = tmp_path / "merged.png"
    merged = run_command("compare-summary", [new, tmp_path / "earlier.json", "--output", png])
    assert merged["models"] == ["tiny-new", *LABELS]
    (line,) = merged["data_sets"]
    assert (
        line["reference"] == "tiny-new" and line["scores"]["tiny-new"] == earlier["data_sets"][0]["scores"]["tiny-lstm"]
    )
    assert {label: line["scores"][label] for label in LABELS} == earlier["data_sets"][0]["scores"]
    assert line["sources"] == {"tiny-new": str(new), **{label: str(output_dir) for label in LABELS}}
    # tiny-new has tiny-lstm's scores: it does not beat tiny-lstm, whatever the numbers.
    assert line["beats"] is False and table_rows(png.with_suffix(".md").read_text())[f"{new.name} (test)"][-1] == "no"
    write_json(new / "results.json", results | {"rows": [row], "split": "validation"})
    with pytest.raises(SystemExit):
        run_command("compare-summary", [new, tmp_path / "earlier.json", "--output", png])
    assert "earlier.json has data set 'out' on its test split, an earlier source on its validation split" in (
        capsys.readouterr().err
    )
    (tmp_path / "bad.json").write_text('{"models": []}')
    with pytest.raises(SystemExit):
        run_command("compare-summary", [tmp_path / "bad.json", "--output", png])
    assert "is not a summary written by" in capsys.readouterr().err


def test_resume_may_change_the_seeds_on_the_same_split(comparison, tmp_path, capsys):
    """--resume --seeds: a subset reports only those seeds' runs (nothing retrained); seeds whose first one would
    cut another validation split are refused."""
    output_dir, results = comparison
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    before = {name: (copy / name).read_bytes() for name in files_under(copy) if name.endswith("metrics.json")}
    subset = run_command("compare", [SMOKE, "--output_dir", copy, "--resume", "--seeds", 1])
    assert {name: (copy / name).read_bytes() for name in before} == before
    for row, full in zip(subset["rows"][:-1], results["rows"][:-1], strict=True):
        assert [run["seed"] for run in row["runs"]] == [1]
        assert row["runs"][0]["scores"] == full["runs"][0]["scores"]
    assert read(copy / "compare_args.json")["compare"]["seeds"] == "1"
    assert_refused(capsys, [SMOKE, "--output_dir", copy, "--resume", "--seeds", 2], "settings differ")


def test_resume_adds_presets_after_the_saved_ones(comparison, tmp_path, capsys):
    """--resume --presets with a preset added at the end trains only the new preset's runs and reports its row; the
    finished runs are kept. Dropping or reordering the saved presets (the first is the parameter reference) is a
    change, refused."""
    output_dir, results = comparison
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    preset = json.loads((REPO_ROOT / "src" / "recurrent_transformer" / "presets" / "tiny.json").read_text())
    added = tmp_path / "tiny-dropout.json"  # the same parameters, so inside the tolerance
    added.write_text(json.dumps(preset | {"hidden_dropout_prob": 0.2}))
    saved_presets = read(copy / "compare_args.json")["compare"]["presets"]
    kept = {name: (copy / name).read_bytes() for name in files_under(copy) if name.endswith("metrics.json")}
    resumed = run_command("compare", [SMOKE, "--output_dir", copy, "--resume", "--presets", f"{saved_presets},{added}"])
    assert {name: (copy / name).read_bytes() for name in kept} == kept
    labels = [row["label"] for row in resumed["rows"]]
    assert labels == [*LABELS[:-1], "tiny-dropout", LABELS[-1]]
    rows = {row["label"]: row for row in resumed["rows"]}
    assert [run["seed"] for run in rows["tiny-dropout"]["runs"]] == list(SEEDS)
    for label in LABELS:
        assert rows[label]["summary"] == {row["label"]: row for row in results["rows"]}[label]["summary"]
    assert read(copy / "compare_args.json")["compare"]["presets"] == f"{saved_presets},{added}"
    reordered = ",".join(reversed(saved_presets.split(",")))
    assert_refused(capsys, [SMOKE, "--output_dir", copy, "--resume", "--presets", reordered], "settings differ")


def test_resume_adds_mlm_rows_to_a_comparison_without_them(comparison, tmp_path, capsys):
    """A comparison run without --pretrain_steps gets its '+MLM' rows from a --resume that asks for them; the
    finished runs are kept. Once a pre-training or '+MLM' run has finished, their settings are fixed like any
    other."""
    output_dir, results = comparison
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy, ignore=shutil.ignore_patterns("tiny+MLM", "pretrain"))
    saved = read(copy / "compare_args.json")
    saved["compare"]["pretrain_steps"] = 0  # what `--pretrain_steps 0` would have saved
    (copy / "compare_args.json").write_text(json.dumps(saved))
    kept = {name: (copy / name).read_bytes() for name in files_under(copy) if name.endswith("metrics.json")}
    assert not mlm_work_finished(copy)
    resumed = run_command("compare", [SMOKE, "--output_dir", copy, "--resume"])
    assert mlm_work_finished(copy)
    assert {name: (copy / name).read_bytes() for name in kept} == kept
    assert [row["label"] for row in resumed["rows"]] == LABELS
    assert read(copy / "compare_args.json")["compare"]["pretrain_steps"] == 6
    for folder in run_folders(copy, "tiny+MLM"):
        assert read(folder / "run_info.json")["init_from"].startswith(str(copy / "pretrain" / "tiny"))
    assert_refused(capsys, [SMOKE, "--output_dir", copy, "--resume", "--pretrain_steps", 8], "settings differ")


def test_parallel_runs_give_the_same_scores_as_one_after_another(comparison, tmp_path):
    """--parallel_runs 2 trains the runs (MLM pre-training included) in two worker processes: with the same
    tokenizer, every run's scores and validation curve equal the in-process comparison's."""
    output_dir, results = comparison
    parallel = tmp_path / "parallel"
    argv = [SMOKE, "--output_dir", parallel, "--parallel_runs", 2, "--tokenizer_name", output_dir / "tokenizer"]
    parallel_results = run_command("compare", argv)

    def scores(rows):
        return [{name: row["summary"][name] for name in HEADLINE} for row in rows]

    assert scores(parallel_results["rows"]) == scores(results["rows"])
    for label in LABELS[:-1]:
        for one, other in zip(run_folders(output_dir, label), run_folders(parallel, label), strict=True):
            losses = [[entry["loss"] for entry in read(folder / "eval_history.json")] for folder in (one, other)]
            assert losses[0] == losses[1], (label, one.name)


def assert_refused(capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        run_command("compare", argv)
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], lines
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--presets", "tiny,hybrid-huge"], "unknown model preset 'hybrid-huge'"),
        (["--presets", "tiny,hybrid-small"], "parameter counts differ by more than 5 % from tiny"),
        (["--train_file", "no/such/train.csv"], "train_file: file 'no/such/train.csv' does not exist"),
        (["--model_config", "hybrid-small"], "model_config is set per run by the comparison; use --presets"),
        (["--seed", "42"], "seed is set per run by the comparison; use --seeds"),
        (["--pretrain_presets", "hybrid-small"], "pretrain_presets ['hybrid-small'] are not among the model presets"),
        (["--parallel_runs", "0"], "parallel_runs=0 is out of range"),
        (["--max_length", "1"], "max_length=1 must be an integer >= 2"),
        (["--learning_rate", "-0.1"], "learning_rate=-0.1 must be 0 or more"),
    ],
    ids=[
        "unknown-preset",
        "parameter-mismatch",
        "missing-data",
        "per-run-setting",
        "seed",
        "pretrain-preset",
        "parallel-runs",
        "max-length-too-short",
        "negative-lr",
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    output_dir = tmp_path / "out"
    assert_refused(capsys, [SMOKE, "--output_dir", output_dir, *argv], message)
    assert not output_dir.exists()


def test_an_output_folder_holding_files_is_left_alone(tmp_path, capsys):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("mine")
    assert_refused(capsys, [SMOKE, "--output_dir", output_dir], "--overwrite_output_dir")
    assert files_under(output_dir) == {"notes.txt"} and (output_dir / "notes.txt").read_text() == "mine"


def test_parameter_mismatch_can_be_allowed_with_a_warning(caplog, tmp_path):
    argv = [SMOKE, "--output_dir", str(tmp_path / "out"), "--presets", "tiny,hybrid-small"]
    args = parse_arguments(ARGUMENT_CLASSES, argv)
    compare_args, model_args, data_args, train_args = args
    with in_repo_root():  # the YAML's data paths are relative to it
        plan = check_settings(*args)
        data = build_datasets(data_args, plan.split_seed)
    tokenizer = build_tokenizer(model_args, data.splits["train"])
    with pytest.raises(UsageError, match="hybrid-small"):
        check_parameters(compare_args, model_args, data, tokenizer, plan)
    allowed = dataclasses.replace(compare_args, allow_parameter_mismatch=True)
    counts, outside = check_parameters(allowed, model_args, data, tokenizer, plan)
    assert outside == ["hybrid-small"] and counts["hybrid-small"] > 10 * counts["tiny"]
    assert re.search(r"WARNING: parameter counts differ .* running anyway", caplog.text)


def test_svm_baseline_reads_cjk_text_as_character_ngrams():
    assert svm_analyzer_for(["今日股市大涨 沪指收复3000点", "教育部发布新规"]) == "char"
    assert svm_analyzer_for(["what is the capital of france ?"]) == "word"
    data = load_labelled_data(train_file=THUCNEWS_TRAIN, test_file=THUCNEWS_TEST)
    metrics, info = tfidf_svm_baseline(data, c_values=(0.3, 1.0), metrics_backend="sklearn")
    assert info["analyzer"] == "char" and info["ngram_range"] == [1, 3] and info["C"] in (0.3, 1.0)
    assert metrics["split"] == "test" and metrics["test"]["num_samples"] == 100
    assert metrics["test"]["accuracy"] > 0.3  # 10 balanced classes: chance is 0.1


def test_time_budget_stops_a_run_and_is_recorded(tmp_path):
    """train's --max_train_seconds, the wall-clock budget the comparison passes on: the run stops, validates at the
    stopping step and says why."""
    output_dir = tmp_path / "run"
    train_smoke = REPO_ROOT / "configs" / "train" / "smoke.yaml"
    results = run_command(
        "train",
        [
            train_smoke,
            "--output_dir",
            output_dir,
            "--max_steps",
            100_000,
            "--max_train_seconds",
            1.5,
            "--eval_steps",
            10,
        ],
    )
    run_info = read(output_dir / "run_info.json")
    assert run_info["stopped_by"] == "max_train_seconds"
    assert 1.5 <= run_info["train_seconds"] < 30 and results["global_step"] == run_info["global_step"] < 100_000
    assert run_info["train_tokens"] > 0
    assert run_info["train_tokens_per_second"] == run_info["train_tokens"] / run_info["train_seconds"]
    # The CPU the run got meanwhile: a share of its threads' time (above 0, about 1 on free cores).
    threads = run_info["torch_threads"]
    assert run_info["train_cpu_share"] == run_info["train_cpu_seconds"] / (run_info["train_seconds"] * threads)
    assert 0 < run_info["train_cpu_share"] < 1.5
    assert run_info["cpu"] == cpu_description() and f"({torch.backends.cpu.get_cpu_capability()})" in run_info["cpu"]
    history = read(output_dir / "eval_history.json")
    assert history[-1]["step"] == run_info["global_step"]
    assert history[-1]["train_seconds"] <= run_info["train_seconds"]


def test_a_preset_with_fewer_positions_than_max_length_is_cut_at_its_positions(tmp_path):
    """--max_length 128 with tiny-transformer's 64 learned absolute positions: instead of refusing the comparison,
    that preset's runs (its MLM pre-training included) cut texts at 64 tokens, record it, and results.md says so;
    tiny (no positions) uses 128. With --group_by_length, which every run (and the pre-training) applies."""
    output_dir = tmp_path / "out"
    transformer = "configs/compare/presets/tiny-transformer.json"
    argv = [
        SMOKE, "--output_dir", output_dir, "--max_length", 128, "--presets", f"tiny,{transformer}", "--seeds", 1,
        *("--pretrain_presets", transformer, "--no_svm_baseline", "--max_steps", 4, "--eval_steps", 4),
        "--group_by_length",
    ]  # fmt: skip
    results = run_command("compare", argv)
    expected = {"tiny": 128, "tiny-transformer": 64, "tiny-transformer+MLM": 64}
    for label, max_length in expected.items():
        folder = output_dir / "runs" / label / "seed-1"
        assert read(folder / "train_args.json")["model"]["max_length"] == max_length, label
        assert read(folder / "run_info.json")["max_length"] == max_length, label
        assert read(folder / "run_info.json")["group_by_length"], label
        record = read(folder / "compare_run.json")
        assert record["max_length"] == max_length, label
        assert ("64 learned absolute positions" in record.get("max_length_note", "")) == (max_length == 64), label
    runs = {row["label"]: row["runs"][0]["max_length"] for row in results["rows"]}
    assert runs == expected
    note = (
        "tiny-transformer has 64 learned absolute positions: its runs cut texts at max_length 64 (the comparison's "
        "max_length is 128)."
    )
    assert f"- {note}" in (output_dir / "results.md").read_text()


STOPPED_COMPARISON = """
import concurrent.futures, multiprocessing, sys, time
from recurrent_transformer.experiments.workers import workers_stop_with_this_process

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    with workers_stop_with_this_process(), concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as executor:
        futures = [executor.submit(time.sleep, 120) for _ in range(2)]
        while len(multiprocessing.active_children()) < 2:
            time.sleep(0.1)
        print(" ".join(str(child.pid) for child in multiprocessing.active_children()), flush=True)
        concurrent.futures.wait(futures)
"""


def test_a_terminated_comparison_stops_its_worker_processes(tmp_path):
    """`kill` of a --parallel_runs comparison also stops the runs in its workers, instead of leaving them to train
    on with nobody to collect their scores (seen here: two orphaned 20 Newsgroups runs held both cores)."""
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED_COMPARISON)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)


def alive(pid: int) -> bool:
    """Whether `pid` still runs; a zombie (ended, not yet reaped by whoever inherited it) counts as ended."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status
