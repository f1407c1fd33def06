"""Tests of the tf.data input pipeline on the synthetic source."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ilsgan_jax.data import config as config_lib
from ilsgan_jax.data import input_pipeline, preprocess, sources

TRAIN_SIZE, TEST_SIZE, RESOLUTION = 50, 13, 16
CROP_SCALE, CROP_SIDE = 1.125, 18  # 16 px images resized to 18 px: 3 x 3 window offsets


@pytest.fixture(scope="module")
def data_config(tmp_path_factory):
    config = config_lib.default_data_config()
    config.name = "synthetic"
    config.resolution = RESOLUTION
    config.synthetic_train_size = TRAIN_SIZE
    config.synthetic_test_size = TEST_SIZE
    config.synthetic_seed = 4
    config.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.shuffle_buffer = 1000
    config.mirror = False
    input_pipeline.prepare_synthetic(config)
    return config


@pytest.fixture(scope="module")
def stored(data_config):
    """The uint8 images and masks of each split, straight from tfds, in storage order."""
    builder = sources.synthetic_builder_of(data_config)
    result = {}
    for split in ("train", "test"):
        examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
        result[split] = (
            np.stack([e["image"] for e in examples]),
            np.stack([e["mask"] for e in examples]),
        )
    return result


def _to_uint8(images: np.ndarray) -> np.ndarray:
    restored = (images + 1.0) * 127.5
    np.testing.assert_allclose(restored, np.rint(restored), atol=1e-3)
    return np.rint(restored).astype(np.uint8)


def _keys(images_uint8: np.ndarray) -> list[bytes]:
    return [image.tobytes() for image in images_uint8]


def _train_steps(config, steps, **kwargs):
    iterator = input_pipeline.create_train_iterator(config, **kwargs)
    return [batch["image"] for batch in itertools.islice(iterator, steps)]


def test_train_batches_dtype_shape_range(data_config):
    batches = _train_steps(
        data_config, 3, global_batch_size=8, seed=0, process_index=1, process_count=2
    )
    for images in batches:
        assert images.dtype == np.float32 and images.shape == (4, RESOLUTION, RESOLUTION, 3)
        assert images.min() >= -1.0 and images.max() <= 1.0
        _to_uint8(images)  # values lie on the 8-bit grid mapped to [-1, 1]


def test_batch_not_divisible_by_processes_raises(data_config):
    with pytest.raises(ValueError, match="global_batch_size"):
        input_pipeline.create_train_iterator(
            data_config, global_batch_size=10, seed=0, process_index=0, process_count=4
        )


def test_each_epoch_is_a_reshuffled_pass_over_the_process_share(data_config, stored):
    # Process 0 of 2 holds 25 records; 4 per step, so epochs straddle batches.
    images = np.concatenate(
        _train_steps(data_config, 25, global_batch_size=8, seed=3, process_index=0, process_count=2)
    )
    keys = _keys(_to_uint8(images))
    first, second = keys[:25], keys[25:50]
    assert sorted(first) == sorted(second) and len(set(first)) == 25
    assert first != second  # reseeded per epoch
    assert set(first) <= set(_keys(stored["train"][0]))
    other_seed = _keys(
        _to_uint8(
            np.concatenate(
                _train_steps(
                    data_config, 7, global_batch_size=8, seed=4, process_index=0, process_count=2
                )
            )
        )
    )
    assert other_seed[:25] != first


@pytest.mark.parametrize("crop_scale", [1.0, CROP_SCALE])
@pytest.mark.parametrize("start_step", [1, 6, 13])
def test_resumption_continues_the_stream(data_config, start_step, crop_scale):
    data_config = data_config.copy_and_resolve_references()
    data_config.mirror = True
    data_config.random_crop_scale = crop_scale
    kwargs = dict(global_batch_size=8, seed=11, process_index=1, process_count=2)
    reference = _train_steps(data_config, 16, **kwargs)
    resumed = _train_steps(data_config, 16 - start_step, start_step=start_step, **kwargs)
    for step, images in enumerate(resumed, start=start_step):
        np.testing.assert_array_equal(images, reference[step])


def test_mirror_flips_about_half_of_the_images(data_config, stored):
    data_config = data_config.copy_and_resolve_references()
    data_config.mirror = True
    images = _to_uint8(
        np.concatenate(
            _train_steps(
                data_config, 25, global_batch_size=4, seed=2, process_index=0, process_count=1
            )
        )
    )
    originals = set(_keys(stored["train"][0]))
    flipped = set(_keys(stored["train"][0][:, :, ::-1]))
    is_original = np.array([key in originals for key in _keys(images)])
    is_flipped = np.array([key in flipped for key in _keys(images)])
    assert np.all(is_original | is_flipped)
    assert 0.3 < is_flipped.mean() < 0.7


def _windows(image: np.ndarray, side: int) -> dict[bytes, tuple[int, int]]:
    """Every R x R window of `image` (uint8 [R, R, 3]) resized to `side` x `side` by the
    pipeline's resize: {window bytes: (top, left)}."""
    resized = preprocess.to_uint8(
        preprocess.crop_and_resize(tf.constant(image), (0, 0, RESOLUTION, RESOLUTION), side)
    ).numpy()
    offsets = itertools.product(range(side - RESOLUTION + 1), repeat=2)
    return {
        resized[top : top + RESOLUTION, left : left + RESOLUTION].tobytes(): (top, left)
        for top, left in offsets
    }


