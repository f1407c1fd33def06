"""The segmentation stage (issue 5) end to end at 16 px, in process.

- export -> train_segmenter -> score: pairs written in the export format from the synthetic
  renderer (exact masks; a few GAN steps would not give object masks), a U-Net of widths (4, 8)
  trained for a few hundred steps. The report exists, has its keys, its test metrics match a NumPy
  recomputation from the saved segmenter, and the per-image IoU beats the all-foreground baseline.
- export_pairs from a real (2-step) GAN checkpoint, a tfds data set: `tfds.builder_from_directory`
  loads all N pairs, equal to the EMA generator's layers recomputed here from the seed; masks in
  {0, 1} and consistent with the soft masks, composites consistent with fg/bg/mask; deterministic
  (two exports byte-identical; the in-memory state gives the checkpoint's bytes), resumable (a
  deleted shard is re-written byte-identically, finished shards are not touched), split over 2
  simulated processes disjointly and completely; other settings refuse to mix in.
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
from ilsgan_jax.evaluate import pair_dataset, training_fid
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
    "synthetic_mask_coverage",
    "synthetic_full_fraction",
    "segmenter_seconds",
}
TEST_METRIC_KEYS = {"drc_iou", "drc_dice", "iou", "iou_bg", "miou", "pixel_accuracy"}

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def config(data_dir):
    config = tiny_loop_config(
        data_dir, num_steps=2, log_every=2, sample_every=0, checkpoint_every=2
    )
    config.segmenter.num_steps = 240
    config.segmenter.eval_every_steps = 80
    config.segmenter.lr_decay_steps = 1000
    return config


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
    report = workflows.train_and_score_segmenter(config, workdir)
    return dict(workdir=workdir, report=report, stub=stub)


def test_load_pairs_reads_the_export_format(segmenter_run):
    images, masks = workflows.load_pairs(
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
    assert os.path.exists(os.path.join(workdir, "segmenter", "best.msgpack"))


def demo_summary(full_fraction: float, images_seen: int) -> dict:
    return {
        "synthetic_full_fraction": full_fraction,
        "layers_separated": full_fraction < workflows.MAX_FULL_FRACTION_SEPARATED,
        "gan_images_seen": images_seen,
        "gan_images_this_run": images_seen // 2,  # resumed half-way
        "gan_seconds": 1000.0,
    }


def test_demo_separation_advice(config):
    """Separated: one line. Not separated: the images seen and rate, and how to continue: run
    again while below total_kimg, else raise total_kimg (naming its value)."""
    config = config.copy_and_resolve_references()
    config.train.total_kimg = 80.0
    total = 80_000
    separated = workflows.separation_advice(demo_summary(0.02, total), config, "/w")
    assert len(separated) == 1 and "separated (2% of the masks" in separated[0]
    early = "\n".join(workflows.separation_advice(demo_summary(0.97, 45_200), config, "/w"))
    assert "NOT separated yet: 97%" in early and "45.2 kimg, this run at 23 images/s" in early
    assert "run the same command again" in early and "/w/checkpoints" in early
    capped = "\n".join(workflows.separation_advice(demo_summary(0.97, total), config, "/w"))
    assert f"raise --config.train.total_kimg (now {config.train.total_kimg:g})" in capped


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


def shard_bytes(directory: str) -> dict[str, bytes]:
    """The TFRecord shard files of an export: name -> file bytes."""
    return {
        os.path.basename(path): open(path, "rb").read()
        for path in sorted(glob.glob(os.path.join(directory, "*.tfrecord-*")))
    }


def load_with_tfds(directory: str) -> dict[str, np.ndarray]:
    """All pairs through tfds's own reader (what a user does), in export order (files read one
    after the other): key -> uint8 [N, ...]."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(directory)
    dataset = builder.as_dataset(
        split="train", shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1)
    )
    examples = list(tfds.as_numpy(dataset))
    return {key: np.stack([e[key] for e in examples]) for key in workflows.EXPORT_KEYS}


