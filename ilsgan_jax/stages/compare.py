"""The layered-GAN family side by side (`launch/compare_systems.py`, `make compare`): every row
of `compare_rows.ROWS` trained at one size, its (image, mask) pairs exported, the same U-Net
recipe trained on them and scored on the same test set, plus each system's own route.

Workdir layout (WORKDIR = `run_comparison`'s `workdir`):

  WORKDIR/results.json, results.md           every finished or failed row, all seeds
  WORKDIR/<row>/result_seed<S>.json          the row's result (status 'ok' or 'failed')
  WORKDIR/<row>/samples_seed<S>.png          the last sample grid of its (last) GAN stage
  WORKDIR/<row>/segmentation_seed<S>.png     the U-Net's previews on the test set
  WORKDIR/<row>/<route>_seed<S>.png          the own route's previews, where it has some
  WORKDIR/<row>/seed<S>/<stage>/             the GAN stage's workdir (checkpoints, export, ...)
  WORKDIR/<row>/seed<S>/progress.json        the stages done so far and their times

Resuming: a row whose result has status 'ok' is skipped; any other row runs again from its
progress: finished stages are skipped, an interrupted GAN stage resumes from its checkpoints with
what is left of the row's budget. A row that raises (a NaN loss included) is recorded as failed
with the reason and the next row runs.

Budget of a row (time-budgeted sizes): the GAN stages get the row's budget minus the export, the
U-Net(s) (estimates, replaced by the longest measured in this workdir's finished rows), a set-up
allowance per GAN stage and, for PerturbGAN, a share for the inversion encoder, which then takes
as many steps as fit in what is left of the row's budget (or is reported as not run).
"""

import dataclasses
import glob
import json
import math
import os
import shutil
import time

import jax
import numpy as np
from absl import logging

from ilsgan_jax import compiler_options
from ilsgan_jax.data import single_image
from ilsgan_jax.data.eval_split import load_eval_split
from ilsgan_jax.evaluate import pair_dataset, seg_metrics
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.stages import atomic, compare_report, inversion
from ilsgan_jax.stages.compare_rows import (
    NUM_INSTANCES,
    ROWS,
    SIZES,
    Row,
    Size,
    select_rows,
    stage_config,
)
from ilsgan_jax.stages.export import export_pairs, load_pairs
from ilsgan_jax.stages.segmentation import train_and_score_segmenter, write_previews
from ilsgan_jax.train.loop import total_train_steps, train_and_evaluate

TEST_CROP_SEED = 1_000_003  # stream seed of the one-image row's test crops (training: config.seed)
PER_INSTANCE_NOT_MEASURED = (
    "needs a K-instance segmenter for real crops (the U-Net has two classes; the generator's "
    "own instance masks have no ground truth), so only the union mask is scored"
)


class ComparisonInterrupted(Exception):
    """A GAN stage stopped on a signal (not its budget): the comparison stops; run it again to
    resume."""


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
    return 2 if row.route == "unet+alpha_threshold" else 1


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
    """The row's budget plan; raises BudgetTooSmall when the GAN stages would get less than
    `size.min_gan_minutes` each."""
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
            f"--budget_minutes={budget_minutes:g} is too small for row {row.name!r}: it needs "
            f"at least {math.ceil(minimum * 10) / 10:g} minutes (export ~{export:.1f} min, "
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
            end = _newest_mtime(os.path.join(seed_dir, stage, "checkpoints")) or attempt["start"]
            if number + 1 < len(attempts):  # files of later attempts do not count
                end = min(end, attempts[number + 1]["start"])
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


def _newest_mtime(directory: str) -> float | None:
    times = [
        os.path.getmtime(os.path.join(root, name))
        for root, _, names in os.walk(directory)
        for name in names
    ]
    return max(times) if times else None


