"""A comparison row's settings on record (`WORKDIR/<row>/seed<S>/settings.json`): the config of
every GAN stage, written when the row first runs and checked by every later call into the same
workdir, so that a finished result or a checkpoint of one setting is never reused for another
(a row whose fixed overrides changed between versions, a `--set` added or dropped).

Fields that do not change what a row learns are left out: the time budget (set per attempt and
raised on purpose to resume with more time), the data cache directory, the path of
Labels4Free's pretrained workdir and the CUB split file shipped in the package (locations that
move with the workdir or the checkout, not settings)."""

import json
import os

from ilsgan_jax.stages import atomic

SETTINGS_NAME = "settings.json"
UNRECORDED_FIELDS = frozenset(
    (
        "train.time_budget_minutes",
        "data.data_dir",
        "labels4free.pretrained_workdir",
        "data.cub_split_file",
    )
)
MAX_LISTED = 6  # differing fields named in the error


class SettingsChanged(ValueError):
    """A row's recorded settings differ from the ones of this call."""


def flatten(config) -> dict:
    """`{dotted field: JSON value}` of a ConfigDict (tuples as lists, the unrecorded fields
    left out)."""
    flat = {}

    def visit(node, prefix):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                visit(value, dotted + ".")
            elif dotted not in UNRECORDED_FIELDS:
                flat[dotted] = value

    visit(config.to_dict(), "")
    return json.loads(json.dumps(flat, sort_keys=True, default=repr))


def row_settings(stage_configs: dict) -> dict:
    """`{stage name: flatten(config)}` for a row's `{stage name: ConfigDict}`."""
    return {name: flatten(config) for name, config in stage_configs.items()}


def differences(recorded: dict, current: dict) -> list[str]:
    """'stage: field: RECORDED there, CURRENT now' for every field that differs (missing
    fields read as 'absent'), sorted."""
    lines = []
    for stage in sorted(set(recorded) | set(current)):
        old, new = recorded.get(stage, {}), current.get(stage, {})
        for field in sorted(set(old) | set(new)):
            before, after = old.get(field, "absent"), new.get(field, "absent")
            if before != after:
                lines.append(f"{stage}: {field}: {before!r} there, {after!r} now")
    return lines


def check(seed_dir: str, settings: dict, what: str) -> bool:
    """Raises SettingsChanged when `seed_dir` holds settings other than `settings`, naming the
    file, the differing fields and what to do; `what` names the row and seed. Returns whether
    settings were on record (False: a new row, or one from before settings were recorded)."""
    path = os.path.join(seed_dir, SETTINGS_NAME)
    if not os.path.exists(path):
        return False
    with open(path) as file:
        recorded = json.load(file)
    changed = differences(recorded, settings)
    if changed:
        listed = "; ".join(changed[:MAX_LISTED])
        more = f" (and {len(changed) - MAX_LISTED} more)" if len(changed) > MAX_LISTED else ""
        raise SettingsChanged(
            f"{what} was run with other settings ({path}): {listed}{more}. Use another "
            f"--workdir for this setting, or delete {os.path.dirname(seed_dir)} to run it again"
        )
    return True


def record(seed_dir: str, settings: dict) -> None:
    """Writes `settings` to `seed_dir/settings.json` (atomically; the directory is created)."""
    os.makedirs(seed_dir, exist_ok=True)
    atomic.write_json(os.path.join(seed_dir, SETTINGS_NAME), settings)
