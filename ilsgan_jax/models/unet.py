"""U-Net segmenter of the segmentation stage (ILSGAN's `eval_segmentation.py` UNet, in Flax).

Blocks are (3x3 conv with bias, batch norm, ReLU) x 2. Encoder widths 64-128-256-512-512, each
level after the first starting with a 2x2 max pool. Decoder: bilinear x2 upsampling with
`align_corners=True` (as the reference's `nn.Upsample`), padding to the skip's size when odd,
concatenation [skip, upsampled], a block whose width is that of the encoder level below the skip
(256, 128, 64, 64 for the default widths); a 1x1 conv to the class logits.

With `compute_dtype='bfloat16'` the convolutions, the batch norms' outputs and the features are
bfloat16 (parameters and running statistics float32; Flax's BatchNorm computes its statistics in
float32); the logits are float32.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ilsgan_jax.nn.precision import compute_dtype

DEFAULT_WIDTHS = (64, 128, 256, 512, 512)


@functools.lru_cache(maxsize=32)
def _align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weights of 1-D linear interpolation with aligned corners."""
    if in_size == 1:
        return np.ones((out_size, 1), np.float32)
    source = np.arange(out_size) * (in_size - 1) / (out_size - 1)
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 2)
    upper_weight = source - lower
    weights = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    weights[rows, lower] += 1.0 - upper_weight
    weights[rows, lower + 1] += upper_weight
    return weights.astype(np.float32)


def upsample_bilinear_align_corners(images: jax.Array) -> jax.Array:
    """x2 bilinear upsampling with aligned corners: [N, H, W, C] -> [N, 2H, 2W, C]."""
    height, width = images.shape[1], images.shape[2]
    rows = jnp.asarray(_align_corners_matrix(height, 2 * height), images.dtype)
    cols = jnp.asarray(_align_corners_matrix(width, 2 * width), images.dtype)
    images = jnp.einsum("oh,nhwc->nowc", rows, images)
    return jnp.einsum("pw,nowc->nopc", cols, images)


class ConvBlock(nn.Module):
    """(3x3 conv, batch norm, ReLU) x 2, in `compute_dtype`."""

    features: int  # Output channels of both convolutions.
    compute_dtype: str = "float32"  # 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
        dtype = compute_dtype(self.compute_dtype)
        outputs = inputs
        for _ in range(2):
            outputs = nn.Conv(self.features, (3, 3), padding=1, dtype=dtype)(outputs)
            # PyTorch BatchNorm2d defaults: momentum 0.1 (Flax 0.9), eps 1e-5.
            outputs = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype
            )(outputs)
            outputs = nn.relu(outputs)
        return outputs


class UNet(nn.Module):
    """Two-class (background, foreground) segmenter.

    `widths`: encoder widths, one per resolution level; the input side must be divisible by
    2 ** (len(widths) - 1) to avoid padding (other sizes are padded like the reference).
    """

    widths: tuple[int, ...] = DEFAULT_WIDTHS  # Encoder channels per level.
    num_classes: int = 2  # Output logits (background, foreground).
    compute_dtype: str = "float32"  # Convolutions in 'float32' or 'bfloat16' (logits float32).

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Logits.

        Args:
          images: [N, H, W, 3] float32 in [-1, 1].
          train: batch statistics (and their update, `mutable=['batch_stats']`) vs running ones.
        Returns:
          [N, H, W, num_classes] float32 logits.
        """
        if images.ndim != 4:
            raise ValueError(f"images: expected [N, H, W, C], got shape {images.shape}")
        if len(self.widths) < 2:
            raise ValueError(f"widths: need at least two levels, got {self.widths}")
        dtype = self.compute_dtype
        skips = []
        features = images
        for level, width in enumerate(self.widths):
            if level > 0:
                features = nn.max_pool(features, (2, 2), strides=(2, 2))
            features = ConvBlock(width, dtype, name=f"encoder_{level}")(features, train)
            skips.append(features)
        for level in range(len(self.widths) - 2, -1, -1):
            skip = skips[level]
            upsampled = upsample_bilinear_align_corners(features)
            pad_h = skip.shape[1] - upsampled.shape[1]
            pad_w = skip.shape[2] - upsampled.shape[2]
            pad_rows = (pad_h // 2, pad_h - pad_h // 2)
            pad_cols = (pad_w // 2, pad_w - pad_w // 2)
            upsampled = jnp.pad(upsampled, ((0, 0), pad_rows, pad_cols, (0, 0)))
            width = self.widths[max(level - 1, 0)]
            features = ConvBlock(width, dtype, name=f"decoder_{level}")(
                jnp.concatenate([skip, upsampled], axis=-1), train
            )
        logits = nn.Conv(self.num_classes, (1, 1), dtype=compute_dtype(dtype), name="classifier")(
            features
        )
        return logits.astype(jnp.float32)
