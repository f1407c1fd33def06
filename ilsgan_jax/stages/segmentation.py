"""The U-Net route: `--mode=train_segmenter` (train on the exported pairs, score on the real
evaluation split), `--mode=evaluate` (score the saved segmenter again) and `--mode=segment`
(masks for a user's folder of images). The segmenter's weights live in the orbax directory
`workdir/segmenter/weights/` (older runs: `workdir/segmenter/best.msgpack`, still read). The
workdir, --input and --output may be local or URLs (gs://...)."""

import io
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from PIL import Image, UnidentifiedImageError

from ilsgan_jax import compiler_options
from ilsgan_jax.data import cub_split
from ilsgan_jax.data.eval_split import load_eval_split
from ilsgan_jax.evaluate import pair_dataset, seg_metrics
from ilsgan_jax.evaluate import samples as sample_grids
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.stages import atomic, weights
from ilsgan_jax.stages.export import load_pairs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # what segment_folder reads


def segmenter_dir(workdir: str) -> epath.Path:
    """`workdir/segmenter/weights`: the orbax directory of the U-Net's variables."""
    return epath.Path(workdir) / "segmenter" / "weights"


def _legacy_segmenter_file(workdir: str) -> epath.Path:
    return epath.Path(workdir) / "segmenter" / "best.msgpack"


def save_segmenter(workdir: str, variables: dict) -> str:
    """Writes the U-Net's `{'params', 'batch_stats'}` into `segmenter_dir(workdir)` with orbax
    (atomically; every process calls it); returns the directory."""
    return weights.save(segmenter_dir(workdir), variables)