# ----------------------------------------------------------------------------------------------
# One row
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RowRun:
    """Runs one row for one seed in `row_dir/seed<S>`."""

    row: Row
    seed: int
    size: Size
    plan: Plan
    row_dir: str
    data_dir: str | None = None

    def __post_init__(self):
        self.seed_dir = os.path.join(self.row_dir, f"seed{self.seed}")
        os.makedirs(self.seed_dir, exist_ok=True)
        self.progress = Progress(self.seed_dir)

    def stage_dir(self, index: int) -> str:
        return os.path.join(self.seed_dir, self.row.stages[index].name)

    def config(self, index: int):
        config = stage_config(
            self.row.stages[index], self.size, seed=self.seed, data_dir=self.data_dir
        )
        if self.row.route == "unet+alpha_threshold" and index == len(self.row.stages) - 1:
            config.labels4free.pretrained_workdir = self.stage_dir(0)
        return config

    def spent(self) -> float:
        return self.progress.seconds_spent(self.seed_dir)

    # ----- GAN stages -----------------------------------------------------------------------
    def gan_budget_minutes(self, index: int) -> float:
        """Stage `index`'s share of the GAN time (less what earlier attempts at it spent); the
        last stage gets what is left of the row's budget after the post-GAN reserve and its
        set-up allowance. At least `size.min_gan_minutes`."""
        if not self.size.time_budgeted:
            return 0.0
        stage = self.row.stages[index]
        if index < len(self.row.stages) - 1:
            share = stage.budget_share * self.plan.gan
            spent = self.progress.gan_seconds(self.seed_dir, stage.name) / 60
            return max(share - spent, self.size.min_gan_minutes)
        left = (
            self.plan.budget
            - self.spent() / 60
            - self.plan.post_gan
            - self.size.gan_overhead_minutes
        )
        return max(left, self.size.min_gan_minutes)

    def train_gan(self, index: int) -> dict:
        stage = self.row.stages[index]
        key = f"gan:{stage.name}"
        if self.progress.done(key):
            return self.progress.done(key)
        config = self.config(index)
        budget = self.gan_budget_minutes(index)
        config.train.time_budget_minutes = budget
        attempt = self.progress.start_attempt(stage.name)
        start = time.time()
        trained = train_and_evaluate(config, self.stage_dir(index))
        attempt["seconds"] = time.time() - start
        self.progress.save()
        finished = trained.steps >= total_train_steps(config)
        if trained.interrupted and not finished:
            if not budget or trained.wall_time_seconds < budget * 60:
                raise ComparisonInterrupted(
                    f"{self.row.name} seed {self.seed}: GAN stage {stage.name!r} stopped by a "
                    f"signal at step {trained.steps}; run the comparison again to resume"
                )
        seconds = self.progress.gan_seconds(self.seed_dir, stage.name)
        return self.progress.record(
            key,
            {
                "steps": trained.steps,
                "images_seen": trained.images_seen,
                "seconds": seconds,
                "budget_minutes": budget,
                "images_per_second": trained.images_seen / max(seconds, 1e-9),
                "last_metrics": trained.last_metrics,
                "machine": compare_report.machine(),
            },
        )

    # ----- Export and U-Net -------------------------------------------------------------------
    def export(self) -> dict:
        if self.progress.done("export"):
            return self.progress.done("export")
        start = time.time()
        last = len(self.row.stages) - 1
        # From the newest checkpoint: deterministic and resumable (finished shards are kept).
        export_pairs(self.config(last), self.stage_dir(last))
        return self.progress.record("export", {"seconds": time.time() - start})

    def unet(self) -> dict:
        """The U-Net route on the row's test set: the synthetic test split, or held-out crops
        of the built-in picture for the one-image row."""
        if self.progress.done("unet"):
            return self.progress.done("unet")
        last = len(self.row.stages) - 1
        config, workdir = self.config(last), self.stage_dir(last)
        if self.row.route == "unet_on_crops":
            images, masks = load_pairs(pair_dataset.dataset_dir(os.path.join(workdir, "export")))
            test_images, test_masks = test_crops(config, self.size.test_crops)
            report = train_and_score_unet(config, images, masks, test_images, test_masks, workdir)
            report["test_set"] = (
                f"{test_images.shape[0]} held-out crops of {config.data.builtin_image}, "
                "union of the object masks"
            )
        else:
            report = train_and_score_segmenter(config, workdir)
            report["test_set"] = f"synthetic test split ({report['num_test_images']} images)"
        report["seconds"] = report["segmenter_seconds"]
        return self.progress.record("unet", report)

    # ----- Own routes ---------------------------------------------------------------------------
    def alpha_threshold(self) -> dict:
        """Labels4Free's own masks (soft mask > its test-time threshold) through the U-Net."""
        if self.progress.done("alpha_threshold"):
            return self.progress.done("alpha_threshold")
        last = len(self.row.stages) - 1
        config, workdir = self.config(last), self.stage_dir(last)
        threshold = float(config.labels4free.mask_threshold)
        arrays = pair_dataset.read_arrays(
            pair_dataset.dataset_dir(os.path.join(workdir, "export")), keys=("image", "soft_mask")
        )
        images = arrays["image"].astype(np.float32) / 127.5 - 1.0
        masks = arrays["soft_mask"][..., 0].astype(np.float32) / 255.0 > threshold
        test_images, test_masks = load_eval_split(config)
        out_dir = os.path.join(workdir, "alpha_threshold")
        report = train_and_score_unet(config, images, masks, test_images, test_masks, out_dir)
        report["threshold"] = threshold
        report["seconds"] = report["segmenter_seconds"]
        return self.progress.record("alpha_threshold", report)

    def encoder(self, gan_record: dict) -> dict:
        """PerturbGAN's inversion encoder with as many steps as fit in the row's budget."""
        if self.progress.done("encoder"):
            return self.progress.done("encoder")
        config = self.config(0)
        steps = int(config.encoder.num_steps)
        if self.size.time_budgeted:
            left = self.plan.budget * 60 - self.spent()
            step_seconds = (
                self.size.encoder_step_ratio
                * config.encoder.batch_size
                / max(gan_record["images_per_second"], 1e-9)
            )
            fit = int((left - self.size.encoder_compile_minutes * 60) / step_seconds)
            steps = min(steps, max(fit, 0))
            if steps < self.size.min_encoder_steps:
                return self.progress.record(
                    "encoder",
                    {
                        "status": "not run",
                        "reason": f"{left / 60:.1f} min left of the row's budget fit {fit} "
                        f"encoder steps (< {self.size.min_encoder_steps}; ~{step_seconds:.2f} "
                        "s/step)",
                        "seconds": 0.0,
                    },
                )
        config.encoder.num_steps = steps
        start = time.time()
        report = inversion.score_encoder(config, self.stage_dir(0), retrain=True)
        return self.progress.record(
            "encoder",
            {
                "status": "ok",
                "test": report["test"],
                "encoder_steps": report["encoder_steps"],
                "seconds": time.time() - start,
            },
        )

    # ----- The whole row -----------------------------------------------------------------------
    def run(self) -> dict:
        gan_records = []
        for index, stage in enumerate(self.row.stages):
            logging.info(
                "compare: %s seed %d: GAN stage %r (%s); %.1f min of the row's budget left",
                self.row.name,
                self.seed,
                stage.name,
                f"budget {self.gan_budget_minutes(index):.1f} min"
                if self.size.time_budgeted
                else "fixed length",
                self.plan.budget - self.spent() / 60,
            )
            gan_records.append(self.train_gan(index))
        logging.info(
            "compare: %s seed %d: export and U-Net; %.1f min of the row's budget left",
            self.row.name,
            self.seed,
            self.plan.budget - self.spent() / 60,
        )
        export_record = self.export()
        unet_record = self.unet()
        own_route, extra_unets = None, []
        if self.row.route == "unet+encoder":
            logging.info("compare: %s seed %d: inversion encoder", self.row.name, self.seed)
            own_route = encoder_summary(self.encoder(gan_records[0]))
        elif self.row.route == "unet+alpha_threshold":
            logging.info("compare: %s seed %d: U-Net on the alpha masks", self.row.name, self.seed)
            record = self.alpha_threshold()
            extra_unets.append(record["seconds"])
            own_route = alpha_threshold_summary(record)
        elif self.row.route == "unet_on_crops":
            own_route = {
                "name": f"per-instance IoU after matching, K = {NUM_INSTANCES}",
                "status": "not measured",
                "reason": PER_INSTANCE_NOT_MEASURED,
            }
        return self.result(gan_records, export_record, unet_record, own_route, extra_unets)

    def result(self, gan_records, export_record, unet_record, own_route, extra_unets) -> dict:
        test = unet_record["test"]
        images = sum(record["images_seen"] for record in gan_records)
        gan_seconds = sum(record["seconds"] for record in gan_records)
        return {
            "per_image_iou": test["drc_iou"],
            "per_image_dice": test["drc_dice"],
            "miou": test["miou"],
            "pixel_accuracy": test["pixel_accuracy"],
            "all_foreground_iou": unet_record["all_foreground_iou"],
            "num_test_images": int(test["num_images"]),
            "test_set": unet_record["test_set"],
            "mask_coverage": unet_record["synthetic_mask_coverage"],
            "all_foreground_fraction": unet_record["synthetic_full_fraction"],
            "kimg": images / 1000,
            "gan_minutes": gan_seconds / 60,
            "minutes": self.spent() / 60,
            "images_per_second": images / max(gan_seconds, 1e-9),
            "gan_stages": [
                {"name": stage.name, **record}
                for stage, record in zip(self.row.stages, gan_records, strict=True)
            ],
            "export_seconds": export_record["seconds"],
            "segmenter_seconds": [unet_record["seconds"], *extra_unets],
            "own_route": own_route,
            # Where the (last) GAN stage trained: a resumed row may be assembled elsewhere.
            "machine": gan_records[-1].get("machine") or compare_report.machine(),
        }


