"""Tests of the CUB path: DRC crop geometry and the tfds caltech_birds2011 pipeline (mocked)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ilsgan_jax.data import config as config_lib
from ilsgan_jax.data import input_pipeline, preprocess

RESOLUTION = 16


def _as_ints(box):
    return tuple(int(value) for value in box)


def _normalised(x, y, w, h, height, width):
    """A CUB pixel box (x, y, w, h) as tfds stores it: (ymin, xmin, ymax, xmax) / size."""
    return tf.constant([y / height, x / width, (y + h) / height, (x + w) / width], tf.float32)


@pytest.mark.parametrize(
    "height, width, expected",
    [
        (100, 200, (0, 50, 100, 100)),
        (201, 100, (50, 0, 100, 100)),
        (64, 64, (0, 0, 64, 64)),
        (31, 30, (0, 0, 30, 30)),
    ],
)
def test_center_square_box(height, width, expected):
    assert _as_ints(preprocess.center_square_box(height, width)) == expected


@pytest.mark.parametrize(
    "box, size, expected",
    [
        # Inside: r = floor(0.75 * 40) = 30, centre (x, y) = (80, 55).
        ((60, 40, 40, 30), (100, 200), (25, 50, 60, 60)),
        # Touches the left edge: centre (30, 35), r = 30 -> columns [0, 60), rows [5, 65).
        ((10, 20, 40, 30), (100, 200), (5, 0, 60, 60)),
        # Bottom-right corner: r = floor(37.5) = 37, centre (175, 80) -> rows [43, 100),
        # columns [138, 200).
        ((150, 60, 50, 40), (100, 200), (43, 138, 57, 62)),
        # Larger than the image on both axes: the whole image.
        ((5, 5, 90, 90), (100, 100), (0, 0, 100, 100)),
        # Odd sizes round the centre down: centre ((2*3 + 7) // 2, (2*2 + 5) // 2) = (6, 4),
        # r = floor(0.75 * 7) = 5 -> rows [0, 9), columns [1, 11).
        ((3, 2, 7, 5), (30, 40), (0, 1, 9, 10)),
    ],
)
def test_cub_test_box_against_hand_computed(box, size, expected):
    height, width = size
    result = preprocess.cub_test_box(_normalised(*box, height, width), height, width)
    assert _as_ints(result) == expected


def _cub_config(data_dir, **overrides):
    config = config_lib.default_data_config()
    config.name = "cub"
    config.resolution = RESOLUTION
    config.data_dir = str(data_dir)
    config.mirror = False
    for key, value in overrides.items():
        config[key] = value
    return config


def test_pipeline_on_random_mock_data(tmp_path):
    """tfds' own random mock: image and mask sizes differ, boxes may be inverted."""
    config = _cub_config(tmp_path)
    with tfds.testing.mock_data(num_examples=5):
        assert input_pipeline.num_examples(config, "test") == 5
        batches = list(
            input_pipeline.create_eval_iterator(
                config, split="test", batch_size=2, process_index=0, process_count=1
            )
        )
        train = input_pipeline.create_train_iterator(
            config, global_batch_size=4, seed=0, process_index=0, process_count=1
        )
        train_batches = [next(train)["image"] for _ in range(3)]
    assert len(batches) == 3 and np.concatenate([b["valid"] for b in batches]).sum() == 5
    for batch in batches:
        assert batch["image"].shape == (2, RESOLUTION, RESOLUTION, 3)
        assert batch["mask"].shape == (2, RESOLUTION, RESOLUTION, 1)
        assert set(np.unique(batch["mask"])) <= {0.0, 1.0}
        assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    for images in train_batches:
        assert images.shape == (4, RESOLUTION, RESOLUTION, 3) and images.dtype == np.float32
        assert images.min() >= -1.0 and images.max() <= 1.0


