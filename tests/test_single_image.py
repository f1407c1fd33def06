"""The one-image random-crop source: shapes, range, determinism, resumption, crops, errors; the
built-in multi-object pictures and their per-object masks."""

import itertools

import ml_collections
import numpy as np
import PIL.Image
import pytest

from ilsgan_jax.data import builtin_images, single_image

RES = 16


def write_image(path, array):
    PIL.Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    return write_image(tmp_path / "cluster.png", rng.integers(0, 256, (40, 56, 3), np.uint8))


def data_config(path, **overrides):
    fields = dict(
        image_path=path,
        builtin_image=None,
        crop_fraction=(0.3, 0.6),
        resolution=RES,
        mirror=True,
        prefetch=1,
        num_parallel_calls=1,
    )
    return ml_collections.ConfigDict(dict(fields, **overrides))


def take(iterator, count):
    return [batch["image"] for batch in itertools.islice(iterator, count)]


def make(config, **kwargs):
    kwargs = dict(dict(global_batch_size=4, seed=3, process_index=0, process_count=1), **kwargs)
    return single_image.create_single_image_iterator(config, **kwargs)


def test_shapes_range_and_determinism(image_file):
    config = data_config(image_file)
    first = take(make(config), 3)
    again = take(make(config), 3)
    for batch, repeat in zip(first, again, strict=True):
        assert batch.shape == (4, RES, RES, 3) and batch.dtype == np.float32
        assert batch.min() >= -1.0 and batch.max() <= 1.0
        np.testing.assert_array_equal(batch, repeat)
    # uint8 values mapped to [-1, 1]: every value is k * 2 / 255 - 1 for an integer k.
    levels = (first[0] + 1.0) * 127.5
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    # Crops differ from each other and from another seed's.
    assert np.abs(first[0][0] - first[0][1]).max() > 0.1
    assert np.abs(first[0] - take(make(config, seed=4), 1)[0]).max() > 0.1


def test_resumes_exactly_at_a_step(image_file):
    config = data_config(image_file)
    from_zero = take(make(config), 5)
    resumed = take(make(config, start_step=3), 2)
    np.testing.assert_array_equal(resumed[0], from_zero[3])
    np.testing.assert_array_equal(resumed[1], from_zero[4])


def test_processes_share_the_global_batch(image_file):
    config = data_config(image_file)
    whole = take(make(config), 2)
    halves = [take(make(config, process_index=p, process_count=2), 2) for p in range(2)]
    for step in range(2):
        np.testing.assert_array_equal(
            np.concatenate([halves[0][step], halves[1][step]]), whole[step]
        )


def test_whole_image_crop_without_flip_is_the_image(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (RES, RES, 3), np.uint8)
    path = write_image(tmp_path / "square.png", array)
    batch = take(make(data_config(path, crop_fraction=1.0, mirror=False)), 1)[0]
    expected = array.astype(np.float32) * (2.0 / 255.0) - 1.0
    for image in batch:
        np.testing.assert_allclose(image, expected, atol=1e-6)


def test_flips_are_mirror_images(tmp_path):
    array = np.random.default_rng(2).integers(0, 256, (RES, RES, 3), np.uint8)
    path = write_image(tmp_path / "square.png", array)
    batch = take(make(data_config(path, crop_fraction=1.0), global_batch_size=16), 1)[0]
    expected = array.astype(np.float32) * (2.0 / 255.0) - 1.0
    flipped = [bool(np.allclose(image, expected[:, ::-1], atol=1e-6)) for image in batch]
    plain = [bool(np.allclose(image, expected, atol=1e-6)) for image in batch]
    assert all(
        f != p for f, p in zip(flipped, plain, strict=True)
    )  # each is exactly one of the two
    assert 0 < sum(flipped) < 16


def test_crops_come_from_the_image(tmp_path):
    """A crop of a fixed side with R equal to that side needs no resampling: it is a window."""
    array = np.random.default_rng(3).integers(0, 256, (32, 24, 3), np.uint8)
    path = write_image(tmp_path / "tall.png", array)
    config = data_config(path, crop_fraction=RES / 24, mirror=False)
    batch = take(make(config), 1)[0]
    windows = {
        (top, left): array[top : top + RES, left : left + RES].astype(np.float32) * (2 / 255) - 1
        for top in range(32 - RES + 1)
        for left in range(24 - RES + 1)
    }
    positions = set()
    for image in batch:
        matches = [key for key, window in windows.items() if np.allclose(image, window, atol=1e-6)]
        assert len(matches) == 1
        positions.add(matches[0])
    assert len(positions) > 1


def test_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match="data.image_path: no such file"):
        make(data_config(str(tmp_path / "nowhere.png")))
    with pytest.raises(ValueError, match="data.image_path must name"):
        make(data_config(None))