def _with_crop(data_config, scale):
    config = data_config.copy_and_resolve_references()
    config.mirror = True
    config.random_crop_scale = scale
    return config


def test_random_crop_is_a_window_of_the_resized_image(data_config):
    """Each cropped example is one of the 9 windows of the image at the same place of the
    uncropped stream (same shuffle and flips), resized to 18 px; the offsets vary."""
    kwargs = dict(global_batch_size=8, seed=5, process_index=0, process_count=1)
    uncropped = np.concatenate(_train_steps(_with_crop(data_config, 1.0), 4, **kwargs))
    batches = _train_steps(_with_crop(data_config, CROP_SCALE), 4, **kwargs)
    assert all(b.shape == (8, RESOLUTION, RESOLUTION, 3) for b in batches)
    cropped = _to_uint8(np.concatenate(batches))
    offsets = []
    for image, source in zip(cropped, _to_uint8(uncropped), strict=True):
        windows = _windows(source, CROP_SIDE)
        assert image.tobytes() in windows
        offsets.append(windows[image.tobytes()])
    assert len(set(offsets)) >= 5, offsets  # 32 draws over 9 offsets
    again = np.concatenate(_train_steps(_with_crop(data_config, CROP_SCALE), 4, **kwargs))
    np.testing.assert_array_equal(again, np.concatenate(batches))  # a function of the seed
    other_seed = _train_steps(_with_crop(data_config, CROP_SCALE), 4, **{**kwargs, "seed": 6})
    assert not np.array_equal(np.concatenate(other_seed), np.concatenate(batches))


def test_random_crop_side_truncates_and_below_one_more_pixel_is_off(data_config):
    """int(scale * R) as the original: 1.05 * 16 = 16.8 -> 16, no crop, exactly scale 1's
    stream (which the other tests here check image by image against the stored data)."""
    assert input_pipeline.random_crop_side(_with_crop(data_config, CROP_SCALE)) == CROP_SIDE
    assert input_pipeline.random_crop_side(_with_crop(data_config, 1.05)) == RESOLUTION
    kwargs = dict(global_batch_size=4, seed=2, process_index=0, process_count=1)
    np.testing.assert_array_equal(
        np.concatenate(_train_steps(_with_crop(data_config, 1.0), 3, **kwargs)),
        np.concatenate(_train_steps(_with_crop(data_config, 1.05), 3, **kwargs)),
    )


