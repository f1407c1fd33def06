"""Sample grids: one image-grid writer for TensorBoard and PNG files (rows come from the
system, `System.sample_rows`)."""

import io
import os

import numpy as np
from PIL import Image

from ilsgan_jax import files

# Rows of the layered grid, top to bottom.
GRID_ROWS = ("composite", "shifted_composite", "fg_rgb", "bg_rgb", "mask", "fg_over_white")


def to_uint8(images: np.ndarray) -> np.ndarray:
    """`[..., C]` float in [-1, 1] -> uint8 in [0, 255] (StyleGAN2's quantisation)."""
    scaled = np.floor(np.asarray(images, np.float32) * 127.5 + 128.0)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def make_grid(rows: dict, order=GRID_ROWS, padding: int = 1) -> np.ndarray:
    """Tiles `{name: [N, H, W, 3]}` rows into one uint8 image `[rows*(H+p), ...]`: the rows named
    in `order` first, in that order, then the others in their dict order (e.g. the
    Independence prior's per-instance rows)."""
    names = [name for name in order if name in rows]
    names += [name for name in rows if name not in names]
    first = np.asarray(rows[names[0]])
    count, height, width, _ = first.shape
    grid = np.full(
        (len(names) * (height + padding) + padding, count * (width + padding) + padding, 3),
        255,
        np.uint8,
    )
    for r, name in enumerate(names):
        images = to_uint8(rows[name])
        for c in range(count):
            top, left = padding + r * (height + padding), padding + c * (width + padding)
            grid[top : top + height, left : left + width] = images[c]
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 `[H, W, 3]` (or `[H, W]`) image encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: np.ndarray, path: str | os.PathLike) -> str:
    """Writes a uint8 `[H, W, 3]` (or `[H, W]`) image as PNG to `path` (local or a URL),
    atomically (`files.write_bytes`); returns the path."""
    return str(files.write_bytes(path, png_bytes(image)))
