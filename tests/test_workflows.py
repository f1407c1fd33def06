"""The segmentation stage (issue 5) end to end at 16 px, in process.

- export -> train_segmenter -> score: pairs written in the export format from the synthetic
  renderer (exact masks; a few GAN steps would not give object masks), a U-Net of widths (4, 8)
  trained for a few hundred steps. The report exists, has its keys, its test metrics match a NumPy
  recomputation from the saved segmenter, and the per-image IoU beats the all-foreground baseline.
- export_pairs from a real (2-step) GAN checkpoint: format, masks in {0, 1} and consistent with
  the soft masks, composites consistent with fg/bg/mask, deterministic from the seed (two exports
  equal; the in-memory state gives the same pairs as the checkpoint), resumable (a deleted shard
  is re-written identically, finished shards are not touched).
- segment_folder: masks and overlays for the good images, a corrupt file skipped with a warning,
  no overwriting without overwrite=True.
"""

import glob
import json
import logging as std_logging
import os
import shutil

import flax.serialization
import numpy as np
import pytest
from loop_helpers import RESOLUTION, checkpoint_steps, tiny_loop_config
from PIL import Image

from ilsgan_jax import workflows
from ilsgan_jax.data.synthetic_render import render_synthetic_objects
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.train import loop

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
    "segmenter_seconds",
}
TEST_METRIC_KEYS = {"drc_iou", "drc_dice", "iou", "iou_bg", "miou", "pixel_accuracy"}

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def config(data_dir):
    config = tiny_loop_config(data_dir, num_steps=2, log_every=2, sample_every=0, checkpoint_every=2)
    config.segmenter.num_steps = 240
    config.segmenter.eval_every_steps = 80
    config.segmenter.lr_decay_steps = 1000
    return config


# ----------------------------------------------------------------------------------------------
# export (stub) -> train_segmenter -> score
# ----------------------------------------------------------------------------------------------
def write_stub_export(workdir: str, num_pairs: int, shard_size: int, seed: int) -> dict:
    """Synthetic-renderer pairs in export_pairs' format (`export/shard_XXXXX.npz`)."""
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
    out_dir = os.path.join(workdir, "export")
    os.makedirs(out_dir)
    for shard, start in enumerate(range(0, num_pairs, shard_size)):
        np.savez(
            os.path.join(out_dir, f"shard_{shard:05d}.npz"),
            **{key: value[start : start + shard_size] for key, value in arrays.items()},
        )
    return arrays


@pytest.fixture(scope="module")
def segmenter_run(config, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("segmenter"))
    stub = write_stub_export(workdir, NUM_STUB_PAIRS, STUB_SHARD, seed=1234)
    report = workflows.train_and_score_segmenter(config, workdir)
    return dict(workdir=workdir, report=report, stub=stub)


