"""The output folder of a training run, and what `--resume` reads back from it.

<output_dir>/
    model.safetensors, config.json, code files, tokenizer   the final (best validated) model
    train_args.json          the resolved arguments (a resume compares its own against them)
    metrics.json, confusion_matrix.png, run_info.json       written at the end
    eval_history.json, loss_history.json                    rewritten as the run goes
    checkpoints/step-NNNNNNN/   Accelerate's state + trainer_state.json + clock.json
    checkpoints/best/           the best validated weights so far
    logs/                       TensorBoard
"""

import contextlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..cli import UsageError
from ..files import read_json, write_json

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
STATE_FILE = "trainer_state.json"
CLOCK_FILE = "clock.json"  # training seconds and tokens so far; not in STATE_FILE, which a resume reproduces exactly
HISTORY_FILE = "eval_history.json"
LOSS_HISTORY_FILE = "loss_history.json"
ARGS_FILE = "train_args.json"
# Everything a training run writes into its output folder; --overwrite_output_dir removes these first.
OUTPUT_NAMES = (
    CHECKPOINT_DIR,
    "logs",
    "metrics.json",
    "confusion_matrix.png",
    ARGS_FILE,
    "run_info.json",
    HISTORY_FILE,
    LOSS_HISTORY_FILE,
    "conversion.json",
)
# Settings a resume may change without changing what the run computes.
RESUME_FREE = {
    "output_dir",
    "overwrite_output_dir",
    "resume",
    "allow_changed_settings",
    "stop_after_step",
    "disable_tqdm",
    "dataloader_num_workers",
    "per_device_eval_batch_size",
    "report_to",
    # Checkpointing recomputes the same forward in the backward pass: the same gradients, so a run that ran out of
    # memory can resume with it (or drop it).
    "activation_checkpointing",
    "checkpoint_every_n_layers",
}


@dataclass
class TrainerState:
    """Where the loop stands; saved beside each checkpoint so `--resume` continues exactly."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed (per process)
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_gain: int = 0
    log_history: list = field(default_factory=list)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "TrainerState":
        return cls(**json.loads(path.read_text()))


def cpu_share(cpu_seconds: float | None, seconds: float, device_type: str) -> float | None:
    """CPU seconds of this process over training seconds x torch threads: about 1 when the run had its threads'
    cores to itself. None off the CPU (an accelerator does the work there) or where unknown."""
    if device_type != "cpu" or cpu_seconds is None or seconds <= 0:
        return None
    return cpu_seconds / (seconds * torch.get_num_threads())


class TrainClock:
    """Seconds spent in training steps, validation and checkpoints excluded, so that under a time budget a model that
    is slow to validate loses no training time; `paused()` brackets the excluded work. It also counts the CPU seconds
    this process used meanwhile (all its threads): on a shared CPU, CPU seconds over wall seconds x threads says how
    much of the machine a run got for its time budget. `cpu_seconds` is None once unknown (a checkpoint from before
    it was counted)."""

    def __init__(self, seconds: float = 0.0, cpu_seconds: float | None = 0.0):
        self.seconds, self.cpu_seconds = seconds, cpu_seconds
        self.started: float | None = None
        self.cpu_started = 0.0

    def start(self) -> None:
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        if self.started is not None:
            self.seconds, self.cpu_seconds = self.elapsed(), self.elapsed_cpu()
            self.started = None

    def elapsed(self) -> float:
        return self.seconds + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def elapsed_cpu(self) -> float | None:
        if self.cpu_seconds is None or self.started is None:
            return self.cpu_seconds
        return self.cpu_seconds + time.process_time() - self.cpu_started

    @contextlib.contextmanager
    def paused(self):
        running = self.started is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


class RandomState:
    """The Python, NumPy and torch RNG states, to step around RNG draws that a resumed run must not make."""

    def __init__(self):
        self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def restore(self) -> None:
        random.setstate(self.states[0])
        np.random.set_state(self.states[1])
        torch.set_rng_state(self.states[2])


def checkpoints_in(output_dir: Path) -> list[Path]:
    """Step checkpoints holding a state file, oldest first."""
    folders = (Path(output_dir) / CHECKPOINT_DIR).glob("step-*")
    return sorted((path for path in folders if (path / STATE_FILE).is_file()), key=lambda path: path.name)


def history_until(path: Path, step: int) -> list[dict]:
    """The entries of a history file (eval_history.json, loss_history.json) up to `step`: what a resume keeps."""
    if not path.is_file():
        return []
    return [entry for entry in json.loads(path.read_text()) if entry["step"] <= step]


def changed_settings(saved: dict, current: dict) -> list[str]:
    """'group.name: saved -> current' for each setting that differs from the saved run's (RESUME_FREE aside)."""
    changes = []
    for group, values in current.items():
        saved_group = saved.get(group, {})
        for name, value in values.items():
            # A setting the saved run did not record (an older version wrote the file) is not compared.
            if name in RESUME_FREE or name not in saved_group:
                continue
            old = saved_group[name]
            if old != value:
                changes.append(f"{group}.{name}: {old!r} -> {value!r}")
    return changes


def check_resume(output_dir: Path, resolved: dict, allow_changed: bool) -> tuple[Path, list[str]]:
    """The checkpoint `--resume` continues from, and the settings that changed since the run started. Changed
    settings are refused, listed, unless `allow_changed` (they then apply from the checkpoint on)."""
    found = checkpoints_in(output_dir)
    if not found:
        raise UsageError(f"--resume: no checkpoint in {Path(output_dir) / CHECKPOINT_DIR} to continue from")
    saved = read_json(Path(output_dir) / ARGS_FILE, "the arguments the run started with")
    changes = changed_settings(saved, json.loads(json.dumps(resolved, default=str)))
    if changes and not allow_changed:
        raise UsageError(
            f"--resume: the settings differ from the run in {str(output_dir)!r}: {'; '.join(changes)}. Resume with "
            "the saved settings, or pass --allow_changed_settings to apply the new ones from the last checkpoint on"
        )
    return found[-1], changes
