"""Foreground/background segmentation metrics (the DRC protocol of ILSGAN's evaluation).

Masks are binary: foreground = 1. Predictions come as masks, as two-class logits
([..., 2], foreground = class 1, predicted where its logit is strictly larger, as `argmax` with
ties to background), or as foreground probabilities (> 0.5). Ground-truth masks given as floats are
thresholded at 0.5.

Metrics:
- `drc_iou`, `drc_dice`: foreground IoU |P & G| / |P | G| and DICE 2|P & G| / (|P| + |G|) per
  image, averaged over images (DRC).
- `iou`: foreground IoU over the whole data set (pixels of all images pooled); `iou_bg` the same
  for background; `miou` their mean; `pixel_accuracy` the fraction of correct pixels.

Empty-mask convention: when prediction and ground truth are both empty (union 0), IoU and DICE
are 1 (perfect agreement), per image and data-set wide. The reference divides by zero there
(per image: NaN that poisons the average; data set: 0 through a 1e-8 guard); real test sets have no
such images, so published numbers are unaffected.

The "128" protocol: the segmenter runs on 64 px images, its logits are upsampled x2 (bilinear,
`align_corners=False`) and scored against 128 px masks (`upsample_logits_x2`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

EMPTY_MASK_COVERAGE = 0.01  # A generated mask covering less than this is "empty".
FULL_MASK_COVERAGE = 0.99  # ... more than this is "full".


def _squeeze_channel(mask: jax.Array, name: str) -> jax.Array:
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise ValueError(f"{name}: expected [N, H, W] or [N, H, W, 1], got shape {mask.shape}")
    return mask


def logits_to_mask(logits: jax.Array) -> jax.Array:
    """[N, H, W, 2] two-class logits -> [N, H, W] bool foreground mask (ties -> background)."""
    if logits.ndim != 4 or logits.shape[-1] != 2:
        raise ValueError(f"logits: expected [N, H, W, 2], got shape {logits.shape}")
    return logits[..., 1] > logits[..., 0]


def as_binary_mask(mask: jax.Array, name: str = "mask") -> jax.Array:
    """Bool masks pass; float masks/probabilities in [0, 1] are thresholded at 0.5.

    Args:
      mask: [N, H, W] or [N, H, W, 1].
    Returns:
      [N, H, W] bool.
    """
    mask = _squeeze_channel(jnp.asarray(mask), name)
    return mask if mask.dtype == jnp.bool_ else mask > 0.5


def _ratio_or_one(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, and 1 where the denominator is 0 (both masks empty)."""
    safe = jnp.where(denominator > 0, denominator, 1)
    return jnp.where(denominator > 0, numerator / safe, 1.0).astype(jnp.float32)


