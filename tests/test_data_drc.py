"""Tests of Stanford Dogs / Cars in the DRC folder layout, on tiny fake trees."""

import logging
import os

import numpy as np
import PIL.Image
import pytest

from ilsgan_jax.data import config as config_lib
from ilsgan_jax.data import drc, input_pipeline

RESOLUTION = 16
INNER, OUTER = (250, 200, 10), (10, 10, 250)


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(array).save(path)


def _framed(height, width):
    """RGB image whose centred largest square is INNER, the rest OUTER."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = OUTER
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image[top : top + side, left : left + side] = INNER
    return image


def _halves(height, width):
    """Test image: left half INNER, right half OUTER; mask: the left half."""
    image = np.empty((height, width, 3), np.uint8)
    image[:, : width // 2] = INNER
    image[:, width // 2 :] = OUTER
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    return image, mask


def _make_tree(root, name, train_tokens, test_tokens):
    files = {
        "dogs": ("data_tr_sel.npy", "data_te_sel.npy", "train_orig/orig/{}_orig.png"),
        "cars": (
            "data_mrcnn_train_select.npy",
            "data_mrcnn_test_select.npy",
            "data_mrcnn/train/orig/{}_orig.png",
        ),
    }[name]
    os.makedirs(root, exist_ok=True)
    np.save(os.path.join(root, files[0]), np.array(train_tokens))
    np.save(os.path.join(root, files[1]), np.array(test_tokens))
    for index, token in enumerate(train_tokens):
        shape = (30, 50) if index % 2 else (50, 30)
        _save(os.path.join(root, files[2].format(token)), _framed(*shape))
    for token in test_tokens:
        image, mask = _halves(24, 40)  # not square: resized to R x R like the reference
        _save(os.path.join(root, f"data_mrcnn/test/resized/{token}_resized.png"), image)
        _save(os.path.join(root, f"data_mrcnn/test/resized/{token}_maskresized.png"), mask)


def _config(name, root, **overrides):
    config = config_lib.default_data_config()
    config.name = name
    config.resolution = RESOLUTION
    config.drc_root = str(root)
    config.mirror = False
    for key, value in overrides.items():
        config[key] = value
    return config


def _unit(rgb):
    return np.asarray(rgb, np.float32) / 127.5 - 1.0


@pytest.mark.parametrize(
    "name, train_tokens, test_tokens",
    [
        ("dogs", ["n02085620_10074", "n02085620_10131", "n02085782_17"], ["n02086240_3"]),
        ("cars", [1, 2, 3], [7, 8]),  # integer tokens, formatted with str()
    ],
)
def test_drc_tree_train_and_test(tmp_path, name, train_tokens, test_tokens):
    root = tmp_path / name
    _make_tree(str(root), name, train_tokens, test_tokens)
    config = _config(name, root)
    assert input_pipeline.num_examples(config, "train") == len(train_tokens)
    assert input_pipeline.num_examples(config, "test") == len(test_tokens)
    # Training images: centre square crops (all INNER), no masks.
    train = list(
        input_pipeline.create_eval_iterator(
            config, split="train", batch_size=4, process_index=0, process_count=1
        )
    )
    assert "mask" not in train[0]
    valid = train[0]["valid"]
    assert valid.sum() == len(train_tokens)
    np.testing.assert_allclose(
        train[0]["image"][valid],
        np.broadcast_to(_unit(INNER), (len(train_tokens), 16, 16, 3)),
        atol=1e-6,
    )
    # Test images and masks: resized whole (left half INNER / foreground); columns 7-8 blend
    # the two halves (antialiased resize from 40 to 16 columns).
    test = next(
        input_pipeline.create_eval_iterator(
            config, split="test", batch_size=2, process_index=0, process_count=1
        )
    )
    for index in range(len(test_tokens)):
        np.testing.assert_allclose(
            test["image"][index, :, :7], np.broadcast_to(_unit(INNER), (16, 7, 3)), atol=1e-6
        )
        np.testing.assert_allclose(
            test["image"][index, :, 9:], np.broadcast_to(_unit(OUTER), (16, 7, 3)), atol=1e-6
        )
        np.testing.assert_array_equal(test["mask"][index, :, :8], np.ones((16, 8, 1)))
        np.testing.assert_array_equal(test["mask"][index, :, 8:], np.zeros((16, 8, 1)))
    batch = next(
        input_pipeline.create_train_iterator(
            config, global_batch_size=2, seed=0, process_index=0, process_count=1
        )
    )
    np.testing.assert_allclose(
        batch["image"], np.broadcast_to(_unit(INNER), (2, 16, 16, 3)), atol=1e-6
    )


def test_dogs_fall_back_to_resized_training_images(tmp_path, caplog):
    root = tmp_path / "dogs"
    os.makedirs(root)
    np.save(root / "data_tr_sel.npy", np.array(["a", "b"]))
    np.save(root / "data_te_sel.npy", np.array(["c"]))
    for token in ("a", "b"):
        _save(str(root / f"data_mrcnn/train/resized/{token}_resized.png"), _framed(20, 20))
    with caplog.at_level(logging.WARNING):
        listing = drc.list_drc_split("dogs", str(root), "train")
    assert [os.path.basename(p) for p in listing.image_paths] == ["a_resized.png", "b_resized.png"]
    assert listing.mask_paths is None
    assert "training on the DRC resized images" in caplog.text


def test_drc_errors(tmp_path, caplog):
    with pytest.raises(ValueError, match="data.drc_root"):
        drc.list_drc_split("dogs", str(tmp_path / "absent"), "train")
    with pytest.raises(ValueError, match="data_tr_sel.npy"):
        drc.list_drc_split("dogs", str(tmp_path), "train")
    with pytest.raises(ValueError, match="data.name"):
        drc.list_drc_split("birds", str(tmp_path), "train")
    root = tmp_path / "cars"
    _make_tree(str(root), "cars", ["x", "y", "z"], ["t"])
    os.remove(root / "data_mrcnn/test/resized/t_maskresized.png")
    with pytest.raises(ValueError, match=r"missing: .*t_maskresized\.png"):
        drc.list_drc_split("cars", str(root), "test")
    (root / "data_mrcnn/train/orig/y_orig.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with caplog.at_level(logging.WARNING):
        listing = drc.list_drc_split("cars", str(root), "train", skip_corrupt=True)
    assert [os.path.basename(p) for p in listing.image_paths] == ["x_orig.png", "z_orig.png"]
    assert "Skipped 1 unreadable or corrupt cars files" in caplog.text
    assert "y_orig.png" in caplog.text
    with pytest.raises(ValueError, match=r"y_orig\.png"):
        drc.list_drc_split("cars", str(root), "train", skip_corrupt=False)