def test_load_pairs_reads_the_export_format(segmenter_run):
    images, masks = workflows.load_pairs(os.path.join(segmenter_run["workdir"], "export"))
    stub = segmenter_run["stub"]
    assert images.shape == (NUM_STUB_PAIRS, RESOLUTION, RESOLUTION, 3)
    assert images.dtype == np.float32 and masks.dtype == np.float32
    np.testing.assert_allclose(images, stub["image"] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(masks, stub["mask"][..., 0])


def test_report_written_with_its_keys(segmenter_run, config):
    workdir, report = segmenter_run["workdir"], segmenter_run["report"]
    with open(os.path.join(workdir, "segmenter", "report.json")) as file:
        on_disk = json.load(file)
    assert on_disk == json.loads(json.dumps(report))
    assert set(report) == REPORT_KEYS
    assert TEST_METRIC_KEYS <= set(report["test"])
    assert report["num_synthetic_pairs"] == NUM_STUB_PAIRS
    assert report["num_test_images"] == config.data.synthetic_test_size
    assert report["resolution"] == RESOLUTION and report["data"] == "synthetic"
    assert report["best_val_step"] in (80, 160, 240)
    for name in TEST_METRIC_KEYS:
        assert 0.0 <= report["test"][name] <= 1.0, name
    # The previews grid: 4 rows (image, truth, prediction, cutout) of 16 test images, 1 px gaps.
    preview = np.asarray(Image.open(os.path.join(workdir, "previews", "segmentation.png")))
    assert preview.shape == (4 * (RESOLUTION + 1) + 1, 16 * (RESOLUTION + 1) + 1, 3)
    assert os.path.exists(os.path.join(workdir, "segmenter", "best.msgpack"))


def numpy_per_image_iou(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[N, H, W] bool x2 -> [N]; 1 where both masks are empty."""
    inter = np.logical_and(prediction, target).sum((1, 2))
    union = np.logical_or(prediction, target).sum((1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def test_scores_match_numpy_and_beat_all_foreground(segmenter_run, config):
    workdir, report = segmenter_run["workdir"], segmenter_run["report"]
    with open(os.path.join(workdir, "segmenter", "best.msgpack"), "rb") as file:
        variables = flax.serialization.msgpack_restore(file.read())
    test_images, test_masks = workflows.load_eval_split(config)
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


# ----------------------------------------------------------------------------------------------
# export_pairs from a real checkpoint
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_workdir(config, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("gan"))
    result = loop.train_and_evaluate(config, workdir)
    assert checkpoint_steps(workdir) == [2]
    return dict(workdir=workdir, result=result)


def read_shards(export_dir: str) -> dict[str, dict[str, np.ndarray]]:
    shards = {}
    for path in sorted(glob.glob(os.path.join(export_dir, "shard_*.npz"))):
        with np.load(path) as shard:
            shards[os.path.basename(path)] = {key: shard[key] for key in shard.files}
    return shards


def assert_shards_equal(actual, expected):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert sorted(actual[name]) == sorted(expected[name]), name
        for key in expected[name]:
            np.testing.assert_array_equal(actual[name][key], expected[name][key], err_msg=name)


@pytest.fixture(scope="module")
def first_export(config, trained_workdir):
    export_dir = workflows.export_pairs(config, trained_workdir["workdir"])
    return read_shards(export_dir)


def test_export_format_and_mask_consistency(first_export, config):
    num_pairs, shard_size = config.export.num_pairs, config.export.shard_size  # 20, 8
    assert sorted(first_export) == ["shard_00000.npz", "shard_00001.npz", "shard_00002.npz"]
    sizes = [first_export[name]["image"].shape[0] for name in sorted(first_export)]
    assert sizes == [shard_size, shard_size, num_pairs - 2 * shard_size]
    for name, shard in first_export.items():
        assert set(shard) == set(workflows.EXPORT_KEYS), name
        count = shard["image"].shape[0]
        for key in ("image", "fg_rgb", "bg_rgb"):
            assert shard[key].shape == (count, RESOLUTION, RESOLUTION, 3) and shard[key].dtype == np.uint8
        for key in ("mask", "soft_mask"):
            assert shard[key].shape == (count, RESOLUTION, RESOLUTION, 1) and shard[key].dtype == np.uint8
        mask, soft = shard["mask"], shard["soft_mask"].astype(np.int32)
        assert set(np.unique(mask)) <= {0, 1}
        # mask = (soft > 0.5), soft_mask = round(255 soft): 1 -> >= 128, 0 -> <= 128.
        assert np.all(soft[mask == 1] >= 128) and np.all(soft[mask == 0] <= 128)
        # The composite is soft * fg + (1 - soft) * bg (up to uint8 quantisation of each term).
        alpha = soft / 255.0
        fg = (shard["fg_rgb"].astype(np.float64) - 127.5) / 127.5
        bg = (shard["bg_rgb"].astype(np.float64) - 127.5) / 127.5
        recomposed = np.clip(np.floor((alpha * fg + (1 - alpha) * bg) * 127.5 + 128), 0, 255)
        unclipped = (shard["fg_rgb"] % 255 != 0) & (shard["bg_rgb"] % 255 != 0)
        difference = np.abs(recomposed - shard["image"])[unclipped]
        assert difference.max() <= 2.5, name
    images = np.concatenate([first_export[n]["image"] for n in sorted(first_export)])
    assert len({image.tobytes() for image in images}) == num_pairs  # distinct latents


def test_export_is_deterministic_from_the_seed(first_export, config, trained_workdir, tmp_path):
    workdir = trained_workdir["workdir"]
    again = read_shards(workflows.export_pairs(config, workdir, overwrite=True))
    assert_shards_equal(again, first_export)
    # The in-memory final state (same as the step-2 checkpoint) exports the same pairs.
    other = str(tmp_path / "in_memory")
    networks = loop.builders.build_networks(config)
    from_memory = workflows.export_pairs(
        config, other, state=trained_workdir["result"].state, networks=networks
    )
    assert_shards_equal(read_shards(from_memory), first_export)
    # A different export seed draws different latents.
    reseeded = config.copy_and_resolve_references()
    reseeded.export.seed = 7
    changed = read_shards(
        workflows.export_pairs(reseeded, str(tmp_path / "seed7"), state=trained_workdir["result"].state, networks=networks)
    )
    assert not np.array_equal(changed["shard_00000.npz"]["image"], first_export["shard_00000.npz"]["image"])


def test_export_resumes_missing_shards_only(first_export, config, trained_workdir, tmp_path):
    workdir = str(tmp_path / "resume")
    shutil.copytree(trained_workdir["workdir"], workdir)
    export_dir = os.path.join(workdir, "export")
    shutil.rmtree(export_dir, ignore_errors=True)
    workflows.export_pairs(config, workdir)
    os.remove(os.path.join(export_dir, "shard_00001.npz"))
    kept = {name: os.stat(os.path.join(export_dir, name)).st_mtime_ns for name in ("shard_00000.npz", "shard_00002.npz")}
    workflows.export_pairs(config, workdir)
    assert_shards_equal(read_shards(export_dir), first_export)
    for name, mtime in kept.items():
        assert os.stat(os.path.join(export_dir, name)).st_mtime_ns == mtime, name
    assert not [n for n in os.listdir(export_dir) if ".tmp" in n]  # no temp leftovers


def test_export_without_checkpoint_names_the_directory(config, tmp_path):
    with pytest.raises(FileNotFoundError, match="No GAN checkpoint in .*checkpoints"):
        workflows.export_pairs(config, str(tmp_path / "empty"))


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
    count = workflows.segment_folder(
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
    with open(os.path.join(segmenter_run["workdir"], "segmenter", "best.msgpack"), "rb") as file:
        variables = flax.serialization.msgpack_restore(file.read())
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
        workflows.segment_folder(config, segmenter_run["workdir"], input_dir, output_dir, False)
    after = {n: os.stat(os.path.join(output_dir, n)).st_mtime_ns for n in os.listdir(output_dir)}
    assert after == before
    assert workflows.segment_folder(
        config, segmenter_run["workdir"], input_dir, output_dir, overwrite=True
    ) == 2


def test_segment_folder_bad_arguments(segmenter_run, config, tmp_path):
    with pytest.raises(FileNotFoundError, match="--input"):
        workflows.segment_folder(config, segmenter_run["workdir"], str(tmp_path / "nope"), str(tmp_path), False)
    with pytest.raises(ValueError, match="--output"):
        workflows.segment_folder(config, segmenter_run["workdir"], str(tmp_path), None, False)
    with pytest.raises(FileNotFoundError, match="No segmenter"):
        workflows.segment_folder(config, str(tmp_path / "untrained"), str(tmp_path), str(tmp_path / "o"), False)
