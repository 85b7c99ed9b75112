"""`recurrent-transformer train` end to end on an R8 slice (and, marked real_data, on all of R8), then the saved folder
reloaded and scored again by `recurrent-transformer evaluate`."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import (
    DATA_DIR,
    R8_MAJORITY_ACCURACY,
    R8_TEST,
    R8_TEST_ROWS,
    SMOKE,
    assert_same_weights,
    error_line,
    run_command,
)
from transformers import AutoModelForSequenceClassification, AutoTokenizer, modeling_utils

from recurrent_transformer import RecurrentTransformerForSequenceClassification
from recurrent_transformer.cli import UsageError, parse_arguments
from recurrent_transformer.presets import load_preset
from recurrent_transformer.training import accelerator
from recurrent_transformer.training.arguments import ARGUMENT_CLASSES
from recurrent_transformer.training.build import BudgetSpent, build_scheduler, parse_overrides

R8_LABELS = ["acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"]
HEADLINE = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "f1_weighted")


R8_RUN = [
    *("--max_train_samples", 100_000, "--max_eval_samples", 100_000, "--max_test_samples", 100_000),
    *("--max_length", 64, "--tokenizer_vocab_size", 2000, "--per_device_train_batch_size", 32),
    *("--learning_rate", 3e-3, "--logging_steps", 50, "--per_device_eval_batch_size", 128),
    *("--report_to", "tensorboard", "--disable_tqdm"),
]


@pytest.fixture(scope="module")
def r8_run(tmp_path_factory):
    """The tiny preset on the R8 fixture's training rows (less the validation tenth) for 300 steps: about 40 s."""
    output_dir = tmp_path_factory.mktemp("r8") / "run"
    results = run_command(
        "train", [SMOKE, "--output_dir", output_dir, *R8_RUN, "--max_steps", 300, "--eval_steps", 100]
    )
    return output_dir, results


def test_r8_run_beats_the_majority_class(r8_run):
    _, results = r8_run
    test = results["test"]
    assert test["num_samples"] == R8_TEST_ROWS
    assert test["accuracy"] > R8_MAJORITY_ACCURACY + 0.2, test["accuracy"]
    assert test["f1_macro"] > 0.2  # more than one class is predicted
    assert results["best_validation"]["step"] in (100, 200, 300)


@pytest.mark.slow
@pytest.mark.real_data
def test_full_r8_run_beats_the_majority_class_by_far(tmp_path):
    """All of R8 (../shared/data/r8: 4,936 training and 2,189 test texts), 300 steps: about a minute."""
    results = run_command(
        "train",
        [
            SMOKE, "--output_dir", tmp_path / "run", *R8_RUN, "--max_steps", 300, "--eval_steps", 100,
            "--train_file", DATA_DIR / "r8" / "train.csv", "--test_file", DATA_DIR / "r8" / "test.csv",
        ],
    )  # fmt: skip
    test = results["test"]
    assert test["num_samples"] == 2189
    assert test["accuracy"] > 1083 / 2189 + 0.3, test["accuracy"]  # earn is 1,083 of the 2,189 test texts


