"""What `compare --resume` may continue: the same comparison (its saved settings), where finished runs are kept.

Seeds may change on the same split (add seeds later, or report a subset), presets may be added after the saved
ones (the first stays the parameter reference), and the '+MLM' settings may change until
any of their work has finished (so '+MLM' rows can be added to a comparison that has none); anything else that
changes the runs is refused with the differences listed.
"""

import dataclasses
import json
import logging
from pathlib import Path

from ..cli import UsageError
from ..files import read_json
from .plan import ARGUMENT_CLASSES, Plan, split_list, split_seed_for
from .report import MLM_SUFFIX

logger = logging.getLogger(__name__)

SETTINGS_FILE = "compare_args.json"
RUN_FILE = "compare_run.json"  # written into a run's folder when it has finished: its wall time
# Settings a --resume may change while no pre-training or '+MLM' run has finished: to add '+MLM' rows.
MLM_SETTINGS = {
    f"compare.{name}" for name in ("pretrain_steps", "pretrain_presets", "pretrain_learning_rate", "mlm_probability")
}
# Settings that may change between a comparison and its --resume (the folder may have moved, or the machine).
RESUME_FREE = ("resume", "overwrite_output_dir", "disable_tqdm", "output_dir", "parallel_runs")


def finished(folder: Path, result_file: str) -> bool:
    return (folder / result_file).is_file() and (folder / RUN_FILE).is_file()


def mlm_work_finished(output_dir: Path) -> bool:
    """Whether a pre-training or a '+MLM' run of this comparison has finished (its settings are then fixed)."""
    pretrained = any(
        path.parent.joinpath("mlm_metrics.json").is_file() for path in output_dir.glob(f"pretrain/*/*/{RUN_FILE}")
    )
    return pretrained or any(output_dir.glob(f"runs/*{MLM_SUFFIX}/*/{RUN_FILE}"))


def saved_value(saved: dict, group: str, name: str):
    """A setting as the saved comparison ran: one its file lacks (a version before the setting existed) ran as the
    setting's default does, so a comparison started then resumes unless the setting is changed."""
    if name in saved.get(group, {}):
        return saved[group][name]
    argument_class = dict(zip(("compare", "model", "data", "training"), ARGUMENT_CLASSES, strict=True))[group]
    default = argument_class.__dataclass_fields__[name].default
    return None if default is dataclasses.MISSING else json.loads(json.dumps(default))


def changed_settings(saved: dict, settings: dict) -> set[str]:
    return {
        f"{group}.{name}"
        for group, values in settings.items()
        for name, value in values.items()
        if name not in RESUME_FREE and saved_value(saved, group, name) != json.loads(json.dumps(value))
    }


def check_resume(plan: Plan, settings: dict) -> list[str]:
    """A folder holding this very comparison; returns what the resume adds (seeds, presets, '+MLM' rows), which the
    caller records in the saved settings once every check has passed."""
    saved_path = plan.output_dir / SETTINGS_FILE
    if not saved_path.is_file():
        raise UsageError(f"--resume: {str(plan.output_dir)!r} holds no comparison (no {SETTINGS_FILE})")
    saved = read_json(saved_path, "the settings of a comparison")
    changed = changed_settings(saved, settings)
    updated = []
    saved_split_seed = split_seed_for(
        split_list(saved["compare"]["seeds"], "seeds", int), saved["data"].get("split_seed")
    )
    if "compare.seeds" in changed and saved_split_seed == plan.split_seed:
        # Seeds added (or a subset reported) on the same split: the finished runs stay valid.
        changed.discard("compare.seeds")
        updated.append(f"seeds {plan.seeds}")
    saved_presets = split_list(saved["compare"]["presets"], "presets")
    if "compare.presets" in changed and plan.presets[: len(saved_presets)] == saved_presets:
        # Presets added after the saved ones: the parameter reference (the first) and the finished runs stay.
        changed.discard("compare.presets")
        updated.append(f"presets {plan.presets[len(saved_presets) :]}")
    if changed and changed <= MLM_SETTINGS and not mlm_work_finished(plan.output_dir):
        # '+MLM' rows are added (or their settings changed before any of their work finished).
        changed = set()
        updated.append(f"'{MLM_SUFFIX}' rows with the new settings")
    if changed:
        raise UsageError(
            f"--resume: the settings differ from the comparison in {str(plan.output_dir)!r}: {sorted(changed)}"
        )
    if updated:
        logger.info(f"--resume: {' and '.join(updated)} in {str(plan.output_dir)!r}")
    return updated
