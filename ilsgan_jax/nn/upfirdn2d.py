"""FIR up/down-sampling of NHWC images (`upfirdn2d`) and the helpers built on it.

Semantics follow StyleGAN2-ADA's `upfirdn2d`: insert `up - 1` zeros after every pixel, pad (negative
padding crops), convolve with the FIR filter (true convolution unless `flip_filter`), keep every
`down`-th pixel. A 1-D filter is applied separably along H and W; this is equal to the reference's
2-D outer-product filter (the reference turns a 4-tap 1-D filter into its outer product), but costs
2 x 4 instead of 16 multiply-adds per pixel.

The separable path is polyphase: upsampling filters the low-rate image once per output phase with
that phase's taps (every `up`-th tap) and interleaves the phases with a stack + reshape;
downsampling splits the padded image into its `down` phases with a reshape and filters each phase at
the low rate. No zero is ever inserted and no strided slice is taken, so neither the forward nor the
backward pass touches XLA:CPU's slow interior-padding / strided-slice kernels (forward + backward of
a 2x upsampling is several times faster than the zero-insertion form). The taps are sums of shifted
slices, which XLA fuses into elementwise loops. `upfirdn2d_direct` is the literal zero-insertion
definition, kept as a second implementation for the tests (and for 2-D kernels).
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

Padding = int | Sequence[int]


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1), normalize: bool = True) -> np.ndarray:
    """Returns the 1-D FIR filter `taps / sum(taps)` as float32 NumPy data."""
    kernel = np.asarray(taps, dtype=np.float64)
    if kernel.ndim != 1 or kernel.size == 0:
        raise ValueError(
            f"FIR filter taps must be a non-empty 1-D sequence, got shape {kernel.shape}"
        )
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


class AxisPhase(NamedTuple):
    """One output phase of an upsampling correlation along one axis.

    Outputs `q = up * m + phase` (`m < length`) read input samples `m + offset + s` with the taps
    `first_tap + up * s` (`s < num_taps`; zero taps means the phase is identically zero)."""

    phase: int
    first_tap: int
    num_taps: int
    offset: int
    length: int


def upsampling_phases(num_taps: int, up: int, pad0: int, out_len: int) -> list[AxisPhase]:
    """Polyphase plan of `y[q] = sum_t u[q + t] * taps[t]`, `q < out_len`, where `u` is the input
    with `up - 1` zeros inserted after every sample and `pad0` zeros in front (negative crops)."""
    phases = []
    for phase in range(up):
        first_tap = (pad0 - phase) % up
        count = len(range(first_tap, num_taps, up))
        offset = (phase + first_tap - pad0) // up
        length = max(0, (out_len - phase + up - 1) // up)
        phases.append(AxisPhase(phase, first_tap, count, offset, length))
    return phases


def pad_axis(x: jnp.ndarray, axis: int, low: int, high: int) -> jnp.ndarray:
    """Zero-pads (negative: crops) `x` along `axis`."""
    if low == 0 and high == 0:
        return x
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (low, high, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def slice_axis(x: jnp.ndarray, axis: int, start: int, length: int) -> jnp.ndarray:
    """`x[..., start : start + length, ...]` along `axis` (a contiguous slice)."""
    return lax.slice_in_dim(x, start, start + length, axis=axis)


def interleave_phases(phases: list[jnp.ndarray], axis: int, out_len: int) -> jnp.ndarray:
    """Interleaves `up` phase arrays along `axis` (`out[up * m + a] = phases[a][m]`), cropped to
    `out_len`. Shorter phases are zero-padded at the end first."""
    up = len(phases)
    longest = max(p.shape[axis] for p in phases)
    phases = [pad_axis(p, axis, 0, longest - p.shape[axis]) for p in phases]
    stacked = jnp.stack(phases, axis=axis + 1)
    shape = list(phases[0].shape)
    shape[axis] = longest * up
    return slice_axis(stacked.reshape(shape), axis, 0, out_len)


def split_phases(x: jnp.ndarray, axis: int, down: int, length: int) -> list[jnp.ndarray]:
    """`[x[a::down] for a in range(down)]` along `axis`, each of `length` samples (zero-padded or
    cropped), via one reshape instead of strided slices."""
    x = pad_axis(x, axis, 0, down * length - x.shape[axis])
    shape = list(x.shape)
    shape[axis : axis + 1] = [length, down]
    x = x.reshape(shape)
    return [lax.index_in_dim(x, a, axis=axis + 1, keepdims=False) for a in range(down)]


def _correlate_axis(x: jnp.ndarray, taps: np.ndarray, axis: int, out_len: int) -> jnp.ndarray:
    """Valid correlation `y[o] = sum_t x[o + t] * taps[t]`, `o < out_len`, along `axis`."""
    result = None
    for offset, weight in enumerate(taps):
        if weight == 0:
            continue
        term = slice_axis(x, axis, offset, out_len) * float(weight)
        result = term if result is None else result + term
    if result is None:
        shape = list(x.shape)
        shape[axis] = out_len
        return jnp.zeros(shape, x.dtype)
    return result


def _upfirdn_axis(
    x: jnp.ndarray, taps: np.ndarray, axis: int, up: int, down: int, pad0: int, pad1: int
) -> jnp.ndarray:
    """upfirdn along one axis; `taps` are correlation taps (already flipped for convolution)."""
    length = x.shape[axis]
    num_taps = taps.size
    out_len = (length * up + pad0 + pad1 - num_taps) // down + 1
    if out_len <= 0:
        raise ValueError(
            f"upfirdn2d: axis of size {length} too small for a {num_taps}-tap filter "
            f"(up={up}, down={down}, padding=({pad0}, {pad1}))"
        )
    if up == 1:
        x = pad_axis(x, axis, pad0, 0)  # the end is padded or cropped below as needed
        if down == 1:
            x = pad_axis(x, axis, 0, out_len + num_taps - 1 - x.shape[axis])
            return _correlate_axis(x, taps, axis, out_len)
        # y[o] = sum_t x[down * o + t] taps[t] = sum_t phase_{t % down}[o + t // down] taps[t]
        phase_len = out_len + (num_taps - 1) // down
        phases = split_phases(x, axis, down, phase_len)
        result = None
        for phase_index, phase in enumerate(phases):
            phase_taps = taps[phase_index::down]
            if phase_taps.size == 0:
                continue
            term = _correlate_axis(phase, phase_taps, axis, out_len)
            result = term if result is None else result + term
        assert result is not None
        return result
    full_len = length * up + pad0 + pad1 - num_taps + 1  # outputs before decimation
    outputs = []
    for plan in upsampling_phases(num_taps, up, pad0, full_len):
        phase_taps = taps[plan.first_tap :: up]
        shifted = pad_axis(
            x, axis, -plan.offset, plan.length + plan.num_taps - 1 + plan.offset - length
        )
        outputs.append(_correlate_axis(shifted, phase_taps, axis, plan.length))
    result = interleave_phases(outputs, axis, full_len)
    if down > 1:
        result = split_phases(result, axis, down, out_len)[0]
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
    if kernel.ndim != 1:
        return upfirdn2d_direct(x, kernel, up, down, padding, gain, flip_filter)
    pad_x0, pad_x1, pad_y0, pad_y1 = parse_padding(padding)
    taps = kernel * np.float32(gain ** (kernel.ndim / 2))
    if not flip_filter:
        taps = taps[::-1]
    x = _upfirdn_axis(x, taps, axis=1, up=up, down=down, pad0=pad_y0, pad1=pad_y1)
    return _upfirdn_axis(x, taps, axis=2, up=up, down=down, pad0=pad_x0, pad1=pad_x1)


def upfirdn2d_direct(
    x: jnp.ndarray,
    kernel: np.ndarray | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = 1.0,
    flip_filter: bool = False,
) -> jnp.ndarray:
    """`upfirdn2d` by zero insertion (interior padding) and strided slices: the literal
    definition, kept as the reference for the polyphase fast path (slow backward on XLA:CPU).

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
                    (
                        x.shape[0],
                        dy + (out_h - 1) * down + 1,
                        dx + (out_w - 1) * down + 1,
                        x.shape[3],
                    ),
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
    """Filters `[N, H, W, C]` images, padding so the output keeps the input size (+ padding)."""
    taps = filter_size(kernel)
    pad_x0, pad_x1, pad_y0, pad_y1 = parse_padding(padding)
    pad = (
        pad_x0 + taps // 2,
        pad_x1 + (taps - 1) // 2,
        pad_y0 + taps // 2,
        pad_y1 + (taps - 1) // 2,
    )
    return upfirdn2d(x, kernel, padding=pad, gain=gain)


def upsample2d(x: jnp.ndarray, kernel: np.ndarray, up: int = 2, padding: Padding = 0, gain=1.0):
    """FIR upsampling by `up`: `[N, H, W, C] -> [N, H * up, W * up, C]`."""
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