def expected_layers(config, state, networks) -> dict[str, np.ndarray]:
    """The EMA generator's float layers of the export, recomputed here: shard i draws
    z ~ N(0, 1) [shard_size, z_dim] from fold_in(key(export.seed), i); truncation 1, constant
    noise; the last shard keeps its first num_pairs - i * shard_size rows."""
    import jax

    export = config.export
    variables = {"params": state.g_ema_params, **state.g_ema_buffers}
    out = {key: [] for key in ("composite", "fg_rgb", "bg_rgb", "mask")}
    for shard, start in enumerate(range(0, export.num_pairs, export.shard_size)):
        key = jax.random.fold_in(jax.random.key(export.seed), shard)
        z = jax.random.normal(key, (export.shard_size, config.model.z_dim))
        layers = networks.generator.apply(variables, z, noise_mode="const")
        count = min(export.shard_size, export.num_pairs - start)
        for name in out:
            out[name].append(np.asarray(layers[name])[:count])
    return {name: np.concatenate(values).astype(np.float64) for name, values in out.items()}


def assert_quantised_from(actual_uint8: np.ndarray, values: np.ndarray, scale, offset, name):
    """actual == floor/round of values * scale + offset up to float noise (1e-3 of a level)."""
    level = values * scale + offset
    actual = actual_uint8.astype(np.float64)
    clipped = np.clip(level, 0, 255)
    assert np.all(actual >= np.floor(clipped - 1e-3)) and np.all(
        actual <= np.ceil(clipped + 1e-3)
    ), name


@pytest.fixture(scope="module")
def first_export(config, trained_workdir):
    directory = workflows.export_pairs(config, trained_workdir["workdir"])
    return dict(directory=directory, files=shard_bytes(directory), pairs=load_with_tfds(directory))


