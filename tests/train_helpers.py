"""Helpers for the training-script tests: import the scripts, run them in-process, compare saved weights.

The scripts run from the repository root (the YAML files' data paths are relative to it); in-process runs reset
Accelerate's process-wide state afterwards so the next run builds a fresh `Accelerator`.
"""

import contextlib
import functools
import importlib.util
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
R8_TRAIN = DATA_DIR / "r8" / "train.csv"
R8_TEST = DATA_DIR / "r8" / "test.csv"
SMOKE = str(REPO_ROOT / "configs" / "train" / "smoke.yaml")
# Share of the most frequent R8 test class (earn): the accuracy of always predicting it.
R8_MAJORITY_ACCURACY = 1083 / 2189


@functools.cache
def load_script(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def run_script(name: str, argv: list[str]):
    """`main(argv)` of scripts/<name>.py, run from the repository root on one thread; returns what it returns."""
    with in_repo_root(), one_thread():
        try:
            return load_script(name).main([str(arg) for arg in argv])
        finally:
            reset_accelerate()


def launch_env() -> dict[str, str]:
    """Environment for a script run in a subprocess: no Hub access, one thread per process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def python() -> str:
    return sys.executable


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
