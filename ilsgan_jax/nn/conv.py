"""Convolution with optional FIR up/downsampling, as StyleGAN2-ADA's `conv2d_resample` (NHWC/HWIO).

Upsampling convs take the reference's generic path (FIR-upsample, then a VALID convolution), which
is the same linear map as its transposed-conv fast path; it avoids XLA:CPU's slow lhs-dilated convs.
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

from ilsgan_jax.nn import upfirdn2d as fir

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def conv2d(x: jnp.ndarray, weight: jnp.ndarray, stride: int = 1, padding: int = 0) -> jnp.ndarray:
    """Cross-correlation of `[N, H, W, Cin]` with `[kh, kw, Cin, Cout]`, symmetric zero padding."""
    kh, kw, _, _ = weight.shape
    if kh == 1 and kw == 1 and stride == 1 and padding == 0:
        return jnp.einsum("nhwi,io->nhwo", x, weight[0, 0])
    return lax.conv_general_dilated(
        x,
        weight.astype(x.dtype),
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=_DIMENSIONS,
    )


def conv2d_resample(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    resample_filter: np.ndarray | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> jnp.ndarray:
    """2-D convolution with optional up/downsampling; padding is applied once, at the start.

    Args:
      x: `[N, H, W, Cin]`.
      weight: `[kh, kw, Cin, Cout]` (square kernels).
      resample_filter: 1-D FIR filter from `upfirdn2d.setup_filter` (needed if up or down > 1).
      up, down: integer factors (not both > 1).
      padding: padding with respect to the upsampled image (the reference's `padding`).
      flip_weight: True = correlation (reference default), False = true convolution.
      flip_filter: passed to `upfirdn2d`.

    Returns:
      `[N, H * up / down, W * up / down, Cout]` for `padding = kernel_size // 2`.
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up and down at once is not supported")
    kh, kw, _, _ = weight.shape
    if kh != kw:
        raise ValueError(f"conv2d_resample expects square kernels, got {weight.shape}")
    if not flip_weight:
        weight = weight[::-1, ::-1]
    taps = fir.filter_size(resample_filter)
    pad0 = pad1 = padding
    if up > 1:
        pad0 += (taps + up - 1) // 2
        pad1 += (taps - up) // 2
    if down > 1:
        pad0 += (taps - down + 1) // 2
        pad1 += (taps - down) // 2
    pads = (pad0, pad1, pad0, pad1)

    if down > 1:
        if kw == 1:  # downsample first, then the 1x1 conv
            x = fir.upfirdn2d(x, resample_filter, down=down, padding=pads, flip_filter=flip_filter)
            return conv2d(x, weight)
        x = fir.upfirdn2d(x, resample_filter, padding=pads, flip_filter=flip_filter)
        return conv2d(x, weight, stride=down)
    if up > 1:
        if kw == 1:  # 1x1 conv first, then upsample
            x = conv2d(x, weight)
            return fir.upfirdn2d(
                x, resample_filter, up=up, padding=pads, gain=up * up, flip_filter=flip_filter
            )
        x = fir.upfirdn2d(x, resample_filter, up=up, padding=pads, gain=up * up, flip_filter=flip_filter)
        return conv2d(x, weight)
    return conv2d(x, weight, padding=padding)
