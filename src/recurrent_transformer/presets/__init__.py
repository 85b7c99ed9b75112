"""Model presets: the JSON files shipped in this package folder, loaded by name, or any JSON config by path.

The files are package data (`importlib.resources`), so a preset loads by name from a wheel as well as from a
checkout, whatever the current folder is.
"""

import json
from importlib import resources
from pathlib import Path

from ..configuration_recurrent_transformer import RecurrentTransformerConfig


def _preset_files() -> dict:
    """Name -> the shipped JSON file (a `Traversable`: a path in a checkout, possibly inside a zip elsewhere)."""
    folder = resources.files(__name__)
    return {entry.name.removesuffix(".json"): entry for entry in folder.iterdir() if entry.name.endswith(".json")}


def available_presets() -> list[str]:
    return sorted(_preset_files())


def preset_source(name_or_path: str | Path) -> str:
    """Where a preset comes from: an existing JSON file as given, else the name of a shipped preset. Raises
    `ValueError` listing the shipped presets when it is neither."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return str(path)
    if str(name_or_path) in _preset_files():
        return str(name_or_path)
    if path.suffix == ".json":
        raise ValueError(f"model config file {str(name_or_path)!r} does not exist")
    raise ValueError(
        f"unknown model preset {str(name_or_path)!r}: pass a JSON config file or one of {available_presets()}"
    )


def preset_dict(name_or_path: str | Path) -> dict:
    """The preset's values as saved (a shipped preset or a JSON file)."""
    source = preset_source(name_or_path)
    entry = _preset_files().get(source)
    text = entry.read_text(encoding="utf-8") if entry is not None else Path(source).read_text(encoding="utf-8")
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"model config {source!r} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"model config {source!r} must hold a JSON object of config fields")
    return values


def load_preset(name_or_path: str | Path, **overrides) -> RecurrentTransformerConfig:
    """Build a config from a preset name or JSON file; keyword arguments override its values."""
    config_dict = preset_dict(name_or_path)
    if "num_hidden_layers" in overrides and "layer_types" not in overrides and "layer_pattern" not in overrides:
        kinds = set(config_dict.get("layer_types") or [])
        if len(kinds) > 1:
            raise ValueError(
                f"preset {str(name_or_path)!r} mixes layer kinds; overriding num_hidden_layers also needs "
                "layer_types or layer_pattern"
            )
        config_dict["layer_types"] = None
        config_dict["layer_pattern"] = kinds.pop() if kinds else "hybrid"
    if overrides.get("layer_pattern") is not None and "layer_types" not in overrides:
        config_dict["layer_types"] = None  # the pattern given replaces the preset's layer list
    config_dict.update(overrides)
    config_dict.pop("model_type", None)
    return RecurrentTransformerConfig(**config_dict)
