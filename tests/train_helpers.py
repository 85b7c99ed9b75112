"""Helpers for the command tests: run a command in-process from the repository root, compare saved weights.

The commands run from the repository root (the YAML files' data paths are relative to it); in-process runs reset
Accelerate's process-wide state afterwards so the next run builds a fresh `Accelerator`.
"""

import contextlib
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from recurrent_transformer import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
# Small slices of the real data sets (tests/fixtures/README.md): the suite needs nothing outside the repository.
R8_TRAIN = FIXTURES / "r8" / "train.csv"
R8_TEST = FIXTURES / "r8" / "test.csv"
THUCNEWS_TRAIN = FIXTURES / "thucnews" / "train.csv"
THUCNEWS_TEST = FIXTURES / "thucnews" / "test.csv"
SHAKESPEARE = FIXTURES / "tinyshakespeare.txt"
# The full data sets, for the runs marked real_data.
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
SMOKE = str(REPO_ROOT / "configs" / "train" / "smoke.yaml")
R8_TEST_ROWS = 160
# Share of the most frequent R8 fixture test class (earn): the accuracy of always predicting it.
R8_MAJORITY_ACCURACY = 60 / 160


@contextlib.contextmanager
def in_repo_root():
    previous = Path.cwd()
    os.chdir(REPO_ROOT)
    try:
        yield
    finally:
        os.chdir(previous)


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@contextlib.contextmanager
def one_thread():
    """One torch thread, as each process of a 2-process launch on 2 cores has. On a busy 2-core machine two
    OpenMP threads spin-wait on each other: tiny-model steps were measured 70x slower with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_command(name: str, argv: list):
    """`recurrent-transformer <name> <argv>` in-process, from the repository root on one thread; returns the
    command's results."""
    with in_repo_root(), one_thread():
        try:
            return cli.run(name, [str(arg) for arg in argv])
        finally:
            reset_accelerate()


def launch_env() -> dict[str, str]:
    """Environment for a command run in a subprocess: no Hub access, one thread per process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def python() -> str:
    return sys.executable


def console_script(name: str) -> str:
    """The command `name` of this interpreter's environment (a venv's python run by path, without the venv on PATH,
    would otherwise find another environment's command or none)."""
    script = Path(python()).with_name(name)
    return str(script) if script.is_file() else name


def assert_same_weights(folder_a: Path, folder_b: Path, atol: float) -> None:
    weights_a = load_file(Path(folder_a) / "model.safetensors")
    weights_b = load_file(Path(folder_b) / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(
            weights_a[name], weights_b[name], atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}"
        )


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in Path(folder).rglob("*") if path.is_file()}


def error_line(capsys) -> str:
    """The one `error:` line a refused command printed."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]