def load_segmenter(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The U-Net's variables (NumPy leaves) from `segmenter_dir(workdir)`, or from an older
    run's `segmenter/best.msgpack`, shaped by `config.segmenter` at `config.data.resolution`.
    FileNotFoundError if there are none; ValueError naming the path if they cannot be read."""
    resolution = config.data.resolution
    state = jax.eval_shape(
        lambda key: segmenter_lib.create_state(key, config.segmenter, (resolution, resolution, 3)),
        jax.random.key(0),
    )
    template = {"params": state.params, "batch_stats": state.batch_stats}
    return weights.load(
        segmenter_dir(workdir),
        _legacy_segmenter_file(workdir),
        template,
        what="segmenter",
        remedy="--mode=train_segmenter",
    )


def train_and_score_segmenter(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the U-Net on the exported pairs (best validation IoU kept), scores it on the real
    evaluation split, writes `segmenter/report.json` and previews; returns the report."""
    start = time.time()
    images, masks = load_pairs(pair_dataset.dataset_dir(epath.Path(workdir) / "export"))
    result = segmenter_lib.train_segmenter(
        images,
        masks,
        config.segmenter,
        seed=config.seed,
        compiler_options=compiler_options.for_devices(config, jax.local_devices()[:1]),
    )
    save_segmenter(workdir, result.variables)
    test_images, test_masks = load_eval_split(config)
    metrics = segmenter_lib.score_segmenter(
        result.variables, test_images, test_masks, config.segmenter
    )
    report = {
        "data": config.data.name,
        "resolution": config.data.resolution,
        "num_synthetic_pairs": int(images.shape[0]),
        "num_test_images": int(test_images.shape[0]),
        "best_val_step": int(result.best_step),
        "best_val_metrics": {k: float(v) for k, v in result.best_val_metrics.items()},
        "test": {k: float(v) for k, v in metrics.items()},
        "all_foreground_iou": seg_metrics.all_foreground_baseline(test_masks),
        # What the segmenter learnt from: the exported masks' mean coverage and the fraction of
        # all-foreground ones (coverage > 99%: the generator's layers have not separated).
        **seg_metrics.synthetic_mask_statistics(masks),
        "segmenter_seconds": time.time() - start,
        **cub_split.report_fields(config.data),
    }
    write_previews(config, workdir, result.variables, test_images[:16], test_masks[:16])
    atomic.write_json(epath.Path(workdir) / "segmenter" / "report.json", report)
    return report


def write_previews(config, workdir, variables, images, masks) -> str:
    """Grid `workdir/previews/segmentation.png`, one row each: test images ([N, R, R, 3] in
    [-1, 1]), ground-truth masks ([N, R, R] in {0, 1}), predicted masks, prediction over white.
    Returns the path."""
    probabilities = segmenter_lib.predict_masks(
        variables, images, config.segmenter.widths, config.segmenter.eval_batch_size
    )
    predicted = (np.asarray(probabilities) > 0.5).astype(np.float32)[..., None]
    rows = {
        "image": images,
        "ground_truth": np.repeat(masks[..., None] * 2 - 1, 3, axis=-1),
        "prediction": np.repeat(predicted * 2 - 1, 3, axis=-1),
        "cutout": predicted * images + (1 - predicted),
    }
    grid = sample_grids.make_grid(rows, order=tuple(rows))
    return sample_grids.save_png(grid, epath.Path(workdir) / "previews" / "segmentation.png")


def evaluate_segmenter(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """`--mode=evaluate`: the saved segmenter scored on the real evaluation split; writes
    `workdir/evaluation.json` (with `cub_split.report_fields`) and returns the metrics."""
    variables = load_segmenter(config, workdir)
    images, masks = load_eval_split(config)
    metrics = segmenter_lib.score_segmenter(variables, images, masks, config.segmenter)
    evaluation = {**metrics, **cub_split.report_fields(config.data)}
    atomic.write_json(epath.Path(workdir) / "evaluation.json", evaluation)
    logging.info("Evaluation: %s", metrics)
    return metrics


def _segment_image(config, variables, rgb: Image.Image) -> tuple[Image.Image, Image.Image]:
    """(mask, overlay) of one RGB image: its centre square crop resized to the segmenter's
    resolution, the predicted mask (0/255, mode 'L') resized back to the crop's size (nearest),
    and the crop with the background darkened to 35%."""
    resolution = config.data.resolution
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    crop = rgb.crop((left, top, left + side, top + side))
    small = np.asarray(crop.resize((resolution, resolution), Image.BILINEAR), np.float32)
    probability = segmenter_lib.predict_masks(
        variables, small[None] / 127.5 - 1.0, config.segmenter.widths, 1
    )[0]
    mask = Image.fromarray((np.asarray(probability) > 0.5).astype(np.uint8) * 255)
    mask = mask.resize(crop.size, Image.NEAREST)
    overlay = np.asarray(crop, np.float32)
    keep = np.asarray(mask, np.float32)[..., None] / 255.0
    overlay = (overlay * (0.35 + 0.65 * keep)).astype(np.uint8)
    return mask, Image.fromarray(overlay)


def segment_folder(config, workdir: str, input_dir: str, output_dir: str, overwrite: bool) -> int:
    """Applies the trained segmenter to every image in `input_dir`; writes `<stem>_mask.png` and
    `<stem>_overlay.png` into `output_dir`. Unreadable files are reported and skipped; existing
    outputs are kept unless `overwrite`. Returns the number of images segmented."""
    if not input_dir or not epath.Path(input_dir).is_dir():
        raise FileNotFoundError(f"--input must be an existing folder of images, got {input_dir!r}")
    if not output_dir:
        raise ValueError("--output (folder for the masks) is required for --mode=segment")
    output = epath.Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    variables = load_segmenter(config, workdir)
    paths = sorted(
        (
            path
            for path in epath.Path(input_dir).iterdir()
            if path.name.lower().endswith(IMAGE_SUFFIXES)
        ),
        key=lambda path: path.name,
    )
    done, bad = 0, []
    for path in paths:
        mask_path = output / f"{path.stem}_mask.png"
        if mask_path.exists() and not overwrite:
            raise FileExistsError(f"{mask_path} exists; pass --overwrite to replace it")
        try:
            with Image.open(io.BytesIO(path.read_bytes())) as image:
                rgb = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            bad.append(f"{path.name}: {error}")
            continue
        mask, overlay = _segment_image(config, variables, rgb)
        sample_grids.save_png(np.asarray(mask), mask_path)
        sample_grids.save_png(np.asarray(overlay), output / f"{path.stem}_overlay.png")
        done += 1
    if bad:
        logging.warning("Skipped %d unreadable files, e.g. %s", len(bad), bad[:5])
    logging.info("Segmented %d images into %s", done, output_dir)
    return done
