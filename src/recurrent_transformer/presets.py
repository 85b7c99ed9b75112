"""Model presets: the JSON files in `configs/model/`, loaded by name or by path."""

from pathlib import Path

from .configuration_recurrent_transformer import RecurrentTransformerConfig

# configs/model/ beside src/ in a checkout (the package is installed editable from the repository).
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.json"))


def preset_path(name_or_path: str | Path) -> Path:
    """A preset's JSON file: an existing path as given, else `configs/model/<name>.json`."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return path
    candidate = PRESET_DIR / f"{path.name}.json"
    if candidate.is_file():
        return candidate
    raise ValueError(
        f"unknown model preset {str(name_or_path)!r}: pass a JSON config file or one of {available_presets()} "
        f"(from {PRESET_DIR})"
    )


def load_preset(name_or_path: str | Path, **overrides) -> RecurrentTransformerConfig:
    """Build a config from a preset name or JSON file; keyword arguments override its values."""
    config_dict = RecurrentTransformerConfig.get_config_dict(str(preset_path(name_or_path)))[0]
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