@pytest.mark.parametrize("scale", [0.9, 0.0, -1.125, float("nan"), float("inf")])
def test_bad_random_crop_scale_raises_naming_the_field(data_config, scale):
    with pytest.raises(ValueError, match=r"data\.random_crop_scale"):
        input_pipeline.create_train_iterator(
            _with_crop(data_config, scale),
            global_batch_size=4,
            seed=0,
            process_index=0,
            process_count=1,
        )


def _eval_pass(config, split, batch_size, process_index, process_count):
    return list(
        input_pipeline.create_eval_iterator(
            config,
            split=split,
            batch_size=batch_size,
            process_index=process_index,
            process_count=process_count,
        )
    )


def test_eval_iterator_fixed_order_values_and_padding(data_config, stored):
    batches = _eval_pass(data_config, "test", 5, 0, 1)
    assert len(batches) == 3  # 13 examples -> 5 + 5 + 3 valid
    again = _eval_pass(data_config, "test", 5, 0, 1)
    for batch, repeat in zip(batches, again, strict=True):
        for key in ("image", "mask", "valid"):
            np.testing.assert_array_equal(batch[key], repeat[key])
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.dtype == np.bool_ and valid.sum() == TEST_SIZE and not valid[TEST_SIZE:].any()
    images = np.concatenate([b["image"] for b in batches])
    masks = np.concatenate([b["mask"] for b in batches])
    assert images.dtype == np.float32 and masks.dtype == np.float32
    assert masks.shape == (15, RESOLUTION, RESOLUTION, 1)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    stored_images, stored_masks = stored["test"]
    np.testing.assert_array_equal(_to_uint8(images[:TEST_SIZE]), stored_images)
    np.testing.assert_array_equal(masks[:TEST_SIZE], (stored_masks >= 128).astype(np.float32))
    assert not images[TEST_SIZE:].any() and not masks[TEST_SIZE:].any()


@pytest.mark.parametrize("process_count", [2, 3])
def test_process_shares_are_disjoint_and_cover_the_split(data_config, stored, process_count):
    shares, batch_counts = [], []
    for process_index in range(process_count):
        batches = _eval_pass(data_config, "train", 4, process_index, process_count)
        batch_counts.append(len(batches))
        valid = np.concatenate([b["valid"] for b in batches])
        shares.append(_keys(_to_uint8(np.concatenate([b["image"] for b in batches])[valid])))
    assert len(set(batch_counts)) == 1  # every process runs the same number of eval steps
    largest_share = int(np.ceil(TRAIN_SIZE / process_count))
    assert batch_counts[0] == int(np.ceil(largest_share / 4))
    everything = list(itertools.chain(*shares))
    assert len(everything) == TRAIN_SIZE == len(set(everything))
    assert set(everything) == set(_keys(stored["train"][0]))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # Training streams of different processes draw from their own (disjoint) shares.
    train_keys = [
        set(
            _keys(
                _to_uint8(
                    np.concatenate(
                        _train_steps(
                            data_config,
                            3,
                            global_batch_size=2 * process_count,
                            seed=0,
                            process_index=index,
                            process_count=process_count,
                        )
                    )
                )
            )
        )
        for index in range(process_count)
    ]
    for index, keys in enumerate(train_keys):
        assert keys <= set(shares[index])


def test_num_examples_and_bad_config(data_config):
    assert input_pipeline.num_examples(data_config, "train") == TRAIN_SIZE
    assert input_pipeline.num_examples(data_config, "test") == TEST_SIZE
    bad = data_config.copy_and_resolve_references()
    bad.resolution = 24
    with pytest.raises(ValueError, match="data.resolution"):
        input_pipeline.num_examples(bad, "train")
    bad = data_config.copy_and_resolve_references()
    bad.name = "imagenet"
    with pytest.raises(ValueError, match="data.name"):
        input_pipeline.num_examples(bad, "train")
    with pytest.raises(ValueError, match="split"):
        input_pipeline.num_examples(data_config, "validation")