def test_unreadable_file_raises(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot decode .*broken.png"):
        make(data_config(str(path)))


@pytest.mark.parametrize("fraction", [0.0, (0.5, 0.2), (0.5, 1.5)])
def test_bad_crop_fraction_raises(image_file, fraction):
    with pytest.raises(ValueError, match="data.crop_fraction"):
        make(data_config(image_file, crop_fraction=fraction))


def test_the_pipeline_random_crop_is_refused(image_file):
    """data.random_crop_scale belongs to the file pipeline; this source crops by crop_fraction."""
    make(data_config(image_file, random_crop_scale=1.0))
    with pytest.raises(ValueError, match="data.random_crop_scale"):
        make(data_config(image_file, random_crop_scale=1.125))


# ---------------------------------------------------------------------------- built-in pictures


@pytest.mark.parametrize("name", sorted(builtin_images.BUILTIN_IMAGES))
def test_builtin_pictures_have_k_disjoint_objects(name):
    spec = builtin_images.BUILTIN_IMAGES[name]
    picture = builtin_images.render_builtin_image(name)
    side, count = spec.side, spec.num_objects
    assert picture["image"].shape == (side, side, 3) and picture["image"].dtype == np.uint8
    assert picture["masks"].shape == (side, side, count) and picture["masks"].dtype == np.uint8
    binary = picture["masks"] >= 128
    assert np.all(binary.sum(axis=(0, 1)) > 0.5 * spec.total_area / count * side**2)
    assert (picture["masks"] > 0).sum(-1).max() <= 1  # disjoint, edge pixels included
    np.testing.assert_array_equal(
        picture["image"], builtin_images.render_builtin_image(name)["image"]
    )


def test_sparse_picture_has_the_flat_pictures_objects_at_half_the_area():
    flat = builtin_images.render_builtin_image("multi_object_k3_x4_flat")
    sparse = builtin_images.render_builtin_image("multi_object_k3_x4_flat_sparse")
    for k in range(3):
        flat_mask, sparse_mask = flat["masks"][..., k] >= 128, sparse["masks"][..., k] >= 128
        assert sparse_mask.sum() == pytest.approx(0.5 * flat_mask.sum(), rel=0.02)
        # the same object colour: the median over the object's pixels, within 2 of 255
        np.testing.assert_allclose(
            np.median(sparse["image"][sparse_mask], axis=0),
            np.median(flat["image"][flat_mask], axis=0),
            atol=2,
        )
    assert not np.array_equal(flat["masks"] >= 128, sparse["masks"] >= 128)


def builtin_config(**overrides):
    return data_config(None, **dict(dict(builtin_image="multi_object_k3"), **overrides))


def test_builtin_picture_through_the_iterator_and_its_mask_crops():
    config = builtin_config()
    first, second = take(make(config), 2)
    assert first.shape == (4, RES, RES, 3) and first.dtype == np.float32
    assert first.min() >= -1.0 and first.max() <= 1.0
    # The scoring crops are the stream's examples (step s, position i: index 4 s + i).
    crops = single_image.crops_with_object_masks(config, seed=3, example_indices=np.arange(8))
    assert crops["image"].shape == (8, RES, RES, 3) and crops["masks"].shape == (8, RES, RES, 3)
    streamed = np.rint((np.concatenate([first, second]) + 1.0) * 127.5)
    np.testing.assert_array_equal(crops["image"], streamed.astype(np.uint8))
    # Some crop holds (part of) an object.
    assert (crops["masks"] >= 128).any()


def test_whole_picture_crop_keeps_the_masks_as_rendered():
    config = builtin_config(crop_fraction=1.0, mirror=False, resolution=128)
    crops = single_image.crops_with_object_masks(config, seed=0, example_indices=[5, 6])
    picture = builtin_images.render_builtin_image("multi_object_k3")
    np.testing.assert_array_equal(single_image.object_masks(config), picture["masks"])
    for index in range(2):
        np.testing.assert_array_equal(crops["image"][index], picture["image"])
        np.testing.assert_array_equal(crops["masks"][index], picture["masks"])
    # Flipped crops flip image and masks together.
    flipped = single_image.crops_with_object_masks(
        builtin_config(crop_fraction=1.0, resolution=128), seed=0, example_indices=np.arange(16)
    )
    for image, masks in zip(flipped["image"], flipped["masks"], strict=True):
        as_rendered = np.array_equal(image, picture["image"])
        assert as_rendered or np.array_equal(image, picture["image"][:, ::-1])
        expected = picture["masks"] if as_rendered else picture["masks"][:, ::-1]
        np.testing.assert_array_equal(masks, expected)


def test_builtin_picture_errors(image_file):
    with pytest.raises(ValueError, match="not both"):
        make(builtin_config(image_path=image_file))
    with pytest.raises(ValueError, match="data.builtin_image must be one of"):
        make(builtin_config(builtin_image="multi_object_k9"))
    with pytest.raises(ValueError, match="need data.builtin_image"):
        single_image.object_masks(data_config(image_file))
    with pytest.raises(ValueError, match="example_indices"):
        single_image.crops_with_object_masks(builtin_config(), seed=0, example_indices=[-1])
