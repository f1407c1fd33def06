"""Budget and time accounting of a comparison row (`stages.compare`): the row's plan in
minutes (GAN stages vs. export, U-Net(s) and the encoder's share), the export and U-Net times
measured in finished rows, and the resumable record of the time a row has spent so far."""

import dataclasses
import json
import math
import os
import time

from ilsgan_jax.stages import atomic
from ilsgan_jax.stages.compare_rows import NUM_INSTANCES, Row, Size


class BudgetTooSmall(ValueError):
    """The row's budget cannot reach the export and the scoring; names the minimum."""


# ----------------------------------------------------------------------------------------------
# Budget
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """Minutes of one row: its budget, what is kept after the GAN stages, the GAN stages'
    time together, and the least budget the row needs."""

    budget: float
    post_gan: float  # export + U-Net(s) + the encoder's share
    gan: float  # all GAN stages' budgets together
    minimum: float


def num_unets(row: Row) -> int:
    """U-Nets a row trains: the union route's, plus the alpha-mask one (Labels4Free) or one per
    instance slot (the one-image row)."""
    return {"unet+alpha_threshold": 2, "unet_on_crops": 1 + NUM_INSTANCES}.get(row.route, 1)


def measured_minutes(results: list[dict], size: Size) -> dict[str, float]:
    """The longest export and single U-Net of `results` at `size` (status 'ok'), in minutes:
    {'export': ..., 'segmenter': ...} (keys absent when nothing was measured)."""
    measured = {}
    for result in results:
        if result.get("status") != "ok" or result.get("size") != size.name:
            continue
        export = result.get("export_seconds")
        if export is not None:
            measured["export"] = max(measured.get("export", 0.0), export / 60)
        for seconds in result.get("segmenter_seconds", []):
            measured["segmenter"] = max(measured.get("segmenter", 0.0), seconds / 60)
    return measured


def plan_row(row: Row, size: Size, budget_minutes: float, measured: dict[str, float]) -> Plan:
    """The row's budget plan for a budget of `budget_minutes` (the row's own: its
    `budget_scale` x --budget_minutes); raises BudgetTooSmall, naming the least
    --budget_minutes, when the GAN stages would get less than `size.min_gan_minutes` each."""
    export = measured.get("export", size.export_minutes)
    segmenter = measured.get("segmenter", size.segmenter_minutes)
    stages = len(row.stages)
    fixed = export + num_unets(row) * segmenter + stages * size.gan_overhead_minutes
    encoder_share = size.encoder_share if row.route == "unet+encoder" else 0.0
    post_gan = export + num_unets(row) * segmenter + encoder_share * budget_minutes
    gan = budget_minutes - fixed - encoder_share * budget_minutes
    minimum = (fixed + stages * size.min_gan_minutes) / (1.0 - encoder_share)
    plan = Plan(budget=budget_minutes, post_gan=post_gan, gan=gan, minimum=minimum)
    if budget_minutes < minimum:
        raise BudgetTooSmall(
            f"--budget_minutes={budget_minutes / row.budget_scale:g} is too small for row "
            f"{row.name!r}: it needs at least "
            f"{math.ceil(minimum / row.budget_scale * 10) / 10:g} minutes"
            + (f" (its budget is {row.budget_scale:g} x that)" if row.budget_scale != 1 else "")
            + f" (export ~{export:.1f} min, "
            f"{num_unets(row)} U-Net(s) ~{segmenter:.1f} min each, {stages} GAN stage(s) of "
            f">= {size.min_gan_minutes:g} min + {size.gan_overhead_minutes:g} min set-up"
            + (f", {encoder_share:.0%} for the encoder" if encoder_share else "")
            + ")"
        )
    return plan


# ----------------------------------------------------------------------------------------------
# Progress of one row (resumable)
# ----------------------------------------------------------------------------------------------
class Progress:
    """`seed_dir/progress.json`: {'stages': {key: record}, 'gan_attempts': {stage: [{'start',
    'seconds'}]}}; a stage key present in 'stages' is done."""

    def __init__(self, seed_dir: str):
        self.path = os.path.join(seed_dir, "progress.json")
        self.data = {"stages": {}, "gan_attempts": {}}
        if os.path.exists(self.path):
            with open(self.path) as file:
                self.data = json.load(file)

    def save(self) -> None:
        atomic.write_json(self.path, self.data)

    def done(self, key: str) -> dict | None:
        return self.data["stages"].get(key)

    def record(self, key: str, record: dict) -> dict:
        self.data["stages"][key] = record
        self.save()
        return record

    def start_attempt(self, stage: str) -> dict:
        attempt = {"start": time.time(), "seconds": None}
        self.data["gan_attempts"].setdefault(stage, []).append(attempt)
        self.save()
        return attempt

    def gan_seconds(self, seed_dir: str, stage: str) -> float:
        """Time spent training GAN stage `stage`; an attempt that never finished counts until
        its newest checkpoint was written."""
        attempts = self.data["gan_attempts"].get(stage, [])
        total = 0.0
        for number, attempt in enumerate(attempts):
            if attempt["seconds"] is not None:
                total += attempt["seconds"]
                continue
            # files of later attempts do not count: an attempt stopped before its first
            # checkpoint counts nothing, not the time until the next attempt began
            before = attempts[number + 1]["start"] if number + 1 < len(attempts) else None
            checkpoints = os.path.join(seed_dir, stage, "checkpoints")
            end = _newest_mtime(checkpoints, before) or attempt["start"]
            total += max(0.0, end - attempt["start"])
        return total

    def seconds_spent(self, seed_dir: str) -> float:
        """Time spent on the row so far: finished stages and GAN attempts."""
        total = sum(
            record.get("seconds", 0.0)
            for key, record in self.data["stages"].items()
            if not key.startswith("gan:")
        )
        return total + sum(self.gan_seconds(seed_dir, stage) for stage in self.data["gan_attempts"])


def _newest_mtime(directory: str, before: float | None = None) -> float | None:
    """The newest modification time of the files under `directory` (only those older than
    `before` if given), or None."""
    times = [
        os.path.getmtime(os.path.join(root, name))
        for root, _, names in os.walk(directory)
        for name in names
    ]
    times = [t for t in times if before is None or t < before]
    return max(times) if times else None