def per_image_iou(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Foreground IoU per image: [N, H, W] bool x2 -> [N] float32 (1 when both are empty)."""
    intersection = jnp.sum(prediction & target, axis=(1, 2))
    union = jnp.sum(prediction | target, axis=(1, 2))
    return _ratio_or_one(intersection, union)


def per_image_dice(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Foreground DICE per image: [N, H, W] bool x2 -> [N] float32 (1 when both are empty)."""
    intersection = jnp.sum(prediction & target, axis=(1, 2))
    total = jnp.sum(prediction, axis=(1, 2)) + jnp.sum(target, axis=(1, 2))
    return _ratio_or_one(2 * intersection, total)


def confusion_matrix(
    prediction: jax.Array, target: jax.Array, valid: jax.Array | None = None
) -> jax.Array:
    """[2, 2] int32 pixel counts, rows = predicted class, columns = true class.

    Args:
      prediction, target: [N, H, W] bool.
      valid: optional [N] bool; images with False are not counted (padding of a last batch).
    """
    weight = jnp.ones(prediction.shape[0], jnp.int32) if valid is None else valid.astype(jnp.int32)
    weight = weight[:, None, None]
    pred, true = prediction.astype(jnp.int32), target.astype(jnp.int32)
    cells = [
        jnp.sum(weight * (pred == p) * (true == t)) for p in (0, 1) for t in (0, 1)
    ]
    return jnp.stack(cells).reshape(2, 2)


def batch_metric_sums(
    prediction: jax.Array, target: jax.Array, valid: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Per-batch sums for `SegmentationAccumulator` (jit-friendly).

    Args:
      prediction: [N, H, W] bool predicted foreground.
      target: [N, H, W] bool true foreground.
      valid: optional [N] bool mask of real (non-padding) images.
    Returns:
      {'iou_sum', 'dice_sum': float32 scalars, 'num_images': int32, 'confusion': [2, 2] int32}.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ")
    weight = jnp.ones(prediction.shape[0], jnp.float32) if valid is None else valid.astype(
        jnp.float32
    )
    return {
        "iou_sum": jnp.sum(weight * per_image_iou(prediction, target)),
        "dice_sum": jnp.sum(weight * per_image_dice(prediction, target)),
        "num_images": jnp.sum(weight).astype(jnp.int32),
        "confusion": confusion_matrix(prediction, target, valid),
    }


def metrics_from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """Data-set-level metrics from a [2, 2] (pred x true) confusion matrix.

    Returns:
      {'iou': foreground IoU, 'iou_bg': background IoU, 'miou': their mean, 'pixel_accuracy'};
      a class absent from both prediction and truth has IoU 1.
    """
    confusion = np.asarray(confusion, np.float64)
    correct = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - correct
    class_iou = np.where(union > 0, correct / np.where(union > 0, union, 1), 1.0)
    total = confusion.sum()
    return {
        "iou": float(class_iou[1]),
        "iou_bg": float(class_iou[0]),
        "miou": float(class_iou.mean()),
        "pixel_accuracy": float(correct.sum() / total) if total > 0 else float("nan"),
    }


class SegmentationAccumulator:
    """Streams batches and reports DRC per-image and data-set-level metrics (host side).

    Usage:
      accumulator = SegmentationAccumulator()
      for batch: accumulator.update(batch_metric_sums(pred, true, valid))  # or .add(pred, true)
      accumulator.result()
    """

    def __init__(self):
        self._iou_sum = 0.0
        self._dice_sum = 0.0
        self._num_images = 0
        self._confusion = np.zeros((2, 2), np.int64)

    def update(self, sums: dict[str, jax.Array]) -> None:
        """Adds the output of `batch_metric_sums` (possibly computed under jit)."""
        self._iou_sum += float(sums["iou_sum"])
        self._dice_sum += float(sums["dice_sum"])
        self._num_images += int(sums["num_images"])
        self._confusion += np.asarray(sums["confusion"], np.int64)

    def add(self, prediction, target, valid=None) -> None:
        """Convenience: `update(batch_metric_sums(...))` with binarised inputs."""
        self.update(
            batch_metric_sums(
                as_binary_mask(prediction, "prediction"),
                as_binary_mask(target, "target"),
                None if valid is None else jnp.asarray(valid),
            )
        )

    def result(self) -> dict[str, float]:
        """{'drc_iou', 'drc_dice', 'iou', 'iou_bg', 'miou', 'pixel_accuracy', 'num_images'}."""
        if self._num_images == 0:
            raise ValueError("SegmentationAccumulator: no images were added")
        result = {
            "drc_iou": self._iou_sum / self._num_images,
            "drc_dice": self._dice_sum / self._num_images,
        }
        result.update(metrics_from_confusion(self._confusion))
        result["num_images"] = self._num_images
        return result


def segmentation_metrics(prediction, target) -> dict[str, float]:
    """All metrics of one set of masks (see `SegmentationAccumulator.result`)."""
    accumulator = SegmentationAccumulator()
    accumulator.add(prediction, target)
    return accumulator.result()


def upsample_logits_x2(logits: jax.Array) -> jax.Array:
    """Bilinear x2 upsampling with half-pixel centres (`F.interpolate(..., align_corners=False)`).

    Args:
      logits: [N, H, W, C] float32.
    Returns:
      [N, 2H, 2W, C] float32.
    """
    batch, height, width, channels = logits.shape
    return jax.image.resize(logits, (batch, 2 * height, 2 * width, channels), "bilinear")


def protocol_128_batch_sums(
    logits_64: jax.Array, masks_128: jax.Array, valid: jax.Array | None = None
) -> dict[str, jax.Array]:
    """The "128" protocol: 64 px logits [N, 64, 64, 2] upsampled x2, scored against 128 px masks.

    Args:
      logits_64: [N, H, W, 2] segmenter logits at half the mask resolution.
      masks_128: [N, 2H, 2W] or [N, 2H, 2W, 1] ground truth (bool, or float thresholded at 0.5).
      valid: optional [N] bool.
    """
    prediction = logits_to_mask(upsample_logits_x2(logits_64))
    target = as_binary_mask(masks_128, "masks_128")
    if prediction.shape != target.shape:
        raise ValueError(
            f"masks_128: shape {target.shape} is not twice the logits' {logits_64.shape[1:3]}"
        )
    return batch_metric_sums(prediction, target, valid)


def mask_statistics(mask: jax.Array) -> dict[str, jax.Array]:
    """Statistics of generated soft masks for training logs (jit-friendly).

    Args:
      mask: [N, H, W] or [N, H, W, 1] float32 in [0, 1].
    Returns:
      scalars: 'coverage' mean mask value; 'binariness' mean min(m, 1 - m) (0 = binary);
      'empty_fraction' fraction of masks with coverage < 1%; 'full_fraction' coverage > 99%.
    """
    mask = _squeeze_channel(mask, "mask")
    coverage = jnp.mean(mask, axis=(1, 2))
    return {
        "coverage": jnp.mean(coverage),
        "binariness": jnp.mean(jnp.minimum(mask, 1.0 - mask)),
        "empty_fraction": jnp.mean(coverage < EMPTY_MASK_COVERAGE),
        "full_fraction": jnp.mean(coverage > FULL_MASK_COVERAGE),
    }


def all_foreground_baseline(masks: np.ndarray) -> float:
    """Per-image IoU of predicting every pixel as foreground (the trivial segmenter): the mean
    foreground fraction of ground-truth masks [N, H, W] in {0, 1}."""
    flat = masks.reshape(masks.shape[0], -1) > 0.5
    return float(np.mean(flat.sum(1) / flat.shape[1]))


def synthetic_mask_statistics(masks: np.ndarray) -> dict[str, float]:
    """`synthetic_mask_coverage` (mean of the masks) and `synthetic_full_fraction` (fraction of
    masks covering > 99% of their image) of exported masks `[N, R, R]` in {0, 1}."""
    stats = mask_statistics(masks)
    return {
        "synthetic_mask_coverage": float(stats["coverage"]),
        "synthetic_full_fraction": float(stats["full_fraction"]),
    }
