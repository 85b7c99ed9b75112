"""`recurrent-transformer benchmark` on the tiny preset: the table's rows, columns and numbers (no timing assertions)."""

import json
import math

import pytest
from train_helpers import error_line

from recurrent_transformer import benchmark
from recurrent_transformer.presets import load_preset, preset_dict

TINY_RUN = ["--presets", "tiny", "--batch_size", "2", "--seq_len", "16", "--rounds", "1", "--steps", "1",
            "--warmup", "1", "--threads", "1"]  # fmt: skip


@pytest.mark.parametrize(
    ("extra_args", "reference"), [([], "Bert L2 H32 A4 FF64"), (["--causal"], "Llama L2 H32 A4 FF64")]
)
def test_tiny_run_gives_one_row_of_finite_positive_numbers(tmp_path, extra_args, reference):
    results = benchmark.main([*TINY_RUN, *extra_args, "--output", str(tmp_path / "bench")])

    assert results["columns"] == benchmark.COLUMNS
    [row] = results["rows"]
    assert row["preset"] == "tiny"
    assert row["reference"] == reference
    for column in benchmark.COLUMNS[1:-1]:
        value = row[column]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, f"{column}={value!r}"
    assert row["train_ratio"] == pytest.approx(row["train_tokens_per_s"] / row["ref_train_tokens_per_s"])
    assert row["infer_ratio"] == pytest.approx(row["infer_tokens_per_s"] / row["ref_infer_tokens_per_s"])
    # Peak memory holds at least the fp32 parameters and AdamW's two moments (12 bytes per parameter).
    assert row["train_peak_mib"] > 12 * row["params"] / 2**20
    assert row["ref_train_peak_mib"] > 12 * row["ref_params"] / 2**20

    table = [line for line in results["markdown"].splitlines() if line.startswith("|")]
    assert len(table) == 3  # header, alignment, one preset
    assert table[0].count("|") == table[2].count("|") == len(benchmark.COLUMNS) + 1
    assert table[2].startswith("| tiny |")
    assert (tmp_path / "bench.md").read_text() == results["markdown"] + "\n"
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["params"] == row["params"]


def test_preset_without_feed_forward_is_compared_with_hybrid_small_shape():
    shape, note = benchmark.reference_shape(load_preset("lstm-baseline"))
    hybrid_small = load_preset("hybrid-small")

    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        assert shape[name] == getattr(hybrid_small, name), name
    assert "no feed-forward" in note and "hybrid-small" in note


def test_preset_with_feed_forward_is_compared_with_its_own_shape():
    config = load_preset("transformer-baseline")
    shape, note = benchmark.reference_shape(config)

    assert (shape["num_hidden_layers"], shape["intermediate_size"]) == (config.num_hidden_layers, 1024)
    assert note == ""


def test_activation_checkpointing_lowers_our_training_peak_only(tmp_path):
    """The same run with and without --activation_checkpointing: our model's training peak falls (its layers'
    activations are recomputed in the backward pass), the reference's stays, and the row says which model did it.
    With --checkpoint_every_n_layers 2 (layers 0 and 2 of 4) the peak lies in between."""
    four_layers = tmp_path / "tiny-4.json"
    four_layers.write_text(json.dumps({**preset_dict("tiny"), "num_hidden_layers": 4, "layer_types": ["hybrid"] * 4}))
    longer = ["--presets", str(four_layers), *TINY_RUN[2:], "--batch_size", "8", "--seq_len", "256"]
    [plain] = benchmark.main(longer)["rows"]
    [checkpointed] = benchmark.main([*longer, "--activation_checkpointing"])["rows"]
    [half] = benchmark.main([*longer, "--activation_checkpointing", "--checkpoint_every_n_layers", "2"])["rows"]
    assert checkpointed["train_peak_mib"] < 0.8 * plain["train_peak_mib"]
    assert checkpointed["train_peak_mib"] < 0.95 * half["train_peak_mib"] < 0.95 * plain["train_peak_mib"]
    assert checkpointed["ref_train_peak_mib"] == pytest.approx(plain["ref_train_peak_mib"], rel=0.05)
    assert (
        checkpointed["reference"] == plain["reference"] + "; ours with activation checkpointing, the reference without"
    )
    assert half["reference"] == plain["reference"] + (
        "; ours with activation checkpointing in one layer of 2, the reference without"
    )


def test_compile_adds_speedup_columns():
    args = benchmark.parse_args(["--compile"])

    assert benchmark.columns(args)[-1] == "reference"
    assert set(benchmark.COMPILE_COLUMNS) <= set(benchmark.columns(args))


def test_generation_mode_times_both_models_at_every_context(tmp_path):
    args = ["--generation", "--presets", "tiny", "--contexts", "8", "24", "--new_tokens", "3", "--rounds", "1",
            "--threads", "1", "--output", str(tmp_path / "gen")]  # fmt: skip
    results = benchmark.main(args)

    [row] = results["rows"]
    assert "error" not in row, row.get("error")
    for column in results["columns"][1:-1]:
        value = row[column]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, f"{column}={value!r}"
    # The Llama reference is matched in parameters (one 64-wide feed-forward step is 3 x 32 x 64 x 2 layers).
    assert abs(row["params"] - row["ref_params"]) <= 3 * 32 * 64 * 2 // 2
    assert row["growth"] == pytest.approx(row["ms_per_token_24"] / row["ms_per_token_8"])
    assert row["latency_ratio_8"] == pytest.approx(row["ms_per_token_8"] / row["ref_ms_per_token_8"])
    assert row["prefill_ratio_24"] == pytest.approx(row["prefill_ms_24"] / row["ref_prefill_ms_24"])
    table = [line for line in results["markdown"].splitlines() if line.startswith("|")]
    assert len(table) == 4 and table[2].startswith("| tiny | ours |") and "Llama" in table[3]
    assert (tmp_path / "gen.md").is_file()