def encoder_summary(record: dict) -> dict:
    summary = {"name": "inversion encoder: mask(G(E(x))) > 0.5", "status": record["status"]}
    if record["status"] != "ok":
        return {**summary, "reason": record["reason"]}
    return {
        **summary,
        **_scores(record["test"]),
        "encoder_steps": record["encoder_steps"],
        "detail": f"{record['encoder_steps']} encoder steps",
    }


def alpha_threshold_summary(record: dict) -> dict:
    threshold = record["threshold"]
    return {
        "name": f"U-Net on its own alpha masks (soft mask > {threshold:g})",
        "status": "ok",
        **_scores(record["test"]),
        "mask_coverage": record["synthetic_mask_coverage"],
        "all_foreground_fraction": record["synthetic_full_fraction"],
        "detail": f"coverage {record['synthetic_mask_coverage']:.2f}, all-fg "
        f"{record['synthetic_full_fraction']:.0%}",
    }


def _scores(test: dict) -> dict:
    return {
        "per_image_iou": test["drc_iou"],
        "per_image_dice": test["drc_dice"],
        "miou": test["miou"],
        "pixel_accuracy": test["pixel_accuracy"],
    }


# ----------------------------------------------------------------------------------------------
# Scoring on other pairs or test sets
# ----------------------------------------------------------------------------------------------
def test_crops(config, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` crops of the built-in picture from a stream seed other than training's, and the
    union of their object masks: images float32 [N, R, R, 3] in [-1, 1], masks [N, R, R] in
    {0, 1}. The picture is the one the GAN trained on (the one-image setting has no other)."""
    crops = single_image.crops_with_object_masks(
        config.data, seed=TEST_CROP_SEED, example_indices=np.arange(count)
    )
    images = crops["image"].astype(np.float32) / 127.5 - 1.0
    union = (crops["masks"] >= 128).any(axis=-1).astype(np.float32)
    return images, union


def train_and_score_unet(config, images, masks, test_images, test_masks, out_dir: str) -> dict:
    """`segmentation.train_and_score_segmenter`'s recipe on given pairs and test set: the U-Net
    of `config.segmenter` trained on (images [N, R, R, 3] in [-1, 1], masks [N, R, R]), scored on
    (test_images, test_masks); previews in `out_dir/previews/segmentation.png`, the report in
    `out_dir/segmenter/report.json`. Returns the report."""
    start = time.time()
    result = segmenter_lib.train_segmenter(
        images,
        masks,
        config.segmenter,
        seed=config.seed,
        compiler_options=compiler_options.for_devices(config, jax.local_devices()[:1]),
    )
    metrics = segmenter_lib.score_segmenter(
        result.variables, test_images, test_masks, config.segmenter
    )
    write_previews(config, out_dir, result.variables, test_images[:16], test_masks[:16])
    report = {
        "num_synthetic_pairs": int(images.shape[0]),
        "num_test_images": int(test_images.shape[0]),
        "best_val_step": int(result.best_step),
        "test": {name: float(value) for name, value in metrics.items()},
        "all_foreground_iou": seg_metrics.all_foreground_baseline(test_masks),
        **seg_metrics.synthetic_mask_statistics(np.asarray(masks, np.float32)),
        "segmenter_seconds": time.time() - start,
    }
    atomic.write_json(os.path.join(out_dir, "segmenter", "report.json"), report)
    return report


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------
def result_path(workdir: str, row_name: str, seed: int) -> str:
    return os.path.join(workdir, row_name, f"result_seed{seed}.json")


def read_results(workdir: str) -> list[dict]:
    """Every row result in `workdir`, in table order (rows, then seeds)."""
    results = []
    for name in ROWS:
        for path in glob.glob(os.path.join(workdir, name, "result_seed*.json")):
            with open(path) as file:
                results.append(json.load(file))
    order = list(ROWS)
    return sorted(results, key=lambda result: (order.index(result["row"]), result["seed"]))


def _stored_result(workdir: str, row: Row, seed: int) -> dict | None:
    path = result_path(workdir, row.name, seed)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def _copy_outputs(run: RowRun) -> dict[str, str]:
    """The last sample grid and the previews, copied into the row's directory."""
    last = run.stage_dir(len(run.row.stages) - 1)
    sources = {
        "samples": os.path.join(last, "samples", "latest.png"),
        "segmentation": os.path.join(last, "previews", "segmentation.png"),
        "encoder": os.path.join(last, "encoder", "previews.png"),
        "alpha_threshold": os.path.join(last, "alpha_threshold", "previews", "segmentation.png"),
    }
    copied = {}
    for name, source in sources.items():
        if os.path.exists(source):
            target = os.path.join(run.row_dir, f"{name}_seed{run.seed}.png")
            shutil.copyfile(source, target)
            copied[name] = target
    return copied


def _check_finite(result: dict) -> None:
    for key in ("per_image_iou", "per_image_dice", "miou", "pixel_accuracy", "mask_coverage"):
        if not math.isfinite(result[key]):
            raise FloatingPointError(f"{key} is {result[key]}")


def run_comparison(
    row_names: list[str] | None,
    seeds: list[int],
    workdir: str,
    *,
    budget_minutes: float = 25.0,
    size: str = "runlocal",
    data_dir: str | None = None,
) -> list[dict]:
    """Runs the rows `row_names` (None = all) for every seed into `workdir` and writes
    `results.json` and `results.md` (all results in `workdir`, earlier calls' included).

    Raises ValueError for an unknown row or size, and BudgetTooSmall before any training when a
    row's budget cannot reach its export and scoring. Returns this call's results (skipped rows:
    their stored results)."""
    rows = select_rows(row_names)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; the sizes are {list(SIZES)}")
    the_size = SIZES[size]
    if not seeds:
        raise ValueError("no seeds given")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    for row in rows:  # every budget checked before anything trains
        plan_row(row, the_size, budget_minutes, measured_minutes(read_results(workdir), the_size))
    info = compare_report.machine()
    jobs = [(row, seed) for row in rows for seed in seeds]
    stored = {(row.name, seed): _stored_result(workdir, row, seed) for row, seed in jobs}
    pending = sum(result is None or result["status"] != "ok" for result in stored.values())
    results = []
    for number, (row, seed) in enumerate(jobs, start=1):
        path = result_path(workdir, row.name, seed)
        previous = stored[row.name, seed]
        if previous is not None and previous["status"] == "ok":
            logging.info(
                "compare %d/%d: %s seed %d done before, skipped", number, len(jobs), row.name, seed
            )
            results.append(previous)
            continue
        logging.info(
            "compare %d/%d: %s seed %d (%s), budget %.0f min; the table has about %.0f min left",
            number,
            len(jobs),
            row.name,
            seed,
            row.description,
            budget_minutes,
            budget_minutes * pending,
        )
        pending -= 1
        base = {
            "row": row.name,
            "seed": seed,
            "description": row.description,
            "route": row.route,
            "size": the_size.name,
            "budget_minutes": budget_minutes,
            "machine": info,
        }
        run = None
        try:
            measured = measured_minutes(read_results(workdir), the_size)
            plan = plan_row(row, the_size, budget_minutes, measured)
            run = RowRun(row, seed, the_size, plan, os.path.join(workdir, row.name), data_dir)
            result = {**base, "status": "ok", **run.run()}
            _check_finite(result)
            result["files"] = _copy_outputs(run)
        except ComparisonInterrupted:
            raise
        except Exception as error:  # recorded as failed; the other rows still run
            logging.exception("compare: %s seed %d failed", row.name, seed)
            reason = f"{type(error).__name__}: {error}".strip()
            minutes = run.spent() / 60 if run is not None else 0.0
            result = {**base, "status": "failed", "reason": reason[:500], "minutes": minutes}
        atomic.write_json(path, result)
        results.append(result)
        compare_report.write_reports(workdir, read_results(workdir), title=_title(the_size))
        logging.info(
            "compare %d/%d: %s seed %d %s in %.1f min",
            number,
            len(jobs),
            row.name,
            seed,
            result["status"],
            result.get("minutes", 0.0),
        )
    compare_report.write_reports(workdir, read_results(workdir), title=_title(the_size))
    return results


def _title(size: Size) -> str:
    return f"The layered-GAN family on the built-in synthetic data ({size.name} size)"
