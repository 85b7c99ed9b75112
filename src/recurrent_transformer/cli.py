"""Command-line arguments shared by the scripts: a YAML file of defaults, then flags that override it."""

import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser


def unshadow_libraries(script: str | Path) -> None:
    """Take the script's own folder off `sys.path`. `python scripts/train.py` puts scripts/ first on the path,
    where scripts/evaluate.py would be imported in place of the `evaluate` library. Call it before anything
    imports `evaluate` (the metrics module imports it lazily)."""
    folder = Path(script).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != folder]
    module = sys.modules.get("evaluate")
    if module is not None and Path(getattr(module, "__file__", None) or "/").resolve().parent == folder:
        del sys.modules["evaluate"]


class ArgumentError(ValueError):
    """A bad command line or config file; scripts print its message and exit with status 2."""


def read_yaml(path: str | Path, dataclass_types) -> dict:
    """The YAML file's values, refusing keys that no argument dataclass declares."""
    if not Path(path).is_file():
        raise ArgumentError(f"config file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise ArgumentError(f"config file {str(path)!r} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ArgumentError(f"config file {str(path)!r} must hold a mapping of argument names to values")
    known = {name for cls in dataclass_types for name in cls.__dataclass_fields__}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ArgumentError(f"config file {str(path)!r} has unknown keys {unknown}; known keys are {sorted(known)}")
    return values


def parse_yaml_and_flags(dataclass_types, argv: list[str] | None = None) -> tuple:
    """`script.py [config.yaml] [--flag value ...]`: the YAML supplies defaults, flags override them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    if argv and argv[0].endswith((".yaml", ".yml")):
        parser.set_defaults(**read_yaml(argv.pop(0), dataclass_types))
    return parser.parse_args_into_dataclasses(args=argv)
