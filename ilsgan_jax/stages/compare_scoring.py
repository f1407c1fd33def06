"""Scoring of a comparison row (`stages.compare`): the U-Net routes, the U-Net recipe on given
pairs and test sets, the one-image row's held-out test crops, the own routes' summaries, and
the row's result and output files assembled from its finished stages."""

import math
import os
import shutil
import time

import jax
import numpy as np

from ilsgan_jax import compiler_options
from ilsgan_jax.data import cub_split
from ilsgan_jax.data.eval_split import load_eval_split
from ilsgan_jax.evaluate import pair_dataset, seg_metrics
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.stages import atomic, compare_instances, compare_report
from ilsgan_jax.stages.compare_rows import NUM_INSTANCES
from ilsgan_jax.stages.export import load_pairs
from ilsgan_jax.stages.segmentation import train_and_score_segmenter, write_previews

TEST_CROP_SEED = 1_000_003  # stream seed of the one-image row's test crops (training: config.seed)


# ----------------------------------------------------------------------------------------------
# A finished row
# ----------------------------------------------------------------------------------------------
def row_result(
    stages, gan_records, export_record, unet_record, own_route, extra_unets, minutes: float
) -> dict:
    """The row's result from its finished stages' records; `minutes`: the row's time spent."""
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
        "minutes": minutes,
        "images_per_second": images / max(gan_seconds, 1e-9),
        "gan_stages": [
            {"name": stage.name, **record}
            for stage, record in zip(stages, gan_records, strict=True)
        ],
        "export_seconds": export_record["seconds"],
        "segmenter_seconds": [unet_record["seconds"], *extra_unets],
        "own_route": own_route,
        # Where the (last) GAN stage trained: a resumed row may be assembled elsewhere.
        "machine": gan_records[-1].get("machine") or compare_report.machine(),
    }


def instances_summary(record: dict) -> dict:
    """The one-image row's own route (`compare_instances`): the objects' mean matched IoU as its
    IoU, each object's in the detail."""
    per_object = record["per_instance_iou"]
    scored = [value for value in per_object if value is not None]
    listed = ", ".join("-" if value is None else f"{value:.2f}" for value in per_object)
    return {
        "name": f"per-instance IoU after matching, K = {NUM_INSTANCES}",
        "status": "ok",
        "per_image_iou": float(np.mean(scored)) if scored else None,
        "per_instance_iou": per_object,
        "min_instance_iou": record["min_instance_iou"],
        "detail": f"per object {listed} (min {_format_min(record['min_instance_iou'])})",
    }


def _format_min(value) -> str:
    return "-" if value is None else f"{value:.2f}"


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
    images, objects = compare_instances.test_objects(config, TEST_CROP_SEED, count)
    return images, objects.any(axis=-1).astype(np.float32)


def score_instances(config, workdir: str, num_test_crops: int) -> dict:
    """The one-image row's per-instance route on the same test crops as its U-Net route."""
    images, objects = compare_instances.test_objects(config, TEST_CROP_SEED, num_test_crops)
    return compare_instances.score_instances(config, workdir, images, objects)


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
        **cub_split.report_fields(config.data),
    }
    atomic.write_json(os.path.join(out_dir, "segmenter", "report.json"), report)
    return report


def check_finite(result: dict) -> None:
    for key in ("per_image_iou", "per_image_dice", "miou", "pixel_accuracy", "mask_coverage"):
        if not math.isfinite(result[key]):
            raise FloatingPointError(f"{key} is {result[key]}")


# ----------------------------------------------------------------------------------------------
# The U-Net routes
# ----------------------------------------------------------------------------------------------
def score_unet(config, workdir: str, route: str, num_test_crops: int) -> dict:
    """The U-Net route of the stage in `workdir` on the row's test set: the synthetic test split,
    or `num_test_crops` held-out crops of the built-in picture for the one-image row."""
    if route == "unet_on_crops":
        images, masks = load_pairs(pair_dataset.dataset_dir(os.path.join(workdir, "export")))
        test_images, test_masks = test_crops(config, num_test_crops)
        report = train_and_score_unet(config, images, masks, test_images, test_masks, workdir)
        report["test_set"] = (
            f"{test_images.shape[0]} held-out crops of {config.data.builtin_image}, "
            "union of the object masks"
        )
    else:
        report = train_and_score_segmenter(config, workdir)
        report["test_set"] = f"synthetic test split ({report['num_test_images']} images)"
    report["seconds"] = report["segmenter_seconds"]
    return report


def score_alpha_threshold(config, workdir: str) -> dict:
    """Labels4Free's own masks (soft mask > its test-time threshold) through the U-Net."""
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
    return report


def copy_outputs(last_stage_dir: str, row_dir: str, seed: int) -> dict[str, str]:
    """The last sample grid and the previews, copied into the row's directory."""
    last = last_stage_dir
    sources = {
        "samples": os.path.join(last, "samples", "latest.png"),
        "segmentation": os.path.join(last, "previews", "segmentation.png"),
        "encoder": os.path.join(last, "encoder", "previews.png"),
        "alpha_threshold": os.path.join(last, "alpha_threshold", "previews", "segmentation.png"),
    }
    copied = {}
    for name, source in sources.items():
        if os.path.exists(source):
            target = os.path.join(row_dir, f"{name}_seed{seed}.png")
            shutil.copyfile(source, target)
            copied[name] = target
    return copied