def test_export_is_a_tfds_dataset_of_the_generator_layers(first_export, config, trained_workdir):
    num_pairs, shard_size = config.export.num_pairs, config.export.shard_size  # 20, 8
    directory = first_export["directory"]
    assert directory == os.path.join(trained_workdir["workdir"], "export", "ilsgan_pairs", "1.0.0")
    assert sorted(first_export["files"]) == [
        f"ilsgan_pairs-train.tfrecord-0000{i}-of-00003" for i in range(3)
    ]
    import tensorflow_datasets as tfds

    info = tfds.builder_from_directory(directory).info
    assert info.splits["train"].shard_lengths == [
        shard_size,
        shard_size,
        num_pairs - 2 * shard_size,
    ]
    pairs = first_export["pairs"]
    for key in ("image", "fg_rgb", "bg_rgb"):
        assert (
            pairs[key].shape == (num_pairs, RESOLUTION, RESOLUTION, 3)
            and pairs[key].dtype == np.uint8
        )
    for key in ("mask", "soft_mask"):
        assert (
            pairs[key].shape == (num_pairs, RESOLUTION, RESOLUTION, 1)
            and pairs[key].dtype == np.uint8
        )

    # Values: the generator's layers for the same seed, quantised as documented.
    expected = expected_layers(
        config, trained_workdir["result"].state, loop.builders.build_networks(config)
    )
    assert_quantised_from(pairs["image"], expected["composite"], 127.5, 128.0, "image")
    assert_quantised_from(pairs["fg_rgb"], expected["fg_rgb"], 127.5, 128.0, "fg_rgb")
    assert_quantised_from(pairs["bg_rgb"], expected["bg_rgb"], 127.5, 128.0, "bg_rgb")
    assert np.all(np.abs(pairs["soft_mask"] - expected["mask"] * 255) <= 0.5 + 1e-3)
    decided = np.abs(expected["mask"] - 0.5) > 1e-5
    np.testing.assert_array_equal(pairs["mask"][decided], (expected["mask"] > 0.5)[decided])
    assert set(np.unique(pairs["mask"])) <= {0, 1}
    assert len({image.tobytes() for image in pairs["image"]}) == num_pairs  # distinct latents

    # The composite is soft * fg + (1 - soft) * bg (up to uint8 quantisation of each term).
    alpha = pairs["soft_mask"] / 255.0
    fg = (pairs["fg_rgb"].astype(np.float64) - 127.5) / 127.5
    bg = (pairs["bg_rgb"].astype(np.float64) - 127.5) / 127.5
    recomposed = np.clip(np.floor((alpha * fg + (1 - alpha) * bg) * 127.5 + 128), 0, 255)
    unclipped = (pairs["fg_rgb"] % 255 != 0) & (pairs["bg_rgb"] % 255 != 0)
    assert np.abs(recomposed - pairs["image"])[unclipped].max() <= 2.5

    # load_pairs (what the segmenter trains on) reads the same data through tf.data.
    images, masks = workflows.load_pairs(directory)
    np.testing.assert_allclose(images, pairs["image"] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(masks, pairs["mask"][..., 0])


def test_export_is_deterministic_from_the_seed(first_export, config, trained_workdir, tmp_path):
    workdir = trained_workdir["workdir"]
    again = workflows.export_pairs(config, workdir, overwrite=True)
    assert shard_bytes(again) == first_export["files"]
    # The in-memory final state (same as the step-2 checkpoint) exports the same bytes.
    networks = loop.builders.build_networks(config)
    state = trained_workdir["result"].state
    from_memory = workflows.export_pairs(
        config, str(tmp_path / "mem"), state=state, networks=networks
    )
    assert shard_bytes(from_memory) == first_export["files"]
    # A different export seed draws different latents.
    reseeded = config.copy_and_resolve_references()
    reseeded.export.seed = 7
    changed = load_with_tfds(
        workflows.export_pairs(reseeded, str(tmp_path / "seed7"), state=state, networks=networks)
    )
    assert not np.array_equal(changed["image"], first_export["pairs"]["image"])
    # Resuming into an export made with another seed is refused (the shards would mix).
    with pytest.raises(ValueError, match="seed=7"):
        workflows.export_pairs(config, str(tmp_path / "seed7"), state=state, networks=networks)


def test_export_resumes_missing_shards_only(first_export, config, trained_workdir, tmp_path):
    workdir = str(tmp_path / "resume")
    shutil.copytree(trained_workdir["workdir"], workdir)
    shutil.rmtree(os.path.join(workdir, "export"), ignore_errors=True)
    directory = workflows.export_pairs(config, workdir)
    names = sorted(first_export["files"])
    os.remove(os.path.join(directory, names[1]))
    kept = {
        name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in (names[0], names[2])
    }
    workflows.export_pairs(config, workdir)
    assert shard_bytes(directory) == first_export["files"]
    for name, mtime in kept.items():
        assert os.stat(os.path.join(directory, name)).st_mtime_ns == mtime, name
    assert not [n for n in os.listdir(directory) if ".tmp" in n]  # no temp leftovers
    reloaded = load_with_tfds(directory)
    for key, values in first_export["pairs"].items():
        np.testing.assert_array_equal(reloaded[key], values, err_msg=key)


def test_export_splits_over_processes(first_export, config, trained_workdir, tmp_path):
    """Two simulated processes: shards {0, 2} and {1}; together the single-process bytes."""
    state = trained_workdir["result"].state
    networks = loop.builders.build_networks(config)
    written, files = {}, {}
    for process in (0, 1):
        out_dir = str(tmp_path / f"process{process}")
        written[process] = workflows.write_export_shards(
            config, out_dir, state, networks, process_index=process, process_count=2
        )
        files[process] = shard_bytes(pair_dataset.dataset_dir(out_dir))
    assert written == {0: [0, 2], 1: [1]}
    assert not set(files[0]) & set(files[1])
    assert {**files[0], **files[1]} == first_export["files"]
    # Merged into one directory, process 0's metadata step makes it loadable.
    merged = pair_dataset.dataset_dir(str(tmp_path / "process0"))
    for name, data in files[1].items():
        with open(os.path.join(merged, name), "wb") as file:
            file.write(data)
    with pytest.raises(ValueError, match="missing shard"):
        pair_dataset.write_metadata(merged, RESOLUTION, [8, 8, 4, 4])
    pair_dataset.write_metadata(merged, RESOLUTION, workflows.export_shard_lengths(config))
    np.testing.assert_array_equal(load_with_tfds(merged)["image"], first_export["pairs"]["image"])
    with pytest.raises(ValueError, match="process_index"):
        workflows.write_export_shards(
            config, merged, state, networks, process_index=2, process_count=2
        )


def test_export_without_checkpoint_names_the_directory(config, tmp_path):
    with pytest.raises(FileNotFoundError, match="No GAN checkpoint in .*checkpoints"):
        workflows.export_pairs(config, str(tmp_path / "empty"))


# ----------------------------------------------------------------------------------------------
# --mode=fid and --mode=mine on the trained checkpoint
# ----------------------------------------------------------------------------------------------
FID_FEATURE_DIM = 8


def projection_features(batch_size: int):
    """A small stand-in for Inception: a fixed random projection of the flattened images
    (uint8-range values as the real extractor sees them) to 8 features; float64 [B, 8]."""
    weights = np.random.default_rng(5).normal(size=(RESOLUTION * RESOLUTION * 3, FID_FEATURE_DIM))

    def extract(images):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            images = np.floor(np.clip(images * 127.5 + 128.0, 0, 255))
        assert images.shape[0] == batch_size
        return images.reshape(batch_size, -1).astype(np.float64) / 255.0 @ weights

    return extract


@pytest.fixture()
def fid_config(config):
    fid_config = config.copy_and_resolve_references()
    fid_config.eval.fid_full_num_images = 40
    fid_config.eval.batch_size = 16
    fid_config.eval.kid_subsets = 5
    return fid_config


def test_fid_mode_report_equals_a_direct_computation(
    fid_config, trained_workdir, tmp_path, monkeypatch
):
    import jax

    from ilsgan_jax.evaluate import fid as fid_lib

    monkeypatch.setenv("ILSGAN_JAX_CACHE", str(tmp_path / "cache"))
    workdir = trained_workdir["workdir"]
    extract = projection_features(16)
    report = workflows.run_fid(fid_config, workdir, feature_extractor=extract)
    with open(os.path.join(workdir, "fid.json")) as file:
        assert json.load(file) == report
    assert report["metric"] == "fid40_full" and report["kid_metric"] == "kid40_full"
    assert report["num_images"] == 40 and report["checkpoint_step"] == 2
    assert report["num_real_images"] == fid_config.data.synthetic_train_size  # the full split
    # The real statistics are cached per (data set, resolution, split).
    assert os.path.isfile(fid_lib.stats_cache_path("synthetic", RESOLUTION, "train", None))

    # Direct: every training image; 3 batches of 16 generated images, batch i from
    # fold_in(key(config.seed), i) split into (latents, noise), first 40 kept.
    real = np.concatenate(
        [
            extract(fid_lib._padded(b, 16))[: b.shape[0]]
            for b in training_fid.real_images(fid_config)
        ]
    )
    state = trained_workdir["result"].state
    generator = loop.builders.build_networks(fid_config).generator
    variables = {"params": state.g_ema_params, **state.g_ema_buffers}
    generated = []
    for batch in range(3):
        key = jax.random.fold_in(jax.random.key(fid_config.seed), batch)
        latent_key, noise_key = jax.random.split(key)
        z = jax.random.normal(latent_key, (16, fid_config.model.z_dim))
        images = generator.apply(variables, z, rngs={"noise": noise_key})["composite"]
        generated.append(extract(np.asarray(images)))
    generated = np.concatenate(generated)[:40]
    expected_fid = fid_lib.frechet_distance(
        generated.mean(0), np.cov(generated.T, bias=True), real.mean(0), np.cov(real.T, bias=True)
    )
    expected_kid = fid_lib.kernel_inception_distance(
        generated, real, num_subsets=5, max_subset_size=1000, seed=fid_config.seed
    )
    assert report["fid"] == pytest.approx(expected_fid, rel=1e-4)
    assert report["kid"] == pytest.approx(expected_kid, rel=1e-3, abs=1e-7)
    assert report["fid"] > 0


def test_fid_mode_defaults_and_missing_inception(config, trained_workdir, tmp_path, monkeypatch):
    assert config.eval.fid_full_num_images == 50_000
    assert workflows.metric_name("fid", 50_000) == "fid50k_full"
    assert workflows.metric_name("kid", 10_000) == "kid10k_full"
    monkeypatch.setenv("ILSGAN_JAX_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(FileNotFoundError, match="python -m ilsgan_jax.evaluate.convert_inception"):
        workflows.run_fid(config, trained_workdir["workdir"])


def region_layers(seed: int, count: int = 3000, rho: float = 0.9):
    """2x2 px layers, mask = left column. Inside the mask fg and bg are independent normals;
    outside it the foreground is rho * bg + sqrt(1 - rho^2) * noise. So I(b m; f m) = 0 and
    I(f (1 - m); b (1 - m)) = -6/2 log(1 - rho^2) = 4.98 nats (6 correlated dimensions)."""
    rng = np.random.default_rng(seed)
    fg = rng.normal(size=(count, 2, 2, 3)) * 0.5
    bg = rng.normal(size=(count, 2, 2, 3)) * 0.5
    mask = np.zeros((count, 2, 2, 1))
    mask[:, :, :1] = 1.0
    fg = np.where(mask == 0, rho * bg + np.sqrt(1 - rho**2) * fg, fg)
    true_mi = -0.5 * np.log(1 - rho**2) * 6
    return fg.astype(np.float32), bg.astype(np.float32), mask.astype(np.float32), true_mi


def test_mine_report_zero_for_independent_positive_for_dependent():
    import jax
    import ml_collections

    fg, bg, mask, true_mi = region_layers(0)
    mine_config = ml_collections.ConfigDict(
        dict(hidden_sizes=(64,), learning_rate=1e-3, batch_size=256, num_steps=1000, ema_decay=None)
    )
    report = workflows.region_mi_report(jax.random.key(0), fg, bg, mask, mine_config)
    estimates = report["estimates_nats"]
    assert set(estimates) == set(workflows.MINE_PAIRS) == set(report["pairs"])
    assert abs(estimates["mi_bg_invisible_fg_visible"]) < 0.1, estimates
    assert 0.6 * true_mi < estimates["mi_fg_invisible_bg_visible"] < true_mi + 0.2, estimates
    assert report["settings"]["num_samples"] == 3000
    assert report["settings"]["hidden_sizes"] == [64]


def test_mine_mode_writes_its_report(config, trained_workdir):
    import jax

    mine_config = config.copy_and_resolve_references()
    mine_config.mine.num_samples = 40
    mine_config.mine.batch_size = 16
    mine_config.mine.hidden_sizes = (8,)
    mine_config.mine.num_steps = 30
    mine_config.eval.batch_size = 16
    workdir = trained_workdir["workdir"]
    report_path = os.path.join(workdir, "mine_report.json")
    assert not os.path.exists(report_path)
    workflows.run_mode("mine", mine_config, workdir)  # what --mode=mine runs
    with open(report_path) as file:
        report = json.load(file)
    assert set(report["estimates_nats"]) == set(workflows.MINE_PAIRS)
    assert report["checkpoint_step"] == 2 and report["resolution"] == RESOLUTION
    for name in ("num_samples", "batch_size", "num_steps", "learning_rate", "seed"):
        assert report["settings"][name] == mine_config.mine[name], name
    # The same estimates from layers recomputed here: latents of batch i from
    # fold_in(split(key(seed))[0], i), constant noise; the critic from split(...)[1].
    latent_key, critic_key = jax.random.split(jax.random.key(mine_config.mine.seed))
    state = trained_workdir["result"].state
    generator = loop.builders.build_networks(mine_config).generator
    variables = {"params": state.g_ema_params, **state.g_ema_buffers}
    layers = [
        generator.apply(
            variables,
            jax.random.normal(jax.random.fold_in(latent_key, batch), (16, mine_config.model.z_dim)),
            noise_mode="const",
        )
        for batch in range(3)
    ]
    fg, bg, mask = (
        np.concatenate([np.asarray(batch[name]) for batch in layers])[:40]
        for name in ("fg_rgb", "bg_rgb", "mask")
    )
    expected = workflows.region_mi_report(critic_key, fg, bg, mask, mine_config.mine)
    for name, value in expected["estimates_nats"].items():
        assert np.isfinite(report["estimates_nats"][name])
        assert report["estimates_nats"][name] == pytest.approx(value, abs=1e-3), name


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
    assert (
        workflows.segment_folder(
            config, segmenter_run["workdir"], input_dir, output_dir, overwrite=True
        )
        == 2
    )


def test_segment_folder_bad_arguments(segmenter_run, config, tmp_path):
    with pytest.raises(FileNotFoundError, match="--input"):
        workflows.segment_folder(
            config, segmenter_run["workdir"], str(tmp_path / "nope"), str(tmp_path), False
        )
    with pytest.raises(ValueError, match="--output"):
        workflows.segment_folder(config, segmenter_run["workdir"], str(tmp_path), None, False)
    with pytest.raises(FileNotFoundError, match="No segmenter"):
        workflows.segment_folder(
            config, str(tmp_path / "untrained"), str(tmp_path), str(tmp_path / "o"), False
        )
