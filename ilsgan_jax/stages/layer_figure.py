"""`--mode=layer_figure`: the layers of several trained runs (e.g. ILS on and ILS off) on the same
fixed latents, as one PNG, and the markdown table of such an ablation's `report.json` files.

The figure has one block per run, top to bottom: a label strip, then the rows composite,
foreground, background and mask (mask in black (0) to white (1)) of `num_columns` samples. Every
run's EMA generator (the checkpoint the demo exported from: the best-FID one if kept, else the
newest) renders the training sample grids' latents of `config.seed`, so all blocks show the same z.
A JSON caption beside the PNG records the runs, their checkpoints and the layout.
"""

import json
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont

from ilsgan_jax.evaluate import samples as sample_grids
from ilsgan_jax.stages import atomic
from ilsgan_jax.systems import system_for
from ilsgan_jax.train.restore import restore_train_state
from ilsgan_jax.train.samples import fixed_latent_sample_fn

FIGURE_ROWS = ("composite", "fg_rgb", "bg_rgb", "mask")
ROW_TITLES = ("composite", "foreground", "background", "mask")
LABEL_HEIGHT = 14  # pixels of the label strip above each block
FONT_SIZE = 11
PADDING = 1  # white pixels between and around the images (`sample_grids.make_grid`)
ABLATION_ARMS = ("on", "off")  # `launch/ils_ablation.sh`'s workdirs: RUNS_DIR/<arm>_seed<S>


def parse_runs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """`['ILS on=runs/a', 'ILS off=runs/b']` -> `[('ILS on', 'runs/a'), ('ILS off', 'runs/b')]`.
    Raises ValueError for an empty list, an item without `=` or an empty label or workdir."""
    if not specs:
        raise ValueError("--runs is empty: give label=workdir pairs, e.g. 'ILS on=W1,ILS off=W2'")
    runs = []
    for spec in specs:
        label, sep, workdir = spec.partition("=")
        if not sep or not label.strip() or not workdir.strip():
            raise ValueError(f"--runs item {spec!r} is not label=workdir")
        runs.append((label.strip(), workdir.strip()))
    return runs


def run_rows(
    config: ml_collections.ConfigDict, workdir: str, num_columns: int
) -> tuple[dict[str, np.ndarray], int, int]:
    """The figure's rows of the run in `workdir`: `{name: float32 [num_columns, R, R, 3] in
    [-1, 1]}` for FIGURE_ROWS, the checkpoint step and the images it had seen.

    Raises FileNotFoundError naming the path when `workdir/checkpoints` is missing or empty.
    """
    directory = epath.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(
            f"No checkpoints directory {directory}: is {workdir} a trained run?"
        )
    state, step, networks = restore_train_state(config, workdir, prefer_best=True)
    sample = fixed_latent_sample_fn(
        config, system_for(config), networks.generator, num_columns, config.seed
    )
    rows = jax.device_get(sample(state.g_ema_params, state.g_ema_buffers))
    images_seen = int(jax.device_get(state.images_seen))
    return {name: np.asarray(rows[name]) for name in FIGURE_ROWS}, int(step), images_seen


def text_strip(text: str, width: int) -> np.ndarray:
    """A white uint8 strip [LABEL_HEIGHT, width, 3] with `text` in black (PIL's built-in font: no
    font files needed)."""
    strip = Image.new("RGB", (width, LABEL_HEIGHT), "white")
    ImageDraw.Draw(strip).text(
        (2, 1), text, fill="black", font=ImageFont.load_default(size=FONT_SIZE)
    )
    return np.asarray(strip)


def label_strip(text: str, width: int) -> np.ndarray:
    """`text_strip` of `text` followed by the row titles where they fit."""
    font = ImageFont.load_default(size=FONT_SIZE)
    full = f"{text}: rows {', '.join(ROW_TITLES)}"
    fits = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(full, font=font) <= width - 4
    return text_strip(full if fits else text, width)


def figure_block(label: str, rows: dict[str, np.ndarray], scale: int = 1) -> np.ndarray:
    """One run's block: the label strip over the grid of FIGURE_ROWS (`make_grid`, each image
    enlarged `scale` times, nearest neighbour); uint8 [LABEL_HEIGHT + 4 (sR + 1) + 1,
    N (sR + 1) + 1, 3] for N images of R px."""
    enlarged = {
        name: np.repeat(np.repeat(rows[name], scale, axis=1), scale, axis=2) for name in FIGURE_ROWS
    }
    grid = sample_grids.make_grid(enlarged, order=FIGURE_ROWS, padding=PADDING)
    return np.concatenate([label_strip(label, grid.shape[1]), grid])


