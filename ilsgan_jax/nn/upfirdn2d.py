"""FIR up/down-sampling of NHWC images (`upfirdn2d`) and the helpers built on it.

Semantics follow StyleGAN2-ADA's `upfirdn2d`: insert `up - 1` zeros after every pixel, pad (negative
padding crops), convolve with the FIR filter (true convolution unless `flip_filter`), keep every
`down`-th pixel. A 1-D filter is applied separably along H and W; this is equal to the reference's
2-D outer-product filter (the reference turns a 4-tap 1-D filter into its outer product), but costs
2 x 4 instead of 16 multiply-adds per pixel. The convolution is written as a sum of shifted strided
slices, which XLA fuses into one elementwise loop: much faster on CPU than a depthwise conv.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

Padding = int | Sequence[int]


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1), normalize: bool = True) -> np.ndarray:
    """Returns the 1-D FIR filter `taps / sum(taps)` as float32 NumPy data (a compile-time constant)."""
    kernel = np.asarray(taps, dtype=np.float64)
    if kernel.ndim != 1 or kernel.size == 0:
        raise ValueError(f"FIR filter taps must be a non-empty 1-D sequence, got shape {kernel.shape}")
    if normalize:
        kernel = kernel / kernel.sum()
    return kernel.astype(np.float32)


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """Normalises padding to `(pad_x0, pad_x1, pad_y0, pad_y1)` as the reference does."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        pad_x, pad_y = padding
        return pad_x, pad_x, pad_y, pad_y
    if len(padding) == 4:
        return padding  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding}")


def _fir_along_axis(x: jnp.ndarray, taps: np.ndarray, axis: int, down: int) -> jnp.ndarray:
    """Valid correlation of `x` with `taps` along `axis`, keeping every `down`-th output."""
    length = x.shape[axis]
    out_len = (length - taps.size) // down + 1
    if out_len <= 0:
        raise ValueError(f"upfirdn2d: axis of size {length} too small for a {taps.size}-tap filter")
    result = None
    for offset, weight in enumerate(taps):
        if weight == 0:
            continue
        start = [0] * x.ndim
        limit = list(x.shape)
        strides = [1] * x.ndim
        start[axis] = offset
        limit[axis] = offset + (out_len - 1) * down + 1
        strides[axis] = down
        term = lax.slice(x, start, limit, strides) * float(weight)
        result = term if result is None else result + term
    assert result is not None
    return result


def upfirdn2d(
    x: jnp.ndarray,
    kernel: np.ndarray | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = 1.0,
    flip_filter: bool = False,
) -> jnp.ndarray:
    """Upsample, FIR-filter and downsample a batch of images.

    Args:
      x: `[N, H, W, C]` float images.
      kernel: 1-D separable filter (NumPy, e.g. from `setup_filter`) or 2-D `[fh, fw]` filter, or
        None for the identity (`[1]`).
      up: integer upsampling factor (zeros inserted after each pixel).
      down: integer downsampling factor.
      padding: `p`, `[px, py]` or `[px0, px1, py0, py1]`, on the upsampled image; negative crops.
      gain: overall gain; the filter is scaled by `gain ** (ndim / 2)` per pass, as the reference.
      flip_filter: False = convolution (reference default), True = correlation.

    Returns:
      `[N, H', W', C]` with `H' = (H * up + py0 + py1 - fh) // down + 1` (and likewise W').
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NHWC images, got shape {x.shape}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up} down={down}")
    kernel = np.ones([1], np.float32) if kernel is None else np.asarray(kernel, np.float32)
    pad_x0, pad_x1, pad_y0, pad_y1 = parse_padding(padding)

    # Zero insertion and padding in one lax.pad (interior padding inserts the zeros).
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(
        x,
        zero,
        [
            (0, 0, 0),
            (pad_y0, pad_y1 + up - 1, up - 1),
            (pad_x0, pad_x1 + up - 1, up - 1),
            (0, 0, 0),
        ],
    )

    if kernel.ndim == 1:
        taps = kernel * np.float32(gain ** (kernel.ndim / 2))
        if not flip_filter:
            taps = taps[::-1]
        x = _fir_along_axis(x, taps, axis=1, down=down)
        x = _fir_along_axis(x, taps, axis=2, down=down)
        return x
    if kernel.ndim == 2:
        taps2d = kernel * np.float32(gain ** (kernel.ndim / 2))
        if not flip_filter:
            taps2d = taps2d[::-1, ::-1]
        fh, fw = taps2d.shape
        out_h = (x.shape[1] - fh) // down + 1
        out_w = (x.shape[2] - fw) // down + 1
        result = None
        for dy in range(fh):
            for dx in range(fw):
                if taps2d[dy, dx] == 0:
                    continue
                term = lax.slice(
                    x,
                    (0, dy, dx, 0),
                    (x.shape[0], dy + (out_h - 1) * down + 1, dx + (out_w - 1) * down + 1, x.shape[3]),
                    (1, down, down, 1),
                ) * float(taps2d[dy, dx])
                result = term if result is None else result + term
        assert result is not None
        return result
    raise ValueError(f"kernel must be 1-D or 2-D, got shape {kernel.shape}")


def filter_size(kernel: np.ndarray | None) -> int:
    """Number of taps of a (square) filter."""
    return 1 if kernel is None else int(np.asarray(kernel).shape[-1])


def filter2d(x: jnp.ndarray, kernel: np.ndarray, padding: Padding = 0, gain: float = 1.0):
    """Filters `[N, H, W, C]` images, padding so the output keeps the input size (plus `padding`)."""
    taps = filter_size(kernel)
    pad_x0, pad_x1, pad_y0, pad_y1 = parse_padding(padding)
    pad = (pad_x0 + taps // 2, pad_x1 + (taps - 1) // 2, pad_y0 + taps // 2, pad_y1 + (taps - 1) // 2)
    return upfirdn2d(x, kernel, padding=pad, gain=gain)


def upsample2d(x: jnp.ndarray, kernel: np.ndarray, up: int = 2, padding: Padding = 0, gain=1.0):
    """FIR upsampling by `up`: `[N, H, W, C] -> [N, H * up, W * up, C]` (with zero extra padding)."""
    taps = filter_size(kernel)
    pad_x0, pad_x1, pad_y0, pad_y1 = parse_padding(padding)
    pad = (
        pad_x0 + (taps + up - 1) // 2,
        pad_x1 + (taps - up) // 2,
        pad_y0 + (taps + up - 1) // 2,
        pad_y1 + (taps - up) // 2,
    )
    return upfirdn2d(x, kernel, up=up, padding=pad, gain=gain * up * up)


def downsample2d(x: jnp.ndarray, kernel: np.ndarray, down: int = 2, padding: Padding = 0, gain=1.0):
    """FIR downsampling by `down`: `[N, H, W, C] -> [N, H // down, W // down, C]`."""
    taps = filter_size(kernel)
    pad_x0, pad_x1, pad_y0, pad_y1 = parse_padding(padding)
    pad = (
        pad_x0 + (taps - down + 1) // 2,
        pad_x1 + (taps - down) // 2,
        pad_y0 + (taps - down + 1) // 2,
        pad_y1 + (taps - down) // 2,
    )
    return upfirdn2d(x, kernel, down=down, padding=pad, gain=gain)
