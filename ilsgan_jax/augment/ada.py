"""Adaptive discriminator augmentation: the differentiable 'bgc' pipeline of StyleGAN2-ADA.

`augment(images, key, p, config=...)` applies, per sample and each with probability
`multiplier * p`, the geometric transforms (x-flip, 90-degree rotation, integer translation,
isotropic scaling, rotation, anisotropic scaling, fractional translation) and then the colour
transforms (brightness, contrast, luma flip, hue rotation, saturation). It is linear in the images
for a fixed key, differentiable with respect to them, jit-friendly (static shapes; p is a traced
scalar) and the identity (up to float rounding) when p == 0.

The geometric part follows the reference's execution: reflect padding, 2x upsampling with the
orthogonal 'sym6' wavelet low-pass filter, bilinear sampling of the composed affine transform
(zero outside the padded image), and 2x downsampling with the same filter. One deviation, for
static shapes: the reference pads by a data-dependent margin (large enough for the batch's
transforms, clipped to `size - 1`); here the padding is always that clip value, `size - 1`. The
reflected content is the same function of the image, so results agree wherever the reference's
margin covered all sampled points, and are identical when the reference margin hits the clip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ilsgan_jax.augment import matrices
from ilsgan_jax.augment.config import AdaConfig, as_ada_config
from ilsgan_jax.nn.upfirdn2d import upfirdn2d

# Low-pass decomposition filter of the 'sym6' wavelet (Daubechies' least-asymmetric, 12 taps),
# the orthogonal filter StyleGAN2-ADA uses for its geometric augmentations.
SYM6_TAPS = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)


def geometric_filter() -> np.ndarray:
    """The 'sym6' low-pass filter normalised to unit DC gain: [12] float64 NumPy data."""
    taps = np.asarray(SYM6_TAPS, dtype=np.float64)
    return taps / taps.sum()


def _bilinear_sample(images: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Bilinear interpolation with zeros outside the image, written as one gather.

    Args:
      images: [N, H, W, C] float32.
      x, y: [N, Ho, Wo] float32 sample positions in pixel indices (pixel (0, 0) at 0.0).

    Returns:
      [N, Ho, Wo, C] float32; differentiable w.r.t. `images` (the gather's transpose is a
      scatter-add) and w.r.t. the positions. The four corners of all samples are read with a
      single gather from the flattened batch, whose transpose is ~2x cheaper on CPU than four
      batched `take_along_axis` gathers.
    """
    n, height, width, channels = images.shape
    x0 = jnp.floor(x)
    y0 = jnp.floor(y)
    weight_x1 = x - x0
    weight_y1 = y - y0
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    columns = jnp.stack([x0, x0 + 1, x0, x0 + 1], axis=-1)  # [N, Ho, Wo, 4]
    rows = jnp.stack([y0, y0, y0 + 1, y0 + 1], axis=-1)
    weights = jnp.stack(
        [
            (1 - weight_x1) * (1 - weight_y1),
            weight_x1 * (1 - weight_y1),
            (1 - weight_x1) * weight_y1,
            weight_x1 * weight_y1,
        ],
        axis=-1,
    )
    inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    weights = jnp.where(inside, weights, 0.0)
    sample_offset = (jnp.arange(n, dtype=jnp.int32) * (height * width))[:, None, None, None]
    flat_index = (
        sample_offset + jnp.clip(rows, 0, height - 1) * width + jnp.clip(columns, 0, width - 1)
    )
    corners = images.reshape(n * height * width, channels)[flat_index]  # [N, Ho, Wo, 4, C]
    return jnp.einsum("nhwk,nhwkc->nhwc", weights, corners)


