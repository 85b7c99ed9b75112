"""The command line: `recurrent-transformer <command> [config.yaml] [--flag value ...]`.

Every command reads its arguments the same way: an optional YAML file of defaults first, then flags that override
it; keys and flags are the fields of the command's argument dataclasses (`HfArgumentParser`). Bad input of any kind
(a mistyped flag, a value out of range, a missing file) raises `UsageError`, which the command prints as one
`error: ...` line before exiting with status 2, having written nothing.

    recurrent-transformer train configs/train/r8.yaml --max_steps 300
    python -m recurrent_transformer compare configs/compare/trec.yaml
    accelerate launch -m recurrent_transformer train configs/train/r8.yaml
"""

import argparse
import difflib
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from transformers import HfArgumentParser

# command -> (module whose `main(argv)` runs it, one line of help). Modules load only when their command runs.
COMMANDS = {
    "train": ("recurrent_transformer.training.classifier", "train a text classifier (tokenizer, model, test scores)"),
    "evaluate": ("recurrent_transformer.evaluation", "score a saved classifier on a labelled file"),
    "pretrain-mlm": ("recurrent_transformer.training.mlm", "masked-LM pre-training on a task's own training text"),
    "convert": ("recurrent_transformer.conversion", "a BERT-family checkpoint into the hybrid (model folder)"),
    "train-lm": ("recurrent_transformer.training.language_model", "character-level language models on plain text"),
    "compare": ("recurrent_transformer.experiments.compare", "the hybrid against its baselines: seeds, table, plots"),
    "compare-summary": ("recurrent_transformer.experiments.summary", "several comparisons in one table and plot"),
    "loss-curves": ("recurrent_transformer.experiments.curves", "training-loss curves of runs side by side"),
    "benchmark": ("recurrent_transformer.benchmark", "speed and memory against BERT or Llama of equal shape"),
    "push-to-hub": ("recurrent_transformer.hub", "publish a saved model folder with a generated model card"),
    "export-onnx": ("recurrent_transformer.export", "export a sequence classifier to ONNX, checked by onnxruntime"),
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UsageError(ValueError):
    """Input that cannot be used (arguments, files, data, settings); the message names the cause. Commands print
    it as one `error: ...` line and exit with status 2."""


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors (a bad value, a missing required flag) raise `UsageError` instead of
    printing the usage text and exiting."""

    def error(self, message: str):
        raise UsageError(message)


class PositionalParser(argparse.ArgumentParser):
    """A plain `argparse` parser (for commands that take positional folders) with the same errors."""

    def error(self, message: str):
        raise UsageError(message)


def read_yaml(path: str | Path, dataclass_types) -> dict:
    """The YAML file's values, refusing keys that no argument dataclass declares."""
    if not Path(path).is_file():
        raise UsageError(f"config file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"config file {str(path)!r} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise UsageError(f"config file {str(path)!r} must hold a mapping of argument names to values")
    known = {name for cls in dataclass_types for name in cls.__dataclass_fields__}
    unknown = sorted(set(values) - known)
    if unknown:
        hints = "".join(suggestion(name, known) for name in unknown)
        raise UsageError(f"config file {str(path)!r} has unknown keys {unknown}{hints}")
    return values


def suggestion(name: str, known) -> str:
    """'; did you mean ...?' for a mistyped name, else nothing."""
    options = {option.lstrip("-"): option for option in known}
    close = difflib.get_close_matches(name.lstrip("-"), list(options), n=1)
    return f" (did you mean {options[close[0]]!r}?)" if close else ""


def parse_arguments(dataclass_types, argv: list[str] | None = None) -> tuple:
    """`command [config.yaml] [--flag value ...]` into one instance per dataclass: the YAML supplies defaults, flags
    override them. An unknown flag, a bad value or a dataclass that refuses its values raises `UsageError`."""
    argv = [str(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    parser = ArgumentParser(dataclass_types)
    if argv and argv[0].endswith((".yaml", ".yml")):
        parser.set_defaults(**read_yaml(argv.pop(0), dataclass_types))
    namespace, unknown = parser.parse_known_args(argv)
    flags = [arg for arg in unknown if arg.startswith("-")]
    if unknown:
        options = [option for action in parser._actions for option in action.option_strings]
        first = flags[0] if flags else unknown[0]
        raise UsageError(f"unknown argument {first!r}{suggestion(first, options) if flags else ''}")
    instances = []
    for dataclass_type in dataclass_types:
        names = {name for name, field in dataclass_type.__dataclass_fields__.items() if field.init}
        values = {name: value for name, value in vars(namespace).items() if name in names}
        try:
            instances.append(dataclass_type(**values))
        except ValueError as error:  # e.g. TrainingArguments' own checks
            raise UsageError(str(error).strip().splitlines()[0]) from error
    return tuple(instances)


def run_command(function: Callable, argv: list[str] | None = None):
    """`function(argv)`, with a `UsageError` printed as one `error:` line and exit status 2."""
    argv = [str(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    try:
        return function(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def command_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: recurrent-transformer <command> [config.yaml] [--flag value ...]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n`recurrent-transformer <command> --help` lists a command's flags."
    )


def run(name: str, argv: list[str] | None = None):
    """Command `name`'s main with `argv`; returns what it returns (its results), for use from Python."""
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}{suggestion(name, COMMANDS)}; one of {list(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    return importlib.import_module(COMMANDS[name][0]).main(argv or [])


def main(argv: list[str] | None = None) -> None:
    """The `recurrent-transformer` console command: runs `<command>` with the remaining arguments. Returns nothing,
    so the console script exits with status 0 (a command's results are in its files and printed output)."""
    argv = [str(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not argv or argv[0] in ("-h", "--help"):
        print(command_help())
        return
    run(argv[0], argv[1:])
