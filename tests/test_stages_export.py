"""`stages.export` from a real (2-step) GAN checkpoint at 16 px, in process.

The export is a tfds data set: `tfds.builder_from_directory` loads all N pairs, equal to the EMA
generator's layers recomputed here from the seed; masks in {0, 1} and consistent with the soft
masks, composites consistent with fg/bg/mask; deterministic (two exports byte-identical; the
in-memory state gives the checkpoint's bytes), resumable (a deleted shard is re-written
byte-identically, finished shards are not touched), split over 2 simulated processes disjointly
and completely; other settings refuse to mix in.
"""

import glob
import os
import shutil

import numpy as np
import pytest
from loop_helpers import RESOLUTION
from stage_helpers import stage_config, train_tiny_gan

from ilsgan_jax.evaluate import pair_dataset
from ilsgan_jax.stages import export as export_stage
from ilsgan_jax.train import loop

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return stage_config(str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def trained_workdir(config, tmp_path_factory):
    return train_tiny_gan(config, str(tmp_path_factory.mktemp("gan")))


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
    return {key: np.stack([e[key] for e in examples]) for key in export_stage.EXPORT_KEYS}


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
    directory = export_stage.export_pairs(config, trained_workdir["workdir"])
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
    images, masks = export_stage.load_pairs(directory)
    np.testing.assert_allclose(images, pairs["image"] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(masks, pairs["mask"][..., 0])


def test_export_is_deterministic_from_the_seed(first_export, config, trained_workdir, tmp_path):
    workdir = trained_workdir["workdir"]
    again = export_stage.export_pairs(config, workdir, overwrite=True)
    assert shard_bytes(again) == first_export["files"]
    # The in-memory final state (same as the step-2 checkpoint) exports the same bytes.
    networks = loop.builders.build_networks(config)
    state = trained_workdir["result"].state
    from_memory = export_stage.export_pairs(
        config, str(tmp_path / "mem"), state=state, networks=networks
    )
    assert shard_bytes(from_memory) == first_export["files"]
    # A different export seed draws different latents.
    reseeded = config.copy_and_resolve_references()
    reseeded.export.seed = 7
    changed = load_with_tfds(
        export_stage.export_pairs(reseeded, str(tmp_path / "seed7"), state=state, networks=networks)
    )
    assert not np.array_equal(changed["image"], first_export["pairs"]["image"])
    # Resuming into an export made with another seed is refused (the shards would mix).
    with pytest.raises(ValueError, match="seed=7"):
        export_stage.export_pairs(config, str(tmp_path / "seed7"), state=state, networks=networks)


def test_export_resumes_missing_shards_only(first_export, config, trained_workdir, tmp_path):
    workdir = str(tmp_path / "resume")
    shutil.copytree(trained_workdir["workdir"], workdir)
    shutil.rmtree(os.path.join(workdir, "export"), ignore_errors=True)
    directory = export_stage.export_pairs(config, workdir)
    names = sorted(first_export["files"])
    os.remove(os.path.join(directory, names[1]))
    kept = {
        name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in (names[0], names[2])
    }
    export_stage.export_pairs(config, workdir)
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
        written[process] = export_stage.write_export_shards(
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
    pair_dataset.write_metadata(merged, RESOLUTION, export_stage.export_shard_lengths(config))
    np.testing.assert_array_equal(load_with_tfds(merged)["image"], first_export["pairs"]["image"])
    with pytest.raises(ValueError, match="process_index"):
        export_stage.write_export_shards(
            config, merged, state, networks, process_index=2, process_count=2
        )


def test_export_without_checkpoint_names_the_directory(config, tmp_path):
    with pytest.raises(FileNotFoundError, match="No GAN checkpoint in .*checkpoints"):
        export_stage.export_pairs(config, str(tmp_path / "empty"))