def apply_geometric(images: jax.Array, g_inv: jax.Array) -> jax.Array:
    """Warps each image by its inverse transform, band-limited as in the reference.

    Args:
      images: [N, H, W, C] float32.
      g_inv: [N, 3, 3] float32, output pixel -> input pixel in centre-origin pixel coordinates
        (see `matrices.sample_geometric_matrix`).

    Returns:
      [N, H, W, C] float32.
    """
    n, height, width, _ = images.shape
    lowpass = geometric_filter()
    filter_pad = lowpass.size // 4  # Border kept around the output for the downsampling filter.

    # Reflect-pad by the largest margin the reference can choose (see the module docstring). The
    # padding is symmetric, so the transform's origin stays at the centre.
    margin_x, margin_y = width - 1, height - 1
    padding = ((0, 0), (margin_y, margin_y), (margin_x, margin_x), (0, 0))
    padded = jnp.pad(images, padding, mode="reflect")

    # 2x upsampling (the reference's upsample2d padding and gain for a 12-tap filter).
    taps = lowpass.size
    up_pad_0, up_pad_1 = (taps + 1) // 2, (taps - 2) // 2
    upsampled = upfirdn2d(
        padded, lowpass, up=2, padding=(up_pad_0, up_pad_1, up_pad_0, up_pad_1), gain=4.0
    )

    # The same transform in upsampled pixels: conjugate by the 2x scale and the half-pixel shift.
    g_inv = matrices.scale2d(2, 2) @ g_inv @ matrices.scale2d(0.5, 0.5)
    g_inv = matrices.translate2d(-0.5, -0.5) @ g_inv @ matrices.translate2d(0.5, 0.5)

    # Sample an output of (size + 2 * filter_pad) * 2 pixels, centred like the input.
    out_height = (height + 2 * filter_pad) * 2
    out_width = (width + 2 * filter_pad) * 2
    in_height, in_width = upsampled.shape[1], upsampled.shape[2]
    out_x = jnp.arange(out_width, dtype=jnp.float32) + 0.5 - out_width / 2
    out_y = jnp.arange(out_height, dtype=jnp.float32) + 0.5 - out_height / 2
    grid_y, grid_x = jnp.meshgrid(out_y, out_x, indexing="ij")
    out_points = jnp.stack([grid_x, grid_y, jnp.ones_like(grid_x)], axis=-1)  # [Ho, Wo, 3]
    in_points = jnp.einsum("nij,hwj->nhwi", g_inv, out_points)
    sample_x = in_points[..., 0] + in_width / 2 - 0.5
    sample_y = in_points[..., 1] + in_height / 2 - 0.5
    warped = _bilinear_sample(upsampled, sample_x, sample_y)

    # 2x downsampling with the flipped filter, cropping the filter_pad border (reference
    # downsample2d with padding -2 * filter_pad and flip_filter=True).
    down_pad_0 = -2 * filter_pad + (taps - 1) // 2
    down_pad_1 = -2 * filter_pad + (taps - 2) // 2
    return upfirdn2d(
        warped,
        lowpass,
        down=2,
        padding=(down_pad_0, down_pad_1, down_pad_0, down_pad_1),
        flip_filter=True,
    )


def apply_colour(images: jax.Array, colour: jax.Array) -> jax.Array:
    """Applies a per-sample homogeneous colour matrix.

    Args:
      images: [N, H, W, C] float32, C = 3 (RGB) or 1 (the mean of the RGB rows is used, as in
        the reference).
      colour: [N, 4, 4] float32.

    Returns:
      [N, H, W, C] float32.
    """
    channels = images.shape[-1]
    if channels == 3:
        linear = colour[:, :3, :3]
        offset = colour[:, :3, 3]
        return jnp.einsum("nij,nhwj->nhwi", linear, images) + offset[:, None, None, :]
    if channels == 1:
        row = colour[:, :3, :].mean(axis=1)  # [N, 4]
        return images * row[:, None, None, :3].sum(-1, keepdims=True) + row[:, None, None, 3:]
    raise ValueError(f"images must have 1 or 3 channels, got {channels}")


def augment(
    images: jax.Array,
    key: jax.Array,
    p,
    *,
    config: AdaConfig | Mapping[str, Any] | ml_collections.ConfigDict,
) -> jax.Array:
    """Applies the ADA pipeline to a batch of images.

    Args:
      images: [N, H, W, C] float32 in [-1, 1] (values outside are transformed the same way),
        C = 3 or 1, H, W >= 2.
      key: PRNG key; every call should get a fresh one.
      p: augmentation probability, float scalar in [0, 1]; may be traced (one compilation for all
        p). At p == 0 the output equals the input up to float rounding.
      config: `AdaConfig` (or the equivalent ConfigDict/mapping); static. With mode 'noaug' the
        images are returned unchanged.

    Returns:
      [N, H, W, C] float32 augmented images.
    """
    config = as_ada_config(config)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    n, height, width, channels = images.shape
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {images.shape}")
    if height < 2 or width < 2:
        raise ValueError(f"images must be at least 2x2 pixels, got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images must be floating point, got dtype {images.dtype}")
    if jnp.ndim(p) != 0:
        raise ValueError(f"p must be a scalar, got shape {jnp.shape(p)}")
    if config.mode == "noaug":
        return images

    geometric_key, colour_key = jax.random.split(key)
    if config.has_geometric:
        g_inv = matrices.sample_geometric_matrix(geometric_key, p, n, height, width, config)
        images = apply_geometric(images, g_inv)
    if config.has_colour:
        colour = matrices.sample_colour_matrix(colour_key, p, n, channels, config)
        images = apply_colour(images, colour)
    return images
