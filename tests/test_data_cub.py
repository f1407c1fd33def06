"""Tests of the CUB path: DRC crop geometry, DRC's split (the shipped file, CUB's images.txt,
malformed lines), the tfds caltech_birds2011 pipeline (mocked) and the warning on tfds's split."""

import collections
import configparser
import json
import logging
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import ilsgan
from ilsgan_jax.data import config as config_lib
from ilsgan_jax.data import cub_split, input_pipeline, preprocess, sources
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.stages import segmentation

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
    config = _cub_config(tmp_path, cub_split="tfds")
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
            "image/filename": "001.A/a.jpg",  # (the mock's names are already relative)
        },
        {
            "image": image1,
            "segmentation_mask": mask1,
            "bbox": np.array([0.0, 0.0, 16 / 80, 16 / 40], np.float32),
            "image/filename": "CUB_200_2011/images/002.B/b.jpg",  # tfds: the archive path
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
    config = _cub_config(tmp_path, cub_split="tfds")
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


def _write_table(path, values) -> str:
    """`<id> <value>` lines, ids from 1 (CUB's images.txt, DRC's split file); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i} {value}\n" for i, value in enumerate(values, 1)))
    return str(path)


def _write_split_files(directory, images, splits):
    """CUB's images.txt and DRC's train_val_test_split.txt in `directory`; returns their paths."""
    return (
        _write_table(directory / "images.txt", images),
        _write_table(directory / "train_val_test_split.txt", splits),
    )


def test_drc_split_file_selects_examples(tmp_path):
    images_file, split_file = _write_split_files(
        tmp_path / "birds", ["001.A/a.jpg", "002.B/b.jpg", "003.C/c.jpg"], [0, 2, 2]
    )
    config = _cub_config(tmp_path, cub_split_file=split_file, cub_images_file=images_file)
    with tfds.testing.mock_data(as_dataset_fn=_controlled_as_dataset):
        # c.jpg is listed as a test image but absent from the data: counted out (and logged).
        assert input_pipeline.num_examples(config, "test") == 1
        batches = list(
            input_pipeline.create_eval_iterator(
                config, split="test", batch_size=2, process_index=0, process_count=1
            )
        )
    # Only b.jpg (id 2; stored under its archive path) is both in DRC's test split and in the
    # data: one valid example.
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.sum() == 1
    green = np.array([-1.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(
        batches[0]["image"][valid[:2]][0], np.broadcast_to(green, (16, 16, 3)), atol=1e-6
    )
    with tfds.testing.mock_data(as_dataset_fn=_controlled_as_dataset):
        assert input_pipeline.num_examples(config, "train") == 1


def test_drc_split_reads_images_txt_from_the_tfds_download(tmp_path):
    """By default: the shipped split file, CUB's images.txt where tfds extracted CUB."""
    extracted = tmp_path / "downloads" / "extracted" / "TAR_GZ.cub" / "CUB_200_2011"
    names = [f"{i // 60 + 1:03d}.Bird/bird_{i}.jpg" for i in range(cub_split.NUM_IMAGES)]
    names[1] = "002.B/b.jpg"  # id 2: a training image of the shipped split
    _write_table(extracted / "images.txt", names)
    config = _cub_config(tmp_path)
    assert config.cub_split == "drc" and config.cub_split_file == cub_split.SHIPPED_SPLIT_FILE
    with tfds.testing.mock_data(as_dataset_fn=_controlled_as_dataset):
        assert input_pipeline.num_examples(config, "train") == 1  # b.jpg
        assert input_pipeline.num_examples(config, "test") == 0
    with (
        tfds.testing.mock_data(as_dataset_fn=_controlled_as_dataset),
        pytest.raises(ValueError, match=r"cub_images_file=PATH.*cub_split=tfds"),
    ):
        input_pipeline.num_examples(_cub_config(tmp_path / "elsewhere"), "test")


def test_shipped_split_file_has_the_drc_counts(tmp_path):
    values = cub_split.read_split_file(cub_split.SHIPPED_SPLIT_FILE)
    assert sorted(values) == list(range(1, cub_split.NUM_IMAGES + 1))
    assert collections.Counter(values.values()) == {0: 10_000, 1: 788, 2: 1_000}
    names = [f"{i:05d}/x.jpg" for i in range(1, cub_split.NUM_IMAGES + 1)]
    images_file = _write_table(tmp_path / "images.txt", names)
    counts = {
        split: len(cub_split.split_names(cub_split.SHIPPED_SPLIT_FILE, images_file, split))
        for split in ("train", "val", "test")
    }
    assert counts == {"train": 10_000, "val": 788, "test": 1_000}
    # pip install ships the file and its attribution note (setup.cfg package data).
    setup = configparser.ConfigParser()
    setup.read(os.path.join(os.path.dirname(__file__), os.pardir, "setup.cfg"))
    shipped = setup["options.package_data"]["ilsgan_jax.data"].split()
    assert shipped == ["cub_split/train_val_test_split.txt", "cub_split/README.md"]
    here = os.path.dirname(cub_split.SHIPPED_SPLIT_FILE)
    assert "CC BY-NC 4.0" in open(os.path.join(here, "README.md")).read()


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("3 7", "<0|1|2>"),  # not a split value
        ("3", "<0|1|2>"),  # one field
        ("3 0 1", "<0|1|2>"),  # three fields
        ("x 0", "<0|1|2>"),  # not an id
        ("1 0", "image id 1 again"),  # a repeated id
    ],
)
def test_malformed_split_file_names_the_line(tmp_path, bad_line, expected):
    path = tmp_path / "train_val_test_split.txt"
    path.write_text(f"1 0\n\n2 2\n{bad_line}\n4 1\n")
    with pytest.raises(ValueError) as raised:
        cub_split.read_split_file(str(path))
    message = str(raised.value)
    assert f"{path}, line 4" in message and repr(bad_line) in message and expected in message


