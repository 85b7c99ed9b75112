"""Data parallel on CPU: `accelerate launch` with 2 gloo processes ends with the weights of one process that
sees the same global batches.

Why they match: the shuffle order depends on (seed, epoch) only (Accelerate's seedable sampler); the sharded
loader deals the sampler's batches round-robin, so 2 processes x 2 rows x 2 accumulated micro-batches cover the
same 8 rows per step as 1 process x 8 rows; DDP averages the processes' gradients of per-batch mean losses and
Accelerate divides each micro-batch loss by the accumulation steps, which gives the mean over the 8 rows. Dropout
is 0 (each process draws its own masks). The warm-up and decay lengths count optimizer steps the same way in both.
"""

import json
import subprocess

import pytest
from train_helpers import (
    R8_TRAIN,
    REPO_ROOT,
    SMOKE,
    assert_same_weights,
    console_script,
    launch_env,
    python,
    run_command,
)

from recurrent_transformer.data import load_labelled_data, train_tokenizer, training_texts

LAUNCH_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """One tokenizer for both runs: tokenizer training is not reproducible (huggingface/tokenizers#1794)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    data = load_labelled_data(train_file=R8_TRAIN, max_train_samples=500)
    train_tokenizer(training_texts(data.splits["train"]), vocab_size=1000, model_max_length=64).save_pretrained(folder)
    return folder


def common_args(tokenizer_dir, output_dir):
    # 64 rows: 8 global batches of 8, so 6 steps stay inside one epoch and no process needs padding rows.
    return [
        SMOKE,
        *("--output_dir", output_dir, "--tokenizer_name", tokenizer_dir),
        *("--config_overrides", "hidden_dropout_prob=0,classifier_dropout=0,attention_dropout=0"),
        *("--max_train_samples", 64, "--max_eval_samples", 30, "--max_test_samples", 30),
        *("--max_steps", 6, "--eval_steps", 3, "--warmup_steps", 2, "--learning_rate", 1e-3),
        # Adam's step is m / (sqrt(v) + eps): for a weight whose gradient is near zero in both runs (a rare token's
        # embedding), eps 1e-8 turns the last-bit difference of the two summation orders into a step of up to a
        # few % of the learning rate (4.5e-5 once, on one of 32,000 embedding weights). eps 1e-6 keeps such a
        # weight's step small: over 10 fresh tokenizers the largest difference was then 9.9e-7 (over 8 at eps 1e-8:
        # up to 6.6e-6).
        *("--adam_epsilon", 1e-6),
        *("--disable_tqdm", "--load_best_model_at_end", "false"),
    ]


@pytest.fixture(scope="module")
def single_process(tokenizer_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("single") / "run"
    results = run_command("train", [*common_args(tokenizer_dir, output_dir), "--per_device_train_batch_size", 8])
    return output_dir, results


def launch(launcher_args: list[str], target: list[str], script_args: list) -> subprocess.CompletedProcess:
    # This environment's `accelerate` (another one's would start workers without the package), else its module.
    accelerate = console_script("accelerate")
    command = [accelerate, "launch"] if accelerate != "accelerate" else [python(), "-m", "accelerate.commands.launch"]
    command += [*launcher_args, *target, *map(str, script_args)]
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=launch_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    return completed


# The installed package's module form, and the checkout's script, under the two ways of asking for 2 processes.
LAUNCHERS = {
    "flags": (
        ["--multi_gpu", "--num_processes", "2", "--main_process_port", "0"],
        ["-m", "recurrent_transformer", "train"],
    ),
    "config-file": (["--config_file", "configs/accelerate/multi_cpu.yaml"], ["scripts/train.py"]),
}


@pytest.mark.parametrize(
    "launcher", ["flags", pytest.param("config-file", marks=pytest.mark.slow)], ids=["flags", "config-file"]
)
def test_two_cpu_processes_match_one(tokenizer_dir, single_process, tmp_path, launcher):
    single_dir, single_results = single_process
    output_dir = tmp_path / "run"
    per_process = ["--per_device_train_batch_size", 2, "--gradient_accumulation_steps", 2]
    launch(*LAUNCHERS[launcher], [*common_args(tokenizer_dir, output_dir), *per_process])

    run_info = json.loads((output_dir / "run_info.json").read_text())
    assert run_info["num_processes"] == 2 and run_info["global_batch_size"] == 8
    assert run_info["global_step"] == 6
    assert_same_weights(output_dir, single_dir, atol=1e-5)
    # The weights moved: the comparison is not between two untouched initialisations.
    with pytest.raises(AssertionError):
        assert_same_weights(output_dir, single_dir / "checkpoints" / "step-0000003", atol=1e-5)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == 30  # gather_for_metrics drops the rows padded for even shards
    assert metrics["test"]["confusion_matrix"] == single_results["test"]["confusion_matrix"]


def test_two_cpu_processes_match_one_with_length_grouped_batches(tokenizer_dir, single_process, tmp_path):
    """--group_by_length groups global batches (8 rows here, whatever their split), with an order drawn from
    (seed, epoch): 2 processes x 2 rows x 2 micro-batches train on the same rows at every step as 1 process x 8."""
    grouped = [*common_args(tokenizer_dir, tmp_path / "single"), "--group_by_length", "--max_length", 160]
    single_results = run_command("train", [*grouped, "--per_device_train_batch_size", 8])
    output_dir = tmp_path / "run"
    per_process = ["--per_device_train_batch_size", 2, "--gradient_accumulation_steps", 2]
    launch(*LAUNCHERS["flags"], [*common_args(tokenizer_dir, output_dir), *grouped[-3:], *per_process])

    run_info = json.loads((output_dir / "run_info.json").read_text())
    assert run_info["num_processes"] == 2 and run_info["group_by_length"] and run_info["global_step"] == 6
    assert_same_weights(output_dir, tmp_path / "single", atol=1e-5)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["test"]["confusion_matrix"] == single_results["test"]["confusion_matrix"]
    # The grouping changed the batches: other weights than the shuffled single-process run's.
    with pytest.raises(AssertionError):
        assert_same_weights(output_dir, single_process[0], atol=1e-5)


def test_two_cpu_processes_stop_on_the_time_budget_with_one_schedule(tokenizer_dir, tmp_path):
    """--max_train_seconds with --lr_schedule_by seconds in 2 processes: they agree on the seconds spent (the most
    any of them counted) after each step, so both stop at the same step, and the rate has decayed over the budget."""
    # The budget holds several steps even on a slow, shared machine: one CI run there took about a second a step,
    # and a 4 s budget then ended after too few steps for the checks below.
    output_dir, budget, peak_rate = tmp_path / "run", 8.0, 1e-3
    timed = ["--max_steps", 100_000, "--max_train_seconds", budget, "--lr_schedule_by", "seconds"]
    launch(*LAUNCHERS["flags"], [*common_args(tokenizer_dir, output_dir), *timed, "--eval_steps", 100_000])

    run_info = json.loads((output_dir / "run_info.json").read_text())
    assert run_info["num_processes"] == 2 and run_info["stopped_by"] == "max_train_seconds"
    assert budget <= run_info["train_seconds"] and run_info["global_step"] >= 3
    history = json.loads((output_dir / "loss_history.json").read_text())
    rates = [entry["learning_rate"] for entry in history]
    # Past the 2 warm-up steps the rate only falls, and the last step's rate (set by the seconds agreed after the
    # step before it) is under half the peak unless one step took more than half the budget.
    assert rates[1] == pytest.approx(peak_rate, rel=0.5)
    assert rates[1:] == sorted(rates[1:], reverse=True)
    assert rates[-1] < 0.5 * peak_rate