def test_generation_mode_defaults_to_the_recurrent_and_sliding_presets():
    args = benchmark.parse_args(["--generation"])
    assert args.presets == ["lstm-baseline", "hybrid-sliding"]
    assert "tiny" not in benchmark.parse_args([]).presets


def test_profile_reports_the_mingru_scan_share_and_none_for_an_lstm(tmp_path):
    mingru = load_preset("tiny", recurrent_cell="mingru")
    mingru.save_pretrained(tmp_path / "tiny-mingru")
    presets = ["--presets", "tiny", str(tmp_path / "tiny-mingru" / "config.json")]
    results = benchmark.main([*TINY_RUN, *presets, "--profile", "--output", str(tmp_path / "bench")])

    lstm_row, mingru_row = results["rows"]
    assert "scan_percent" in results["columns"] and results["columns"][-1] == "reference"
    assert lstm_row["scan_percent"] is None  # the tiny preset's cell is an LSTM: no scan
    assert 0 < mingru_row["scan_percent"] < 100
    # The recurrent sub-layers' share, forward and backward: the scan is part of it.
    assert "recurrence_percent" in results["columns"]
    assert 0 < lstm_row["recurrence_percent"] < 100
    assert mingru_row["scan_percent"] <= mingru_row["recurrence_percent"] < 100
    assert "aten::" in mingru_row["profile"]
    profile_text = (tmp_path / "bench-profile.txt").read_text()
    assert "## tiny" in profile_text and "tiny-mingru" in profile_text
    table = [line for line in results["markdown"].splitlines() if line.startswith("|")]
    assert "scan %" in table[0] and "recurrence %" in table[0]
    assert table[2].count("|") == len(results["columns"]) + 1


def test_profile_reports_no_recurrence_share_for_a_model_without_one(tmp_path):
    results = benchmark.main([*TINY_RUN, "--presets", "configs/compare/presets/tiny-transformer.json", "--profile"])
    [row] = results["rows"]
    assert row["scan_percent"] is None and row["recurrence_percent"] is None


def test_sweep_gives_a_row_per_preset_length_and_thread_count(tmp_path):
    """--seq_lens 16 32 at 64 tokens per step (batches of 4 and 2) and --threads 1 2: four rows of one table,
    each of finite positive numbers, the models built once (the same parameters in every row)."""
    sweep = ["--seq_lens", 16, 32, "--tokens_per_batch", 64, "--threads", 1, 2]
    argv = ["--presets", "tiny", "--rounds", 1, "--steps", 1, "--warmup", 1, *sweep, "--profile"]
    results = benchmark.main([*map(str, argv), "--output", str(tmp_path / "sweep")])

    expected_columns = ["preset", "seq_len", "batch_size", "threads", *benchmark.COLUMNS[1:-1], "scan_percent",
                        "recurrence_percent", "reference"]  # fmt: skip
    assert results["columns"] == expected_columns
    rows = results["rows"]
    assert [(row["seq_len"], row["batch_size"], row["threads"]) for row in rows] == [
        (16, 4, 1), (16, 4, 2), (32, 2, 1), (32, 2, 2)
    ]  # fmt: skip
    for row in rows:
        assert "error" not in row, row.get("error")
        for column in expected_columns[1:-3]:
            value = row[column]
            assert isinstance(value, int | float) and math.isfinite(value) and value > 0, f"{column}={value!r}"
        assert row["scan_percent"] is None and 0 < row["recurrence_percent"] < 100
        assert (row["params"], row["ref_params"]) == (rows[0]["params"], rows[0]["ref_params"])
        assert row["train_ratio"] == pytest.approx(row["train_tokens_per_s"] / row["ref_train_tokens_per_s"])

    table = [line for line in results["markdown"].splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert table[0].startswith("| preset | seq len | batch size | threads | params |")
    assert all(line.count("|") == len(expected_columns) + 1 for line in table)
    assert [line.split("|")[1:5] for line in table[2:]] == [
        [" tiny ", f" {length} ", f" {64 // length} ", f" {threads} "] for length in (16, 32) for threads in (1, 2)
    ]
    assert "64 tokens per step at every length" in results["markdown"]
    assert json.loads((tmp_path / "sweep.json").read_text())["rows"][3]["seq_len"] == 32
    profile_text = (tmp_path / "sweep-profile.txt").read_text()
    assert "## tiny, 16 tokens, 1 thread(s)" in profile_text and "## tiny, 32 tokens, 2 thread(s)" in profile_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seq_lens", "16", "32", "--tokens_per_batch", "16"], "--tokens_per_batch=16 must be at least the longest"),
        (["--threads", "1", "1"], "--threads=[1, 1] must be distinct positive integers"),
        (["--seq_lens", "0"], "--seq_lens=[0] must be distinct positive integers"),
        (["--generation", "--seq_lens", "16"], "--generation uses --contexts"),
        (
            ["--checkpoint_every_n_layers", "2"],
            "--checkpoint_every_n_layers says which layers --activation_checkpointing",
        ),
    ],
    ids=["tokens-below-length", "repeated-threads", "zero-length", "generation", "checkpoint-layers-alone"],
)
def test_bad_sweep_settings_are_one_error_line(capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        benchmark.main(["--presets", "tiny", *argv])
    assert stopped.value.code == 2
    assert message in error_line(capsys)