def test_malformed_images_file_names_the_line(tmp_path):
    images_file, split_file = _write_split_files(tmp_path, ["001.A/a.jpg", "b.jpg"], [0, 2])
    with pytest.raises(ValueError, match=r"images.txt, line 2: .* got '2 b.jpg'"):
        cub_split.split_names(split_file, images_file, "test")
    images_file = _write_table(tmp_path / "images.txt", ["001.A/a.jpg"])
    with pytest.raises(ValueError, match=r"lacks 1 image ids of .* \(first: \[2\]\)"):
        cub_split.split_names(split_file, images_file, "test")


def test_tfds_split_warns_and_its_reports_say_so(tmp_path, caplog, monkeypatch):
    """On tfds's split: a logged warning, and `split_warning` in the reports (here
    evaluation.json of --mode=evaluate, scored by a freshly initialised U-Net)."""
    config = ilsgan.get_config("dataset=cub,runlocal")
    config.data.resolution = RESOLUTION
    config.data.data_dir = str(tmp_path)
    config.data.cub_split = "tfds"
    config.segmenter.widths = (4, 8)
    config.segmenter.eval_batch_size = 2
    state = segmenter_lib.create_state(
        jax.random.key(0), config.segmenter, (RESOLUTION, RESOLUTION, 3)
    )
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    monkeypatch.setattr(segmentation, "load_segmenter", lambda config, workdir: variables)
    with tfds.testing.mock_data(num_examples=3), caplog.at_level(logging.WARNING):
        segmentation.evaluate_segmenter(config, str(tmp_path))
    assert cub_split.TFDS_SPLIT_WARNING in caplog.text
    with open(tmp_path / "evaluation.json") as file:
        evaluation = json.load(file)
    assert evaluation["cub_split"] == "tfds"
    assert "not comparable with the paper's" in evaluation["split_warning"]
    assert 0.0 <= evaluation["drc_iou"] <= 1.0
    # DRC's split: the split named, no warning; other data sets: nothing added.
    config.data.cub_split = "drc"
    assert cub_split.report_fields(config.data) == {"cub_split": "drc"}
    config.data.name = "synthetic"
    assert cub_split.report_fields(config.data) == {}


class _FakeBuilder:
    """A tfds builder stand-in: records prepare calls; `missing` = the module its preparation
    would fail to import."""

    data_dir = "/data/caltech_birds2011"

    def __init__(self, prepared: bool, missing: str | None = None):
        self.prepared, self.missing, self.prepare_calls = prepared, missing, 0

    def is_prepared(self) -> bool:
        return self.prepared

    def download_and_prepare(self) -> None:
        self.prepare_calls += 1
        if self.missing:
            raise ModuleNotFoundError(f"No module named {self.missing!r}")


def test_cub_is_prepared_on_first_use_only():
    fresh, ready = _FakeBuilder(prepared=False), _FakeBuilder(prepared=True)
    sources.prepare_cub(fresh)
    sources.prepare_cub(ready)
    assert (fresh.prepare_calls, ready.prepare_calls) == (1, 0)


def test_preparing_cub_without_opencv_says_what_to_install():
    builder = _FakeBuilder(prepared=False, missing="cv2")
    with pytest.raises(RuntimeError, match=r"/data/caltech_birds2011.*'cv2'.*\.\[cub\]"):
        sources.prepare_cub(builder)
