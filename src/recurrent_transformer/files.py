"""The files every command writes and reads: JSON records, and the rule for an output folder that holds a run.

A command checks its output folder before it writes anything (`check_output_dir`): a folder holding another run is
left alone unless the user asks to replace it (`--overwrite_output_dir`, which removes only the names the command
itself writes: `clear_outputs`) or to continue it (`--resume`).
"""

import json
import re
import shutil
from pathlib import Path

from .cli import UsageError

HUB_ID = re.compile(r"\w[\w.-]*(/\w[\w.-]*)?")  # 'name' or 'owner/name'


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub repository id rather than a folder here: 'name' or 'owner/name', neither an
    existing path nor a path whose parent folder exists."""
    if not name or HUB_ID.fullmatch(name) is None or Path(name).exists():
        return False
    return not ("/" in name and Path(name).parent.is_dir())


def write_json(path: str | Path, values) -> None:
    Path(path).write_text(json.dumps(values, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def read_json(path: str | Path, expected: str):
    """A JSON file; a missing or broken one raises `UsageError` naming the file and what it should hold."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} not found: expected {expected}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error}): expected {expected}") from error


def check_output_dir(
    output_dir: str | Path | None, *, overwrite: bool, resume: bool = False, can_resume: bool = True, held=None
) -> Path:
    """The output folder a command may write: new, empty, or (with `overwrite`) one whose earlier run it replaces.
    With `resume`, the caller checks what the folder must hold. `held` names the files that count as a run (by
    default any file); a folder holding one of them is refused without `overwrite` or `resume`."""
    if output_dir is None:
        raise UsageError("output_dir is not set (--output_dir or a key in the YAML file)")
    output_dir = Path(output_dir)
    if resume and overwrite:
        raise UsageError("--resume continues the run in output_dir and --overwrite_output_dir replaces it: pick one")
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output_dir {str(output_dir)!r} is a file")
    if resume or overwrite or not output_dir.is_dir():
        return output_dir
    present = sorted(path.name for path in output_dir.iterdir() if held is None or path.name in held)
    if present:
        continuation = "--resume to continue it, " if can_resume else ""
        raise UsageError(
            f"output_dir {str(output_dir)!r} already holds another run ({', '.join(present[:6])}); pass "
            f"--overwrite_output_dir to replace it, {continuation}or choose another folder"
        )
    return output_dir


def clear_outputs(output_dir: Path, names) -> None:
    """Remove what an earlier run of the same command wrote (files and folders named in `names`); other files in
    the folder stay."""
    for name in names:
        path = Path(output_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
