"""U-Net segmenter and its training: shapes, upsampling, BN modes, loss, colour jitter, learning."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.evaluate import seg_metrics, segmenter
from ilsgan_jax.models import unet

TINY_WIDTHS = (4, 8, 8)


def test_unet_shapes_and_decoder_widths():
    model = unet.UNet(widths=(4, 6, 8, 10))
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 16, 16, 3)))
    logits = jax.jit(model.apply)(variables, jnp.zeros((2, 16, 16, 3)))
    assert logits.shape == (2, 16, 16, 2)
    params = variables["params"]
    # Decoder block after skip level j has the width of level max(j - 1, 0) (256, 128, 64, 64).
    assert params["decoder_2"]["Conv_0"]["kernel"].shape == (3, 3, 8 + 10, 6)
    assert params["decoder_1"]["Conv_0"]["kernel"].shape == (3, 3, 6 + 6, 4)
    assert params["decoder_0"]["Conv_0"]["kernel"].shape == (3, 3, 4 + 4, 4)
    assert params["classifier"]["kernel"].shape == (1, 1, 4, 2)


def test_align_corners_upsampling_by_hand():
    row = jnp.array([0.0, 3.0, 9.0])[None, None, :, None] * jnp.ones((1, 3, 3, 1))
    upsampled = unet.upsample_bilinear_align_corners(row)
    # 3 -> 6 samples at x * 2 / 5: 0, 0.4, 0.8, 1.2, 1.6, 2.
    np.testing.assert_allclose(upsampled[0, 0, :, 0], [0.0, 1.2, 2.4, 4.2, 6.6, 9.0], rtol=1e-6)
    np.testing.assert_allclose(upsampled[0, :, 2, 0], np.full(6, 2.4), rtol=1e-6)


def test_batch_norm_train_and_eval_modes_differ_as_expected():
    model = unet.UNet(widths=TINY_WIDTHS)
    images = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 3.0 + 2.0
    variables = jax.jit(model.init)(jax.random.key(0), images)
    eval_apply = jax.jit(functools.partial(model.apply, train=False))
    eval_logits = eval_apply(variables, images)
    train_logits, updates = jax.jit(
        functools.partial(model.apply, train=True, mutable=["batch_stats"]))(variables, images)
    assert not np.allclose(eval_logits, train_logits, atol=1e-3)
    # Train mode normalises with batch statistics: the first BN output has ~zero mean per channel
    # before ReLU, so its running mean moves by 0.1 * batch mean (momentum 0.9).
    old = variables["batch_stats"]["encoder_0"]["BatchNorm_0"]["mean"]
    new = updates["batch_stats"]["encoder_0"]["BatchNorm_0"]["mean"]
    conv = variables["params"]["encoder_0"]["Conv_0"]
    pre_bn = jax.lax.conv_general_dilated(
        images, conv["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["bias"]
    np.testing.assert_allclose(new, 0.9 * old + 0.1 * pre_bn.mean(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    # Eval mode is per-sample: a sample's logits do not depend on the rest of the batch.
    alone = eval_apply(variables, images[:1])
    np.testing.assert_allclose(alone, eval_logits[:1], rtol=1e-5, atol=1e-5)


def test_pixel_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 2)).astype(np.float32)
    masks = rng.uniform(size=(2, 3, 4)) > 0.5
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -np.mean(np.where(masks, log_probs[..., 1], log_probs[..., 0]))
    value = segmenter.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(masks))
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_color_augment_properties():
    config = segmenter.default_segmenter_config().augment
    images = jax.random.uniform(jax.random.key(0), (64, 4, 4, 3), minval=-1, maxval=1)
    # All probabilities 0 -> identity.
    off = config.copy_and_resolve_references()
    for name in ("brightness", "contrast", "lumaflip", "hue", "saturation"):
        off[name] = 0.0
    np.testing.assert_allclose(segmenter.color_augment(jax.random.key(1), images, off), images,
                               atol=1e-6)
    # Brightness only: every pixel and channel of an image moves by the same amount.
    brightness_only = off.copy_and_resolve_references()
    brightness_only.brightness = 1.0
    shifted = segmenter.color_augment(jax.random.key(2), images, brightness_only) - images
    np.testing.assert_allclose(shifted, shifted[:, :1, :1, :1] * jnp.ones_like(shifted),
                               atol=1e-6)
    # Hue rotation only keeps luma (channel mean) and the chroma norm.
    hue_only = off.copy_and_resolve_references()
    hue_only.hue = 1.0
    rotated = segmenter.color_augment(jax.random.key(3), images, hue_only)
    np.testing.assert_allclose(rotated.mean(-1), images.mean(-1), atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1),
                               jnp.linalg.norm(images, axis=-1), atol=1e-5)
    assert not np.allclose(rotated, images, atol=1e-2)
    # Default config: roughly half the images untouched by each op, so some change, some not.
    changed = np.abs(np.asarray(segmenter.color_augment(jax.random.key(4), images, config))
                     - np.asarray(images)).max(axis=(1, 2, 3)) > 1e-5
    assert 0 < changed.sum() < 64


def test_train_val_split():
    train, val = segmenter.train_val_split(50, 0.1)
    np.testing.assert_array_equal(train, np.arange(45))
    np.testing.assert_array_equal(val, np.arange(45, 50))
    with pytest.raises(ValueError, match="val_fraction"):
        segmenter.train_val_split(50, 1.5)


def _squares(rng, count, size=16):
    """Bright squares on dark noise: images [N, S, S, 3] in [-1, 1], masks [N, S, S] bool."""
    images = rng.uniform(-1.0, -0.2, (count, size, size, 3)).astype(np.float32)
    masks = np.zeros((count, size, size), bool)
    for index in range(count):
        side = rng.integers(5, 10)
        top, left = rng.integers(0, size - side, 2)
        masks[index, top : top + side, left : left + side] = True
    images[masks] = rng.uniform(0.3, 1.0, (masks.sum(), 3))
    return images, masks


def test_tiny_segmenter_learns_squares():
    rng = np.random.default_rng(0)
    images, masks = _squares(rng, 120)
    config = segmenter.default_segmenter_config()
    config.widths = TINY_WIDTHS
    config.batch_size = 16
    config.num_steps = 40
    config.eval_every_steps = 20
    config.eval_batch_size = 16
    config.learning_rate = 1e-2  # a few dozen steps instead of thousands
    config.augment.hue = 0.0  # bright-vs-dark stays learnable under the remaining jitter
    result = segmenter.train_segmenter(images, masks, config, seed=0)
    test_images, test_masks = _squares(rng, 32)
    all_foreground = seg_metrics.segmentation_metrics(np.ones_like(test_masks), test_masks)["iou"]
    scores = segmenter.score_segmenter(result.variables, test_images, test_masks, config)
    assert [entry["step"] for entry in result.history] == [20, 40]
    assert result.best_val_metrics["iou"] == max(entry["iou"] for entry in result.history)
    assert all_foreground < 0.35
    assert scores["iou"] > all_foreground + 0.35, (scores, all_foreground)
    probabilities = segmenter.predict_masks(result.variables, test_images[:5], TINY_WIDTHS, 4)
    assert probabilities.shape == (5, 16, 16)
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
