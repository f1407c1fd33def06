"""Resampling helpers shared by the ILS objective and the MI estimator."""

import jax.numpy as jnp
import numpy as np


def nearest_source_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output pixel for PyTorch's default `F.interpolate(mode='nearest')`.

    PyTorch computes `src = min(floor(dst * in_size / out_size), in_size - 1)`; downsampling by an
    integer factor therefore keeps the top-left pixel of each block (no averaging).
    """
    scale = np.float32(in_size) / np.float32(out_size)
    indices = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int32)
    return np.minimum(indices, in_size - 1)


def nearest_resize(images: jnp.ndarray, size: int) -> jnp.ndarray:
    """Nearest-neighbour resize to `size x size` with PyTorch's index rule (differentiable gather).

    Args:
      images: [N, H, W, C] float32.
      size: output height and width.

    Returns:
      [N, size, size, C] float32; `images` itself when it already has that size.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    height, width = images.shape[1:3]
    if (height, width) == (size, size):
        return images
    rows = nearest_source_indices(height, size)
    cols = nearest_source_indices(width, size)
    return images[:, rows][:, :, cols]
