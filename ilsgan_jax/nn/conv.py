"""Convolution with optional FIR up/downsampling, as StyleGAN2-ADA's `conv2d_resample` (NHWC/HWIO).

Upsampling k x k convs follow the reference's fast path (a stride-`up` transposed convolution, then
the FIR filter at the high rate), which costs `1 / up^2` of the multiply-adds of the literal form
(FIR-upsample, then a convolution on the upsampled grid). The transposed convolution is written
without zero insertion (XLA:CPU's lhs-dilated convolutions are slow): it is a sub-pixel
convolution, one ordinary low-rate convolution per output phase, interleaved by a reshape
(depth-to-space). `conv2d_resample_direct` keeps the literal form
for the tests.
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

from ilsgan_jax.nn import upfirdn2d as fir

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def conv2d(x: jnp.ndarray, weight: jnp.ndarray, stride: int = 1, padding: int = 0) -> jnp.ndarray:
    """Cross-correlation of `[N, H, W, Cin]` with `[kh, kw, Cin, Cout]`, symmetric zero padding,
    in `x`'s dtype (the weight is cast to it)."""
    kh, kw, _, _ = weight.shape
    if kh == 1 and kw == 1 and stride == 1 and padding == 0:
        return jnp.einsum("nhwi,io->nhwo", x, weight[0, 0].astype(x.dtype))
    return lax.conv_general_dilated(
        x,
        weight.astype(x.dtype),
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=_DIMENSIONS,
    )


def transposed_conv2d(x: jnp.ndarray, weight: jnp.ndarray, up: int) -> jnp.ndarray:
    """Full correlation of the zero-inserted image with `weight` (the reference's stride-`up`
    `conv_transpose2d` with the flipped kernel): `[N, H, W, Cin] -> [N, L(H), L(W), Cout]` with
    `L(n) = up * (n - 1) + k`, as `up^2` low-rate convolutions interleaved by a reshape.

    Output `q` along an axis reads `u[q + t] * w[t]`, `u` = input with `up - 1` zeros after every
    sample and `k - 1` zeros in front; phase `a = q % up` only meets the taps `t = t0(a) + up * s`,
    so each output phase is an ordinary convolution of the input with those taps (for k = 3, up = 2:
    2x2, 2x1, 1x2 and 1x1 kernels, 9 taps in all instead of 36 on the upsampled grid). Separate
    convolutions measured faster (forward + backward) on XLA:CPU than one convolution with the
    phases packed into `up^2 * Cout` outputs over a common window (16 taps).
    """
    batch, height, width, in_channels = x.shape
    k, _, _, out_channels = weight.shape
    out_h, out_w = up * (height - 1) + k, up * (width - 1) + k
    plans_y = fir.upsampling_phases(k, up, k - 1, out_h)
    plans_x = fir.upsampling_phases(k, up, k - 1, out_w)
    zero = jnp.zeros((), x.dtype)
    rows = []
    for plan_y in plans_y:
        cols = []
        for plan_x in plans_x:
            if plan_y.num_taps == 0 or plan_x.num_taps == 0:  # k < up: no tap reaches this phase
                shape = (batch, plans_y[0].length, plans_x[0].length, out_channels)
                cols.append(jnp.zeros(shape, x.dtype))
                continue
            taps = weight[plan_y.first_tap :: up, plan_x.first_tap :: up]
            shifted = lax.pad(
                x,
                zero,
                [
                    (0, 0, 0),
                    (
                        -plan_y.offset,
                        plan_y.length + plan_y.num_taps - 1 + plan_y.offset - height,
                        0,
                    ),
                    (
                        -plan_x.offset,
                        plan_x.length + plan_x.num_taps - 1 + plan_x.offset - width,
                        0,
                    ),
                    (0, 0, 0),
                ],
            )
            phase = conv2d(shifted, taps.astype(x.dtype))
            # every phase is padded to the longest (phase 0) before the interleave
            phase = lax.pad(
                phase,
                zero,
                [
                    (0, 0, 0),
                    (0, plans_y[0].length - plan_y.length, 0),
                    (0, plans_x[0].length - plan_x.length, 0),
                    (0, 0, 0),
                ],
            )
            cols.append(phase.astype(x.dtype))
        rows.append(jnp.stack(cols, axis=3))  # [N, Ly, Lx, up, C]
    y = jnp.stack(rows, axis=2)  # [N, Ly, up, Lx, up, C]
    y = y.reshape(batch, plans_y[0].length * up, plans_x[0].length * up, out_channels)
    return y[:, :out_h, :out_w]


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
        # conv(FIR(Z(x))) = FIR(conv(Z(x))): the transposed conv covers every window that meets a
        # sample (k - 1 zeros in front); the FIR padding re-aligns it to the literal form's grid.
        x_len = x.shape[1], x.shape[2]
        x = transposed_conv2d(x, weight, up)
        front = pad0 - (kw - 1)
        out_h = x_len[0] * up + pad0 + pad1 - (kw - 1) - (taps - 1)
        out_w = x_len[1] * up + pad0 + pad1 - (kw - 1) - (taps - 1)
        back_h = out_h + taps - 1 - front - x.shape[1]
        back_w = out_w + taps - 1 - front - x.shape[2]
        return fir.upfirdn2d(
            x,
            resample_filter,
            padding=(front, back_w, front, back_h),
            gain=up * up,
            flip_filter=flip_filter,
        )
    return conv2d(x, weight, padding=padding)


def conv2d_resample_direct(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    resample_filter: np.ndarray | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> jnp.ndarray:
    """`conv2d_resample` in the literal form (zero-insertion FIR upsampling, then a convolution on
    the upsampled grid); the same linear map, kept as the tests' second implementation."""
    kw = weight.shape[1]
    if up == 1 or kw == 1:
        return conv2d_resample(
            x, weight, resample_filter, up, down, padding, flip_weight, flip_filter
        )
    if down > 1:
        raise ValueError("conv2d_resample: up and down at once is not supported")
    if not flip_weight:
        weight = weight[::-1, ::-1]
    taps = fir.filter_size(resample_filter)
    pad0 = padding + (taps + up - 1) // 2
    pad1 = padding + (taps - up) // 2
    x = fir.upfirdn2d_direct(
        x,
        resample_filter,
        up=up,
        padding=(pad0, pad1, pad0, pad1),
        gain=up * up,
        flip_filter=flip_filter,
    )
    return conv2d(x, weight)
