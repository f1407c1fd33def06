"""The comparison's picture (`WORKDIR/systems.png`): every finished row's last sample grid, its
first columns, one block per row under a label with its score, top to bottom.

The rows' grids differ in their rows (the layered systems: composite, shifted composite,
foreground, background, mask, foreground over white; the Independence prior: composite,
background, then each instance over white and its mask) but share the column width, so the
blocks stack; narrower ones are padded with white.
"""

import numpy as np
from PIL import Image

from ilsgan_jax.evaluate import samples as sample_grids
from ilsgan_jax.stages.compare_rows import ROWS, SIZES, stage_config
from ilsgan_jax.stages.layer_figure import PADDING, text_strip

FIGURE_NAME = "systems.png"


def grid_resolution(result: dict) -> int:
    """The image size of `result`'s sample grid: its row's last GAN stage at its size."""
    row = ROWS[result["row"]]
    config = stage_config(row.stages[-1], SIZES[result["size"]], seed=result["seed"])
    return int(config.data.resolution)


def row_label(result: dict) -> str:
    own = result.get("own_route") or {}
    own_text = f" / own {own['per_image_iou']:.2f}" if own.get("status") == "ok" else ""
    return (
        f"{result['row']}: IoU {result['per_image_iou']:.2f}{own_text}, {result['kimg']:.0f} kimg"
    )


def first_columns(grid: np.ndarray, resolution: int, num_columns: int) -> np.ndarray:
    """The left `num_columns` images of a `make_grid` grid [H, W, 3] (padding kept)."""
    width = num_columns * (resolution + PADDING) + PADDING
    return grid[:, : min(width, grid.shape[1])]


def systems_figure(results: list[dict], output: str, *, num_columns: int = 10) -> str | None:
    """Writes the picture of the first seed of every row with status 'ok' and a sample grid to
    `output` (PNG); returns its path, or None when no row has one."""
    blocks, seen = [], set()
    for result in results:
        grid_path = result.get("files", {}).get("samples")
        if result["status"] != "ok" or not grid_path or result["row"] in seen:
            continue
        seen.add(result["row"])
        grid = np.asarray(Image.open(grid_path).convert("RGB"))
        columns = first_columns(grid, grid_resolution(result), num_columns)
        blocks.append(np.concatenate([text_strip(row_label(result), columns.shape[1]), columns]))
    if not blocks:
        return None
    width = max(block.shape[1] for block in blocks)
    padded = [
        np.pad(block, ((0, 0), (0, width - block.shape[1]), (0, 0)), constant_values=255)
        for block in blocks
    ]
    return sample_grids.save_png(np.concatenate(padded), output)