def _controlled_examples():
    """Two examples whose DRC crops are uniform regions of known colour and mask.

    Example 0: 60x120 image. Box (x=20, y=10, w=24, h=20) -> r = 18, centre (32, 20): test crop
    rows [2, 38), columns [14, 50); columns [14, 50) are red, the rest blue. The mask is stored
    at half size (30x60), as under mock data; at full size the crop's left half is foreground.
    Training crop: centre square columns [30, 90).
    Example 1: 80x40 image, box at the top-left corner (x=0, y=0, w=16, h=16): r = 12,
    centre (8, 8) -> rows [0, 20), columns [0, 20), painted green; mask all foreground there.
    """
    image0 = np.zeros((60, 120, 3), np.uint8)
    image0[:] = (0, 0, 255)
    image0[:, 14:50] = (255, 0, 0)
    mask0 = np.zeros((60, 120, 1), np.uint8)
    mask0[2:38, 14:32] = 255
    image1 = np.zeros((80, 40, 3), np.uint8)
    image1[:] = (0, 0, 255)
    image1[0:20, 0:20] = (0, 255, 0)
    mask1 = np.zeros((80, 40, 1), np.uint8)
    mask1[0:20, 0:20] = 255
    return [
        {
            "image": image0,
            "segmentation_mask": mask0[::2, ::2],
            "bbox": np.array([10 / 60, 20 / 120, 30 / 60, 44 / 120], np.float32),
            "image/filename": "001.A/a.jpg",
        },
        {
            "image": image1,
            "segmentation_mask": mask1,
            "bbox": np.array([0.0, 0.0, 16 / 80, 16 / 40], np.float32),
            "image/filename": "002.B/b.jpg",
        },
    ]


def _controlled_as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del self, split, decoders, read_config, kwargs
    examples = _controlled_examples()

    def generate():
        yield from examples

    signature = {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "segmentation_mask": tf.TensorSpec([None, None, 1], tf.uint8),
        "bbox": tf.TensorSpec([4], tf.float32),
        "image/filename": tf.TensorSpec([], tf.string),
    }
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(examples)))


def test_drc_crops_through_the_pipeline(tmp_path):
    config = _cub_config(tmp_path)
    with tfds.testing.mock_data(as_dataset_fn=_controlled_as_dataset):
        batch = next(
            input_pipeline.create_eval_iterator(
                config, split="test", batch_size=2, process_index=0, process_count=1
            )
        )
        train_images = next(
            input_pipeline.create_train_iterator(
                config, global_batch_size=2, seed=0, process_index=0, process_count=1
            )
        )["image"]
    red = np.array([1.0, -1.0, -1.0], np.float32)
    green = np.array([-1.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(batch["image"][0], np.broadcast_to(red, (16, 16, 3)), atol=1e-6)
    np.testing.assert_allclose(batch["image"][1], np.broadcast_to(green, (16, 16, 3)), atol=1e-6)
    expected_mask0 = np.zeros((16, 16, 1), np.float32)
    expected_mask0[:, :8] = 1.0
    np.testing.assert_array_equal(batch["mask"][0], expected_mask0)
    np.testing.assert_array_equal(batch["mask"][1], np.ones((16, 16, 1), np.float32))
    # Training crops are the centre squares: example 0's columns [30, 90) hold red then blue
    # (red up to column 50, i.e. the first third); example 1's rows [20, 60) are all blue.
    by_red_fraction = sorted(train_images, key=lambda image: -(image[..., 0] > 0).mean())
    red_columns = (by_red_fraction[0][..., 0] > 0).mean(axis=0)
    np.testing.assert_array_equal(red_columns[:5], np.ones(5))
    np.testing.assert_array_equal(red_columns[6:], np.zeros(10))
    np.testing.assert_allclose(
        by_red_fraction[1],
        np.broadcast_to(np.array([-1, -1, 1], np.float32), (16, 16, 3)),
        atol=1e-6,
    )


def test_drc_split_file_selects_examples(tmp_path):
    split_dir = tmp_path / "birds"
    split_dir.mkdir()
    (split_dir / "images.txt").write_text("1 001.A/a.jpg\n2 002.B/b.jpg\n3 003.C/c.jpg\n")
    (split_dir / "train_val_test_split.txt").write_text("1 0\n2 2\n3 2\n")
    config = _cub_config(tmp_path, cub_split_dir=str(split_dir))
    with tfds.testing.mock_data(as_dataset_fn=_controlled_as_dataset):
        # c.jpg is listed as a test image but absent from the data: counted out (and logged).
        assert input_pipeline.num_examples(config, "test") == 1
        batches = list(
            input_pipeline.create_eval_iterator(
                config, split="test", batch_size=2, process_index=0, process_count=1
            )
        )
    # Only b.jpg (id 2) is both in the DRC test split and in the data: one valid example.
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.sum() == 1
    green = np.array([-1.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(
        batches[0]["image"][valid[:2]][0], np.broadcast_to(green, (16, 16, 3)), atol=1e-6
    )
    with tfds.testing.mock_data(as_dataset_fn=_controlled_as_dataset):
        assert input_pipeline.num_examples(config, "train") == 1
    with pytest.raises(ValueError, match="data.cub_split_dir lacks images.txt"):
        input_pipeline.num_examples(_cub_config(tmp_path, cub_split_dir=str(tmp_path)), "test")
