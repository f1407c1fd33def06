"""Segmentation metrics against hand-computed 4x4 masks, including empty-mask edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.evaluate import seg_metrics


def _hand_masks():
    prediction = np.zeros((4, 4, 4), bool)
    target = np.zeros((4, 4, 4), bool)
    prediction[0, :2, :2] = True  # A: 4 px inside a 6 px target
    target[0, :2, :3] = True
    # B: both empty.
    prediction[2] = True  # C: full prediction, empty target
    target[3, 1, 1] = True  # D: empty prediction, one target pixel
    return prediction, target


def test_per_image_iou_and_dice_by_hand():
    prediction, target = _hand_masks()
    iou = np.asarray(seg_metrics.per_image_iou(jnp.asarray(prediction), jnp.asarray(target)))
    dice = np.asarray(seg_metrics.per_image_dice(jnp.asarray(prediction), jnp.asarray(target)))
    np.testing.assert_allclose(iou, [4 / 6, 1.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(dice, [8 / 10, 1.0, 0.0, 0.0], rtol=1e-6)


def test_dataset_metrics_by_hand():
    prediction, target = _hand_masks()
    result = seg_metrics.segmentation_metrics(prediction, target)
    # Confusion (pred x true): TP 4, FP 0 + 16, FN 2 + 1, TN 64 - 23 = 41.
    assert result["drc_iou"] == pytest.approx((4 / 6 + 1) / 4)
    assert result["drc_dice"] == pytest.approx((0.8 + 1) / 4)
    assert result["iou"] == pytest.approx(4 / 23)
    assert result["iou_bg"] == pytest.approx(41 / 60)
    assert result["miou"] == pytest.approx((4 / 23 + 41 / 60) / 2)
    assert result["pixel_accuracy"] == pytest.approx(45 / 64)
    assert result["num_images"] == 4


def test_all_empty_dataset_counts_as_perfect():
    empty = np.zeros((2, 4, 4), bool)
    result = seg_metrics.segmentation_metrics(empty, empty)
    assert result["iou"] == 1.0 and result["drc_iou"] == 1.0 and result["drc_dice"] == 1.0
    assert result["iou_bg"] == 1.0 and result["pixel_accuracy"] == 1.0


def test_streaming_with_valid_mask_equals_one_shot_and_jits():
    prediction, target = _hand_masks()
    accumulator = seg_metrics.SegmentationAccumulator()
    batch_sums = jax.jit(seg_metrics.batch_metric_sums)
    # Batch 1: images 0, 1, plus one padded copy of image 2 marked invalid.
    padded_prediction = np.concatenate([prediction[:2], prediction[2:3]])
    padded_target = np.concatenate([target[:2], target[3:4]])
    accumulator.update(batch_sums(padded_prediction, padded_target,
                                  jnp.array([True, True, False])))
    accumulator.update(batch_sums(prediction[2:], target[2:], jnp.array([True, True])))
    streamed = accumulator.result()
    one_shot = seg_metrics.segmentation_metrics(prediction, target)
    for key, value in one_shot.items():
        assert streamed[key] == pytest.approx(value), key


def test_float_inputs_are_thresholded_and_logits_argmax():
    prediction, target = _hand_masks()
    soft_target = np.where(target, 0.7, 0.3).astype(np.float32)[..., None]
    logits = np.stack([np.zeros_like(prediction, np.float32),
                       np.where(prediction, 1.0, -1.0).astype(np.float32)], axis=-1)
    from_logits = seg_metrics.logits_to_mask(jnp.asarray(logits))
    np.testing.assert_array_equal(np.asarray(from_logits), prediction)
    # Equal logits go to background.
    assert not bool(seg_metrics.logits_to_mask(jnp.zeros((1, 1, 1, 2)))[0, 0, 0])
    result = seg_metrics.segmentation_metrics(from_logits, soft_target)
    assert result["iou"] == pytest.approx(4 / 23)


def _numpy_upsample_x2(array):
    """Reference: torch F.interpolate(bilinear, align_corners=False) along H and W."""
    def along(axis_array, axis):
        size = axis_array.shape[axis]
        source = np.maximum((np.arange(2 * size) + 0.5) / 2 - 0.5, 0.0)
        lower = np.floor(source).astype(int)
        upper = np.minimum(lower + 1, size - 1)
        weight = source - lower
        shape = [1] * axis_array.ndim
        shape[axis] = 2 * size
        weight = weight.reshape(shape)
        return (np.take(axis_array, lower, axis=axis) * (1 - weight)
                + np.take(axis_array, upper, axis=axis) * weight)
    return along(along(array, 1), 2)


def test_upsample_x2_matches_align_corners_false_reference():
    logits = np.random.default_rng(0).normal(size=(2, 5, 3, 2)).astype(np.float32)
    upsampled = np.asarray(seg_metrics.upsample_logits_x2(jnp.asarray(logits)))
    np.testing.assert_allclose(upsampled, _numpy_upsample_x2(logits), rtol=1e-5, atol=1e-6)


def test_protocol_128_scores_upsampled_prediction():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    masks = rng.uniform(size=(3, 8, 8)) > 0.5
    sums = seg_metrics.protocol_128_batch_sums(jnp.asarray(logits), jnp.asarray(masks))
    upsampled = _numpy_upsample_x2(logits)
    expected = seg_metrics.segmentation_metrics(upsampled[..., 1] > upsampled[..., 0], masks)
    accumulator = seg_metrics.SegmentationAccumulator()
    accumulator.update(sums)
    for key, value in expected.items():
        assert accumulator.result()[key] == pytest.approx(value), key
    with pytest.raises(ValueError, match="masks_128"):
        seg_metrics.protocol_128_batch_sums(jnp.asarray(logits), jnp.asarray(masks[:, :6, :6]))


def test_mask_statistics_by_hand():
    masks = np.zeros((4, 10, 10), np.float32)
    masks[0] = 0.5  # coverage 0.5, binariness 0.5
    masks[1, :5] = 1.0  # coverage 0.5, binary
    masks[2] = 1.0  # full
    masks[3, 0, 0] = 0.9  # coverage 0.009 (< 1%): empty; binariness 0.1 on one pixel
    stats = jax.jit(seg_metrics.mask_statistics)(jnp.asarray(masks)[..., None])
    assert float(stats["coverage"]) == pytest.approx((0.5 + 0.5 + 1.0 + 0.009) / 4, rel=1e-5)
    assert float(stats["binariness"]) == pytest.approx((0.5 * 100 + 0.1) / 400, rel=1e-5)
    assert float(stats["empty_fraction"]) == pytest.approx(0.25)
    assert float(stats["full_fraction"]) == pytest.approx(0.25)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="mask"):
        seg_metrics.mask_statistics(jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="logits"):
        seg_metrics.logits_to_mask(jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="prediction"):
        seg_metrics.batch_metric_sums(jnp.zeros((1, 4, 4), bool), jnp.zeros((1, 4, 5), bool))
