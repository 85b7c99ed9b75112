"""A non-editable install: the wheel built from this checkout, installed into a fresh virtual environment, used from a
folder outside the repository. The presets and the model card's template are package data, so they are found there;
the console command trains and publishes (dry run) like the checkout does."""

import json
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from train_helpers import R8_TEST, R8_TRAIN, REPO_ROOT, launch_env

TIMEOUT_S = 600


def run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    env = launch_env()
    env.pop("PYTHONPATH", None)  # the environment under test must see the wheel, not a checkout's sources
    completed = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert completed.returncode == 0, (command, completed.stdout[-2000:], completed.stderr[-3000:])
    return completed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (so the build leaves nothing in the checkout), without build
    isolation: setuptools comes from the dev extra, nothing is downloaded."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "model_card.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "src", source / "src", symlinks=True, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, source], cwd=source)
    (built,) = dist.glob("recurrent_transformer-*.whl")
    return built


@pytest.fixture(scope="module")
def environment(wheel, tmp_path_factory) -> Path:
    """A new virtual environment holding the wheel; its other dependencies (torch, transformers, ...) are this
    interpreter's installed packages, made visible by a .pth file (the checkout's editable install is not: a .pth file
    is only read in a site-packages folder, and the paths it lists are not searched for further .pth files)."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    run([sys.executable, "-m", "venv", "--without-pip", folder], cwd=folder.parent)
    python = folder / "bin" / "python"
    purelib = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=folder).stdout.strip()
    )
    dependencies = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (purelib / "outer-dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=folder)
    return folder


def test_the_wheel_ships_the_presets_and_the_card_template(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    presets = {
        Path(name).stem
        for name in names
        if name.startswith("recurrent_transformer/presets/") and name.endswith(".json")
    }
    shipped = {path.stem for path in (REPO_ROOT / "src" / "recurrent_transformer" / "presets").glob("*.json")}
    assert presets == shipped and "hybrid-small" in presets
    card = zipfile.ZipFile(wheel).read("recurrent_transformer/model_card.md").decode()
    assert card == (REPO_ROOT / "model_card.md").read_text()  # the file, not a link to it


def test_an_installed_package_loads_presets_from_any_folder(environment, tmp_path):
    code = (
        "import recurrent_transformer, json\n"
        "from recurrent_transformer.presets import available_presets, load_preset\n"
        "config = load_preset('hybrid-small', num_labels=3)\n"
        "print(json.dumps({'file': recurrent_transformer.__file__, 'presets': available_presets(),"
        " 'layers': config.layer_types, 'labels': config.num_labels}))\n"
    )
    printed = json.loads(
        run([environment / "bin" / "python", "-c", code], cwd=tmp_path).stdout.strip().splitlines()[-1]
    )
    assert Path(printed["file"]).is_relative_to(environment), printed["file"]  # the wheel, not the checkout
    assert "hybrid-small" in printed["presets"] and printed["layers"] == ["hybrid"] * 4 and printed["labels"] == 3


def test_the_console_command_trains_and_publishes_outside_the_repository(environment, tmp_path):
    command = environment / "bin" / "recurrent-transformer"
    output = tmp_path / "run"
    run(
        [
            command, "train", "--model_config", "tiny", "--train_file", R8_TRAIN, "--test_file", R8_TEST,
            "--output_dir", output, "--max_steps", 2, "--max_train_samples", 64, "--max_test_samples", 32,
            "--tokenizer_vocab_size", 500, "--max_length", 32, "--use_cpu", "--report_to", "none",
            "--metrics_backend", "sklearn", "--disable_tqdm",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["test"]["num_samples"] == 32
    staged = tmp_path / "stage"
    printed = run(
        [
            command,
            "push-to-hub",
            "--model_dir",
            output,
            "--repo_id",
            "someone/tiny",
            "--dry_run",
            "--staging_dir",
            staged,
        ],
        cwd=tmp_path,
    ).stdout
    assert "would upload" in printed and (staged / "README.md").read_text().startswith("---")
