"""The command line: every command's --help, one `error:` line for a bad command or flag, the console script and
the checkout's scripts; and the package's structure rules (no code loaded by file path, short functions, thin
scripts)."""

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import REPO_ROOT, SMOKE, console_script, error_line, in_repo_root, launch_env, run_command

from recurrent_transformer import cli
from recurrent_transformer.cli import parse_arguments

SOURCES = sorted((REPO_ROOT / "src").rglob("*.py")) + sorted((REPO_ROOT / "scripts").glob("*.py"))
LONGEST_FUNCTION = 80  # lines, decorators and docstring included
LOADERS = {"spec_from_file_location", "SourceFileLoader", "run_path", "exec", "execfile", "__import__"}


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_prints_its_help(name, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.run(name, ["--help"])
    assert stopped.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage:") and "--help" in printed


def test_the_console_command_lists_the_commands_and_runs_one():
    command = console_script("recurrent-transformer")
    listed = subprocess.run([command], capture_output=True, text=True, env=launch_env(), timeout=300, check=True)
    assert all(name in listed.stdout for name in cli.COMMANDS)
    helped = subprocess.run([command, "train", "--help"], capture_output=True, text=True, env=launch_env(), timeout=300)
    assert helped.returncode == 0 and "--max_steps" in helped.stdout


def test_an_unknown_command_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["trian"])
    assert stopped.value.code == 2
    assert "unknown command 'trian' (did you mean 'train'?)" in error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--learnng_rate", "1e-3"], "unknown argument '--learnng_rate' (did you mean '--learning_rate'?)"),
        (["--max_steps", "many"], "argument --max_steps/--max-steps: invalid int value: 'many'"),
        (["surplus"], "unknown argument 'surplus'"),
    ],
)
def test_a_bad_flag_is_one_error_line_and_writes_nothing(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        run_command("train", [SMOKE, "--output_dir", tmp_path / "out", *argv])
    assert stopped.value.code == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_an_unknown_yaml_key_names_the_closest_one(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(Path(SMOKE).read_text() + "learnig_rate: 0.1\n")
    with pytest.raises(SystemExit):
        run_command("train", [config, "--output_dir", tmp_path / "out"])
    assert "unknown keys ['learnig_rate'] (did you mean 'learning_rate'?)" in error_line(capsys)


@pytest.mark.parametrize("script", sorted(path.name for path in (REPO_ROOT / "scripts").glob("*.py")))
def test_each_script_runs_its_command_from_a_checkout(script):
    """`python scripts/x.py` puts scripts/ first on sys.path: its help must come from the package's command, and no
    script may take the name of a module the commands import (scripts/evaluate.py once hid the evaluate library)."""
    stem = Path(script).stem
    assert stem not in sys.stdlib_module_names and stem not in importlib.metadata.packages_distributions(), stem
    result = subprocess.run(
        [sys.executable, f"scripts/{script}", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=launch_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")


def functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_no_file_loads_another_by_path():
    """Every dependency is an import a reader (or a tool) can follow."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "attr", None) or getattr(node, "id", None)
            if name in LOADERS:
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {name}")
    assert not found, found


def test_no_function_is_longer_than_a_screen():
    lengths = {
        f"{path.relative_to(REPO_ROOT)}:{node.name}": node.end_lineno - (node.decorator_list or [node])[0].lineno + 1
        for path in SOURCES
        for node in functions(ast.parse(path.read_text()))
    }
    longest = max(lengths, key=lengths.get)
    assert lengths[longest] <= LONGEST_FUNCTION, (longest, lengths[longest])


def test_scripts_are_thin_leaves():
    """A script only hands its arguments to the package's command line."""
    for path in (REPO_ROOT / "scripts").glob("*.py"):
        tree = ast.parse(path.read_text())
        imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imports |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imports <= {"sys", "recurrent_transformer.cli"}, (path.name, imports)
        assert not functions(tree) and len(path.read_text().splitlines()) <= 15, path.name


def config_files(kind: str) -> list[Path]:
    return sorted((REPO_ROOT / "configs" / kind).glob("*.yaml"))


@pytest.mark.parametrize("path", config_files("train") + config_files("compare"), ids=lambda path: path.stem)
def test_every_shipped_run_config_passes_its_commands_checks(path, tmp_path):
    """Each YAML file in configs/train and configs/compare parses with its command's arguments and passes the
    checks that need no data (presets, ranges, max_length against positions), so none of them fails at its start."""
    from recurrent_transformer.experiments import plan
    from recurrent_transformer.training import classifier, language_model

    argv = [str(path), "--output_dir", str(tmp_path / "out")]
    with in_repo_root():
        if path.parent.name == "compare":
            plan.check_settings(*parse_arguments(plan.ARGUMENT_CLASSES, argv))
        elif path.stem == "shakespeare_char":
            language_model.check_settings(*parse_arguments((language_model.LMArguments,), argv))
        else:
            classifier.check_settings(*parse_arguments(classifier.ARGUMENT_CLASSES, argv))