def write_layer_figure(
    config: ml_collections.ConfigDict,
    runs: Sequence[tuple[str, str]],
    output: str,
    *,
    num_columns: int = 8,
    scale: int = 2,
) -> dict:
    """Writes the figure of `runs` (`[(label, workdir)]`, blocks in this order) to `output` (a
    PNG path, local or a URL) and its caption to `output` with the suffix `.json`; returns the
    caption. All runs are restored with `config` (the same networks; ILS on and off share them
    unless a learned ILS estimator is on) and draw the latents of `config.seed`.

    Raises FileNotFoundError naming the path of a run without checkpoints.
    """
    blocks, caption_runs = [], []
    for label, workdir in runs:
        rows, step, images_seen = run_rows(config, workdir, num_columns)
        blocks.append(figure_block(label, rows, scale))
        caption_runs.append(
            {
                "label": label,
                "workdir": str(workdir),
                "checkpoint_step": step,
                "kimg": images_seen / 1000,
            }
        )
    caption = {
        "runs": caption_runs,
        "rows": list(ROW_TITLES),
        "num_columns": num_columns,
        "scale": scale,
        "seed": int(config.seed),
        "resolution": int(config.data.resolution),
        "layout": "one block per run, top to bottom: label strip, then the rows; mask black=0",
    }
    if jax.process_index() == 0:
        sample_grids.save_png(np.concatenate(blocks), output)
        atomic.write_json(epath.Path(output).with_suffix(".json"), caption)
    return caption


TABLE_HEADER = (
    "| seed | ILS | kimg | per-image IoU | DICE | mask coverage | all-fg fraction | GAN min |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _table_row(seed: str, ils: str, reports: Sequence[dict]) -> str:
    """One markdown row of the means of `reports`' numbers."""

    def mean(key, divisor=1.0):
        return float(np.mean([report[key] for report in reports])) / divisor

    return (
        f"| {seed} | {ils} | {mean('gan_images_seen', 1000):.1f} | {mean('per_image_iou'):.3f} | "
        f"{mean('per_image_dice'):.3f} | {mean('synthetic_mask_coverage'):.2f} | "
        f"{mean('synthetic_full_fraction'):.2f} | {mean('gan_seconds', 60):.1f} |"
    )


def ablation_table(entries: Sequence[tuple[str, str, dict | None]]) -> str:
    """The markdown table of an ablation's demo reports.

    Args:
      entries: `(seed, arm, report)` per run, in row order; `report` is a demo `report.json`
        dict (kimg from `gan_images_seen`, ILS from `ils_enabled`, minutes from `gan_seconds`)
        or None for a run without one (its row says so, with `arm` as the ILS column).
    Returns the header and one row per entry, then per arm (in order of appearance) with two or
    more reports a row of their means, seed column `mean of K`.
    """
    lines = [TABLE_HEADER]
    by_arm: dict[str, list[dict]] = {}
    for seed, arm, report in entries:
        if report is None:
            lines.append(f"| {seed} | {arm} | (no report) | | | | | |")
            continue
        by_arm.setdefault(arm, []).append(report)
        lines.append(_table_row(str(seed), "on" if report["ils_enabled"] else "off", [report]))
    for reports in by_arm.values():
        if len(reports) > 1:
            ils = "on" if reports[0]["ils_enabled"] else "off"
            lines.append(_table_row(f"mean of {len(reports)}", ils, reports))
    return "\n".join(lines)


def ablation_entries(
    runs_dir: str, seeds: Sequence[str], arms: Sequence[str] = ABLATION_ARMS
) -> list[tuple[str, str, dict | None]]:
    """`ablation_table`'s entries from `runs_dir/<arm>_seed<S>/report.json` (None where there is
    none), seed by seed, arms in the order given."""
    entries = []
    for seed in seeds:
        for arm in arms:
            path = epath.Path(runs_dir) / f"{arm}_seed{seed}" / "report.json"
            report = json.loads(path.read_text()) if path.is_file() else None
            entries.append((str(seed), arm, report))
    return entries
