"""Tests of the image folder reader: errors, corrupt files, crops and masks."""

import logging
import os

import numpy as np
import PIL.Image
import pytest

from ilsgan_jax.data import config as config_lib
from ilsgan_jax.data import folder, input_pipeline

RESOLUTION = 16


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(array).save(path)


def _framed(height, width, inner, outer):
    """An RGB image whose centred largest square is `inner` and the rest `outer`."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = outer
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image[top : top + side, left : left + side] = inner
    return image


def _config(image_dir, mask_dir=None, **overrides):
    config = config_lib.default_data_config()
    config.name = "folder"
    config.resolution = RESOLUTION
    config.folder = str(image_dir)
    config.mask_folder = None if mask_dir is None else str(mask_dir)
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture()
def tree(tmp_path):
    """images/: a.png (tall), b.jpg (wide), sub/c.webp (square); masks/ for all three."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(str(images / "a.png"), _framed(40, 20, (200, 30, 30), (0, 0, 255)))
    _save(str(images / "b.jpg"), _framed(24, 48, (30, 200, 30), (255, 0, 0)))
    _save(str(images / "sub" / "c.webp"), np.full((32, 32, 3), 90, np.uint8))
    # a: left half of the centred square is foreground (0/255 mask).
    mask_a = np.zeros((40, 20), np.uint8)
    mask_a[10:30, :10] = 255
    _save(str(masks / "a.png"), mask_a)
    # b: a 0/1 mask, top half of the centred square.
    mask_b = np.zeros((24, 48), np.uint8)
    mask_b[:12, 12:36] = 1
    _save(str(masks / "b.png"), mask_b)
    _save(str(masks / "sub" / "c.png"), np.full((32, 32), 255, np.uint8))
    return images, masks


def _eval_batches(config):
    return list(
        input_pipeline.create_eval_iterator(
            config, split="test", batch_size=2, process_index=0, process_count=1
        )
    )


def test_center_crop_resize_and_masks(tree):
    images_dir, masks_dir = tree
    batches = _eval_batches(_config(images_dir, masks_dir))
    valid = np.concatenate([b["valid"] for b in batches])
    images = np.concatenate([b["image"] for b in batches])[valid]
    masks = np.concatenate([b["mask"] for b in batches])[valid]
    assert images.shape == (3, RESOLUTION, RESOLUTION, 3) and masks.shape[-1] == 1
    to_unit = lambda rgb: np.asarray(rgb, np.float32) / 127.5 - 1.0  # noqa: E731
    # Sorted order a.png, b.jpg, sub/c.webp; only the centred square survives the crop.
    np.testing.assert_allclose(
        images[0], np.broadcast_to(to_unit((200, 30, 30)), images[0].shape), atol=1e-6
    )
    # JPEG: chroma bleeds across the crop edge, so compare away from it.
    np.testing.assert_allclose(
        images[1, 2:-2, 2:-2],
        np.broadcast_to(to_unit((30, 200, 30)), images[1, 2:-2, 2:-2].shape),
        atol=0.06,
    )
    np.testing.assert_allclose(images[2], to_unit(90) + 0 * images[2], atol=0.02)  # webp
    expected_a = np.zeros((RESOLUTION, RESOLUTION, 1), np.float32)
    expected_a[:, : RESOLUTION // 2] = 1.0
    np.testing.assert_array_equal(masks[0], expected_a)
    expected_b = np.zeros((RESOLUTION, RESOLUTION, 1), np.float32)
    expected_b[: RESOLUTION // 2] = 1.0  # 0/1 masks are read as binary masks
    np.testing.assert_array_equal(masks[1], expected_b)
    np.testing.assert_array_equal(masks[2], np.ones_like(masks[2]))


def test_resize_matches_pillow_bilinear(tmp_path):
    rng = np.random.default_rng(0)
    smooth = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
    source = np.asarray(PIL.Image.fromarray(smooth).resize((64, 64), PIL.Image.BICUBIC))
    _save(str(tmp_path / "img" / "x.png"), source)
    batch = next(
        input_pipeline.create_eval_iterator(
            _config(tmp_path / "img"), split="train", batch_size=1, process_index=0, process_count=1
        )
    )
    assert "mask" not in batch
    ours = (batch["image"][0] + 1.0) * 127.5
    pillow = np.asarray(
        PIL.Image.fromarray(source).resize((RESOLUTION, RESOLUTION), PIL.Image.BILINEAR), np.float32
    )
    assert np.abs(ours - pillow).mean() < 1.0
    assert np.abs(ours - pillow).max() <= 4.0


def test_missing_and_empty_folders_raise(tmp_path):
    with pytest.raises(ValueError, match="data.folder does not exist"):
        folder.list_image_folder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="data.folder has no images"):
        folder.list_image_folder(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="data.folder must be set"):
        input_pipeline.num_examples(_config(tmp_path, folder=None), "train")
    with pytest.raises(ValueError, match="data.mask_folder does not exist"):
        folder.list_image_folder(str(tmp_path / "empty"), str(tmp_path / "no_masks"))


def test_image_without_mask(tree):
    images_dir, masks_dir = tree
    os.remove(masks_dir / "b.png")
    with pytest.raises(ValueError, match=r"b\.jpg has no mask"):
        folder.list_image_folder(str(images_dir), str(masks_dir))
    listing = folder.list_image_folder(str(images_dir), str(masks_dir), require_masks=False)
    assert [os.path.basename(p) for p in listing.image_paths] == ["a.png", "c.webp"]
    assert [os.path.basename(p) for p in listing.mask_paths] == ["a.png", "c.png"]


def test_mask_size_mismatch_names_both_files(tree):
    images_dir, masks_dir = tree
    _save(str(masks_dir / "a.png"), np.zeros((40, 21), np.uint8))
    with pytest.raises(ValueError) as error:
        folder.list_image_folder(str(images_dir), str(masks_dir))
    assert str(masks_dir / "a.png") in str(error.value)
    assert str(images_dir / "a.png") in str(error.value)


def test_corrupt_images_skipped_and_logged_or_raised(tree, caplog):
    images_dir, _ = tree
    (images_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    png = (images_dir / "a.png").read_bytes()
    (images_dir / "truncated.png").write_bytes(png[: len(png) // 2])
    with caplog.at_level(logging.WARNING):
        listing = folder.list_image_folder(str(images_dir), skip_corrupt=True)
    assert [os.path.basename(p) for p in listing.image_paths] == ["a.png", "b.jpg", "c.webp"]
    assert "Skipped 2 unreadable or corrupt" in caplog.text
    assert "broken.jpg" in caplog.text and "truncated.png" in caplog.text
    config = _config(images_dir)
    assert input_pipeline.num_examples(config, "train") == 3
    config.skip_corrupt = False
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        input_pipeline.num_examples(config, "train")


def test_train_iterator_on_a_folder(tree):
    images_dir, _ = tree
    iterator = input_pipeline.create_train_iterator(
        _config(images_dir, mirror=True),
        global_batch_size=4,
        seed=0,
        process_index=0,
        process_count=1,
    )
    for _ in range(3):
        batch = next(iterator)["image"]
        assert batch.shape == (4, RESOLUTION, RESOLUTION, 3) and batch.dtype == np.float32
        assert batch.min() >= -1.0 and batch.max() <= 1.0
