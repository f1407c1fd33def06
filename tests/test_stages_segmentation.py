"""The U-Net stage end to end at 16 px, in process (`stages.segmentation`).

- export -> train_segmenter -> score: pairs written in the export format from the synthetic
  renderer (exact masks; a few GAN steps would not give object masks), a U-Net of widths (4, 8)
  trained for a few hundred steps. The report exists, has its keys, its test metrics match a NumPy
  recomputation from the saved segmenter, and the per-image IoU beats the all-foreground baseline.
  `--mode=evaluate` scores the saved segmenter again with the same numbers.
- segment_folder: masks and overlays for the good images, a corrupt file skipped with a warning,
  no overwriting without overwrite=True.
"""

import json
import logging as std_logging
import os

import numpy as np
import pytest
from loop_helpers import RESOLUTION
from PIL import Image
from stage_helpers import stage_config

from ilsgan_jax.data.eval_split import load_eval_split
from ilsgan_jax.data.synthetic_render import render_synthetic_objects
from ilsgan_jax.evaluate import pair_dataset
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.stages import modes, segmentation
from ilsgan_jax.stages.export import load_pairs

NUM_STUB_PAIRS = 400
STUB_SHARD = 100
REPORT_KEYS = {
    "data",
    "resolution",
    "num_synthetic_pairs",
    "num_test_images",
    "best_val_step",
    "best_val_metrics",
    "test",
    "all_foreground_iou",
    "synthetic_mask_coverage",
    "synthetic_full_fraction",
    "segmenter_seconds",
}
TEST_METRIC_KEYS = {"drc_iou", "drc_dice", "iou", "iou_bg", "miou", "pixel_accuracy"}

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return stage_config(str(tmp_path_factory.mktemp("tfds")))


# ----------------------------------------------------------------------------------------------
# export (stub) -> train_segmenter -> score
# ----------------------------------------------------------------------------------------------
def write_stub_export(workdir: str, num_pairs: int, shard_size: int, seed: int) -> dict:
    """Synthetic-renderer pairs in export_pairs' format (the tfds data set under export/)."""
    rendered = render_synthetic_objects(
        np.random.default_rng(seed), num_pairs, RESOLUTION, return_layers=True
    )
    arrays = {
        "image": rendered["image"],
        "mask": (rendered["mask"] >= 128).astype(np.uint8),
        "fg_rgb": np.round(rendered["foreground"] * 255).astype(np.uint8),
        "bg_rgb": np.round(rendered["background"] * 255).astype(np.uint8),
        "soft_mask": rendered["mask"],
    }
    directory = pair_dataset.dataset_dir(os.path.join(workdir, "export"))
    starts = range(0, num_pairs, shard_size)
    for shard, start in enumerate(starts):
        pair_dataset.write_shard(
            os.path.join(directory, pair_dataset.shard_filename(shard, len(starts))),
            {key: value[start : start + shard_size] for key, value in arrays.items()},
            RESOLUTION,
        )
    lengths = [min(shard_size, num_pairs - start) for start in starts]
    pair_dataset.write_metadata(directory, RESOLUTION, lengths)
    return arrays


@pytest.fixture(scope="module")
def segmenter_run(config, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("segmenter"))
    stub = write_stub_export(workdir, NUM_STUB_PAIRS, STUB_SHARD, seed=1234)
    report = segmentation.train_and_score_segmenter(config, workdir)
    return dict(workdir=workdir, report=report, stub=stub)