def test_r8_run_writes_its_outputs(r8_run):
    output_dir, results = r8_run
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "train_args.json"):
        assert (output_dir / name).is_file(), name
    assert (output_dir / "modeling_recurrent_transformer.py").is_file()  # loadable with trust_remote_code
    assert (output_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert list((output_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    test = metrics["test"]
    assert all(0 <= test[name] <= 1 for name in HEADLINE)
    assert sorted(test["per_class"]) == R8_LABELS
    assert sum(row["support"] for row in test["per_class"].values()) == R8_TEST_ROWS
    assert sum(map(sum, test["confusion_matrix"])) == R8_TEST_ROWS
    run_info = json.loads((output_dir / "run_info.json").read_text())
    assert run_info["global_step"] == 300 and run_info["num_processes"] == 1
    loss_history = json.loads((output_dir / "loss_history.json").read_text())
    assert [entry["step"] for entry in loss_history] == [50, 100, 150, 200, 250, 300]
    assert all(math.isfinite(entry["loss"]) and entry["learning_rate"] >= 0 for entry in loss_history)
    assert loss_history[-1]["loss"] < loss_history[0]["loss"]  # it learns
    assert loss_history[-1]["train_seconds"] <= run_info["train_seconds"]
    train_args = json.loads((output_dir / "train_args.json").read_text())
    assert train_args["training"]["max_steps"] == 300 and train_args["model"]["model_config"] == "tiny"


def test_r8_folder_reloads_and_reproduces_its_test_metrics(r8_run, tmp_path):
    output_dir, results = r8_run
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert isinstance(model, RecurrentTransformerForSequenceClassification)
    assert [model.config.id2label[i] for i in range(8)] == R8_LABELS
    assert model.config.pad_token_id == tokenizer.pad_token_id == 0
    assert model.config.vocab_size == len(tokenizer) == 2000
    assert tokenizer.model_max_length == 64
    batch = tokenizer(["wheat exports rose sharply", "net profit up"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 8)

    scores = run_command(
        "evaluate",
        [
            *("--model_dir", output_dir, "--data_file", R8_TEST, "--batch_size", 128),
            *("--output_file", tmp_path / "eval.json", "--confusion_matrix", tmp_path / "eval.png"),
            *("--metrics_backend", "sklearn"),
        ],
    )
    written = json.loads((tmp_path / "eval.json").read_text())
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
    for name in HEADLINE:
        assert written[name] == scores[name] == results["test"][name], name
    assert written["confusion_matrix"] == results["test"]["confusion_matrix"]
    assert written["per_class"] == results["test"]["per_class"]


def test_yaml_supplies_defaults_and_flags_override_them():
    model_args, data_args, train_args = parse_arguments(ARGUMENT_CLASSES, [SMOKE, "--max_steps", "7", "--no_lowercase"])
    assert model_args.model_config == "tiny" and data_args.max_train_samples == 128  # from the YAML file
    assert train_args.max_steps == 7 and model_args.lowercase is False  # from the flags
    assert train_args.learning_rate == pytest.approx(1e-3)
    model_args, _, train_args = parse_arguments(ARGUMENT_CLASSES, ["--output_dir", "x"])  # no YAML: the defaults
    assert model_args.model_config == "hybrid-small" and train_args.max_steps == -1


def test_yaml_with_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model_config: tiny\nlearning_rat: 0.1\n")
    with pytest.raises(UsageError, match=r"unknown keys \['learning_rat'\]"):
        parse_arguments(ARGUMENT_CLASSES, [str(path)])


def test_config_overrides_reach_the_model():
    assert parse_overrides("hidden_dropout_prob=0, recurrent_cell=gru,num_hidden_layers=3") == {
        "hidden_dropout_prob": 0.0,
        "recurrent_cell": "gru",
        "num_hidden_layers": 3,
    }
    assert isinstance(parse_overrides("hidden_dropout_prob=0")["hidden_dropout_prob"], float)
    with pytest.raises(UsageError, match="not key=value"):
        parse_overrides("dropout")


def test_final_weights_are_the_best_validated_ones(r8_run):
    output_dir, results = r8_run
    assert_same_weights(output_dir, output_dir / "checkpoints" / "best", atol=0)
    steps = {entry["step"]: entry["f1_macro"] for entry in load_state(output_dir)["log_history"]}
    assert results["best_validation"]["f1_macro"] == max(steps.values())
    assert steps[results["best_validation"]["step"]] == max(steps.values())


def load_state(output_dir):
    (last,) = sorted((output_dir / "checkpoints").glob("step-*"))[-1:]
    return json.loads((last / "trainer_state.json").read_text())


def test_early_stopping_ends_the_run_after_patience_validations(tmp_path):
    # Learning rate 0: the validation score never improves on the first one, so patience 2 stops at step 6.
    results = run_command(
        "train",
        [
            SMOKE,
            *("--output_dir", tmp_path / "run", "--learning_rate", 0.0, "--warmup_steps", 0),
            *("--max_steps", 20, "--eval_steps", 2, "--early_stopping_patience", 2, "--disable_tqdm"),
        ],
    )
    assert results["global_step"] == 6
    assert results["best_validation"]["step"] == 2


def test_schedule_over_seconds_decays_with_the_budget_spent_and_warms_up_in_steps():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    spent = BudgetSpent(100.0)
    schedules = {kind: build_scheduler(optimizer, kind, 2, 10, 1, spent=spent) for kind in ("linear", "cosine")}
    seen = {kind: [] for kind in schedules}
    for seconds in (10.0, 10.0, 25.0, 50.0, 100.0, 250.0):  # steps 1-6; past the budget the share stays 1
        spent.seconds = seconds
        optimizer.step()
        for kind, schedule in schedules.items():
            schedule.step()
            seen[kind].append(schedule.get_last_lr()[0])
    assert seen["linear"] == pytest.approx([0.5 * 0.9, 0.9, 0.75, 0.5, 0.0, 0.0])
    cosine = [0.5 * (1 + math.cos(math.pi * share)) for share in (0.1, 0.1, 0.25, 0.5, 1.0, 1.0)]
    assert seen["cosine"] == pytest.approx([0.5 * cosine[0], *cosine[1:]])


def test_learning_rate_decays_over_the_time_budget_across_a_resume(tmp_path):
    """--lr_schedule_by seconds: after warm-up, the rate of each step is the peak times 1 - the share of the budget
    spent when the step before it ended (between its logged seconds and this step's). The resumed part continues
    from the checkpoint's clock: a resume that restarted the clock would give the peak again."""
    budget, peak = 6.0, 1e-3
    argv = [
        SMOKE, "--output_dir", tmp_path / "run", "--max_steps", 100_000, "--max_train_seconds", budget,
        *("--lr_schedule_by", "seconds", "--lr_scheduler_type", "linear", "--warmup_steps", 2),
        *("--learning_rate", peak, "--eval_steps", 100_000, "--disable_tqdm"),
    ]  # fmt: skip
    run_command("train", [*argv, "--stop_after_step", 10])
    run_command("train", [*argv, "--resume"])
    assert json.loads((tmp_path / "run" / "run_info.json").read_text())["stopped_by"] == "max_train_seconds"
    history = json.loads((tmp_path / "run" / "loss_history.json").read_text())
    steps = [entry["step"] for entry in history]
    assert steps == list(range(1, len(history) + 1)) and len(history) > 12
    for before, entry in zip(history[1:], history[2:], strict=False):  # from step 3, after the warm-up
        upper = peak * (1 - before["train_seconds"] / budget)
        lower = peak * max(0.0, 1 - entry["train_seconds"] / budget)
        assert lower - 1e-8 <= entry["learning_rate"] <= upper + 1e-8, (entry, before)
    assert history[-1]["learning_rate"] < 0.25 * peak  # the run ends where the budget does


@pytest.mark.parametrize("every_n_layers", [1, 2])
def test_activation_checkpointing_trains_to_the_same_weights(tmp_path, monkeypatch, every_n_layers):
    """--activation_checkpointing recomputes each layer's forward in the backward pass, dropout masks included (torch
    restores the RNG state): the same steps give the same weights, with every layer (or, with
    --checkpoint_every_n_layers 2, the first of each two) checkpointed at every step."""
    argv = [SMOKE, "--disable_tqdm", "--load_best_model_at_end", "false", "--max_steps", 3]
    run_command("train", [*argv, "--output_dir", tmp_path / "plain"])
    calls = []

    def counted(function, *args, **kwargs):
        calls.append(function)
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counted)  # what activation_checkpointing_enable wraps
    # The first run's tokenizer: training one is not reproducible (huggingface/tokenizers#1794).
    checkpointed = ["--output_dir", tmp_path / "checkpointed", "--tokenizer_name", tmp_path / "plain"]
    run_command(
        "train", [*argv, *checkpointed, "--activation_checkpointing", "--checkpoint_every_n_layers", every_n_layers]
    )
    checkpointed_layers = math.ceil(load_preset("tiny").num_hidden_layers / every_n_layers)
    assert len(calls) == 3 * checkpointed_layers  # 3 steps; validation runs without
    assert_same_weights(tmp_path / "checkpointed", tmp_path / "plain", atol=1e-6)
    with pytest.raises(AssertionError):  # the weights moved: not two untouched initialisations
        assert_same_weights(tmp_path / "plain", tmp_path / "plain" / "checkpoints" / "step-0000002", atol=1e-6)


def test_bf16_mixed_precision_runs_on_request(tmp_path):
    """On this project's CPU (AVX2 only) bf16 runs only with --allow_slow_bf16; the weights stay fp32 (autocast)."""
    output_dir = tmp_path / "run"
    argv = [SMOKE, "--output_dir", output_dir, "--bf16", "--allow_slow_bf16", "--max_steps", 2, "--disable_tqdm"]
    results = run_command("train", argv)
    assert json.loads((output_dir / "run_info.json").read_text())["mixed_precision"] == "bf16"
    assert 0 <= results["test"]["accuracy"] <= 1
    weights = load_file(output_dir / "model.safetensors")
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())  # autocast, fp32 master weights


def test_bf16_on_a_cpu_without_native_bfloat16_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(accelerator, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        run_command("train", [SMOKE, "--output_dir", tmp_path / "out", "--bf16", "--use_cpu"])
    assert stopped.value.code == 2
    assert "no native bfloat16" in error_line(capsys) and not (tmp_path / "out").exists()
    # The same from an accelerate config's mixed_precision (`accelerate launch` passes it in the environment).
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(SystemExit):
        run_command("train", [SMOKE, "--output_dir", tmp_path / "out", "--use_cpu"])
    assert "the accelerate config's mixed_precision: bf16" in error_line(capsys)


@pytest.mark.parametrize(
    ("variable", "name"), [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")]
)
def test_a_gpu_only_launch_without_gpus_is_refused(tmp_path, capsys, monkeypatch, variable, name):
    """configs/accelerate/fsdp.yaml and deepspeed_zero2.yaml launched on a machine (or with --use_cpu) without
    GPUs: a message instead of silently training as plain data parallel on CPU."""
    monkeypatch.setenv(variable, "true")
    with pytest.raises(SystemExit) as stopped:
        run_command("train", [SMOKE, "--output_dir", tmp_path / "out", "--use_cpu"])
    assert stopped.value.code == 2
    line = error_line(capsys)
    assert f"asks for {name}, which needs GPUs" in line and "multi_cpu.yaml" in line
    assert not (tmp_path / "out").exists()


def long_texts_csv(path, rows: int, words: int, seed: int):
    """`rows` texts of `words` words each (two labels in turn), drawn from 200 made-up words: about a token a word."""
    generator = torch.Generator().manual_seed(seed)
    vocabulary = [f"w{index}" for index in range(200)]
    lines = ["text,label"]
    for row in range(rows):
        picks = torch.randint(0, len(vocabulary), (words,), generator=generator).tolist()
        lines.append(f"{' '.join(vocabulary[pick] for pick in picks)},{'ab'[row % 2]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_preset_without_positions_trains_at_max_length_4096(tmp_path):
    """The tiny preset has no position embeddings (the recurrence encodes order), so max_length is not capped by
    a position table: a step on two texts cut at 4,096 tokens, then validation and test on such texts."""
    train = long_texts_csv(tmp_path / "train.csv", rows=2, words=5000, seed=0)
    held_out = long_texts_csv(tmp_path / "held_out.csv", rows=2, words=5000, seed=1)
    output_dir = tmp_path / "run"
    results = run_command(
        "train",
        [
            SMOKE, "--output_dir", output_dir, "--max_length", 4096,
            *("--train_file", train, "--validation_file", held_out, "--test_file", held_out),
            *("--max_steps", 1, "--per_device_train_batch_size", 2, "--per_device_eval_batch_size", 2),
            *("--tokenizer_min_frequency", 1, "--disable_tqdm"),
        ],
    )  # fmt: skip
    run_info = json.loads((output_dir / "run_info.json").read_text())
    assert run_info["max_length"] == 4096 and run_info["global_step"] == 1
    assert run_info["train_tokens"] == 2 * 4096  # both texts are longer: cut at 4,096, no padding
    assert run_info["train_padding_share"] == 0
    assert results["test"]["num_samples"] == 2
    assert all(math.isfinite(value) for value in (results["test"]["accuracy"], results["best_validation"]["f1_macro"]))