def test_load_pairs_reads_the_export_format(segmenter_run):
    images, masks = load_pairs(
        pair_dataset.dataset_dir(os.path.join(segmenter_run["workdir"], "export"))
    )
    stub = segmenter_run["stub"]
    assert images.shape == (NUM_STUB_PAIRS, RESOLUTION, RESOLUTION, 3)
    assert images.dtype == np.float32 and masks.dtype == np.float32
    np.testing.assert_allclose(images, stub["image"] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(masks, stub["mask"][..., 0])


def test_report_written_with_its_keys(segmenter_run, config):
    workdir, report, stub = segmenter_run["workdir"], segmenter_run["report"], segmenter_run["stub"]
    with open(os.path.join(workdir, "segmenter", "report.json")) as file:
        on_disk = json.load(file)
    assert on_disk == json.loads(json.dumps(report))
    assert set(report) == REPORT_KEYS
    assert TEST_METRIC_KEYS <= set(report["test"])
    assert report["num_synthetic_pairs"] == NUM_STUB_PAIRS
    assert report["num_test_images"] == config.data.synthetic_test_size
    assert report["resolution"] == RESOLUTION and report["data"] == "synthetic"
    assert report["best_val_step"] in (80, 160, 240)
    # The exported masks' statistics, recomputed with NumPy (the renderer's objects cover ~25%).
    coverage = stub["mask"][..., 0].reshape(NUM_STUB_PAIRS, -1).mean(axis=1)
    assert report["synthetic_mask_coverage"] == pytest.approx(coverage.mean(), abs=1e-6)
    assert report["synthetic_full_fraction"] == pytest.approx(np.mean(coverage > 0.99))
    assert 0.05 < report["synthetic_mask_coverage"] < 0.6
    for name in TEST_METRIC_KEYS:
        assert 0.0 <= report["test"][name] <= 1.0, name
    # The previews grid: 4 rows (image, truth, prediction, cutout) of 16 test images, 1 px gaps.
    preview = np.asarray(Image.open(os.path.join(workdir, "previews", "segmentation.png")))
    assert preview.shape == (4 * (RESOLUTION + 1) + 1, 16 * (RESOLUTION + 1) + 1, 3)
    assert segmentation.segmenter_dir(workdir).is_dir()  # the orbax directory of the weights
    assert not os.path.exists(os.path.join(workdir, "segmenter", "best.msgpack"))


def numpy_per_image_iou(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[N, H, W] bool x2 -> [N]; 1 where both masks are empty."""
    inter = np.logical_and(prediction, target).sum((1, 2))
    union = np.logical_or(prediction, target).sum((1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def test_scores_match_numpy_and_beat_all_foreground(segmenter_run, config):
    workdir, report = segmenter_run["workdir"], segmenter_run["report"]
    variables = segmentation.load_segmenter(config, workdir)
    test_images, test_masks = load_eval_split(config)
    assert test_images.shape == (config.data.synthetic_test_size, RESOLUTION, RESOLUTION, 3)
    truth = test_masks > 0.5
    probabilities = segmenter_lib.predict_masks(variables, test_images, config.segmenter.widths, 25)
    prediction = probabilities > 0.5
    iou = numpy_per_image_iou(prediction, truth)
    assert report["test"]["drc_iou"] == pytest.approx(float(iou.mean()), abs=1e-5)
    assert report["test"]["pixel_accuracy"] == pytest.approx(
        float(np.mean(prediction == truth)), abs=1e-5
    )
    # Baseline: predicting every pixel as foreground gives IoU |G| / (H W) per image.
    baseline = float(np.mean(truth.mean((1, 2))))
    assert report["all_foreground_iou"] == pytest.approx(baseline, abs=1e-6)
    assert 0.05 < baseline < 0.6
    assert report["test"]["drc_iou"] > baseline + 0.1, (report["test"], baseline)


def test_evaluate_mode_scores_the_saved_segmenter_again(segmenter_run, config):
    workdir, report = segmenter_run["workdir"], segmenter_run["report"]
    modes.run_mode("evaluate", config, workdir)  # what --mode=evaluate runs
    with open(os.path.join(workdir, "evaluation.json")) as file:
        evaluation = json.load(file)
    assert set(evaluation) == set(report["test"])
    for name, value in report["test"].items():
        assert evaluation[name] == pytest.approx(value, abs=1e-6), name


# ----------------------------------------------------------------------------------------------
# segment_folder
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def user_images(tmp_path):
    """A folder: a 16x16 PNG, a non-square 40x24 JPEG-free PNG (RGBA), a corrupt PNG, a text
    file."""
    folder = tmp_path / "user_images"
    folder.mkdir()
    rendered = render_synthetic_objects(np.random.default_rng(99), 2, RESOLUTION)
    Image.fromarray(rendered["image"][0]).save(folder / "exact.png")
    big = np.asarray(Image.fromarray(rendered["image"][1]).resize((40, 24), Image.NEAREST))
    rgba = np.concatenate([big, np.full((24, 40, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(folder / "wide.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "notes.txt").write_text("not an image")
    return str(folder), rendered["image"][0]


def test_segment_folder_writes_skips_and_refuses_to_overwrite(
    segmenter_run, config, user_images, tmp_path, caplog
):
    input_dir, exact_image = user_images
    output_dir = str(tmp_path / "masks")
    caplog.set_level(std_logging.WARNING)
    count = segmentation.segment_folder(
        config, segmenter_run["workdir"], input_dir, output_dir, overwrite=False
    )
    assert count == 2
    assert sorted(os.listdir(output_dir)) == [
        "exact_mask.png",
        "exact_overlay.png",
        "wide_mask.png",
        "wide_overlay.png",
    ]
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= std_logging.WARNING)
    assert "broken.png" in warnings

    # The 16 px image is segmented as is: the mask is the thresholded prediction.
    variables = segmentation.load_segmenter(config, segmenter_run["workdir"])
    probability = segmenter_lib.predict_masks(
        variables, exact_image[None].astype(np.float32) / 127.5 - 1.0, config.segmenter.widths, 1
    )[0]
    exact_mask = np.asarray(Image.open(os.path.join(output_dir, "exact_mask.png")))
    np.testing.assert_array_equal(exact_mask, (probability > 0.5).astype(np.uint8) * 255)
    overlay = np.asarray(Image.open(os.path.join(output_dir, "exact_overlay.png"))).astype(int)
    inside = exact_mask == 255
    np.testing.assert_array_equal(overlay[inside], exact_image[inside])
    np.testing.assert_array_less(overlay[~inside], 0.36 * exact_image[~inside] + 1)

    # The 40x24 image: centre crop 24x24, mask at crop size with values in {0, 255}.
    wide_mask = np.asarray(Image.open(os.path.join(output_dir, "wide_mask.png")))
    assert wide_mask.shape == (24, 24)
    assert set(np.unique(wide_mask)) <= {0, 255}
    assert np.asarray(Image.open(os.path.join(output_dir, "wide_overlay.png"))).shape == (24, 24, 3)

    # Existing outputs are kept unless overwrite=True.
    before = {n: os.stat(os.path.join(output_dir, n)).st_mtime_ns for n in os.listdir(output_dir)}
    with pytest.raises(FileExistsError, match="exact_mask.png"):
        segmentation.segment_folder(config, segmenter_run["workdir"], input_dir, output_dir, False)
    after = {n: os.stat(os.path.join(output_dir, n)).st_mtime_ns for n in os.listdir(output_dir)}
    assert after == before
    assert (
        segmentation.segment_folder(
            config, segmenter_run["workdir"], input_dir, output_dir, overwrite=True
        )
        == 2
    )


def test_segment_folder_bad_arguments(segmenter_run, config, tmp_path):
    with pytest.raises(FileNotFoundError, match="--input"):
        segmentation.segment_folder(
            config, segmenter_run["workdir"], str(tmp_path / "nope"), str(tmp_path), False
        )
    with pytest.raises(ValueError, match="--output"):
        segmentation.segment_folder(config, segmenter_run["workdir"], str(tmp_path), None, False)
    with pytest.raises(FileNotFoundError, match="No segmenter"):
        segmentation.segment_folder(
            config, str(tmp_path / "untrained"), str(tmp_path), str(tmp_path / "o"), False
        )
