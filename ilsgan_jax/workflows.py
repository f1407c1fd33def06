"""The stages after GAN training: export synthetic pairs, train and score the segmenter, segment a
user's folder, evaluate, and the end-to-end demo. Each is a plain function of (config, workdir),
called by `ilsgan_jax.main` (modes export, train_segmenter, segment, evaluate, demo) and by the
Colab notebook.

Workdir layout: `checkpoints/` (GAN train state), `samples/` (grids), `export/` (pairs as
`shard_XXXXX.npz`), `segmenter/` (best U-Net + `report.json`), `previews/`, `report.json`.
"""

import glob
import json
import os
import time

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from ilsgan_jax import parallel
from ilsgan_jax.data import input_pipeline
from ilsgan_jax.evaluate import samples as sample_grids
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.train import builders, checkpointing
from ilsgan_jax.train.state import create_train_state

EXPORT_KEYS = ("image", "mask", "fg_rgb", "bg_rgb", "soft_mask")


# ----------------------------------------------------------------------------------------------
# GAN checkpoint
# ----------------------------------------------------------------------------------------------
def restore_train_state(config: ml_collections.ConfigDict, workdir: str):
    """The newest good GAN train state in `workdir/checkpoints` and its step.

    Raises FileNotFoundError naming the directory when there is no checkpoint."""
    mesh = parallel.create_mesh()
    networks = builders.build_networks(config)
    optimizers = builders.build_optimizers(config)
    abstract = jax.eval_shape(
        lambda key: create_train_state(config, networks, optimizers, key), jax.random.key(0)
    )
    replicated = parallel.replicated_sharding(mesh)
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated), abstract
    )
    directory = os.path.join(workdir, "checkpoints")
    checkpointer = checkpointing.Checkpointer(directory, save_every_steps=1, keep_last=1000)
    try:
        restored = checkpointer.restore_latest(abstract)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(
            f"No GAN checkpoint in {directory}; run --mode=train with this --workdir first"
        )
    state, step, _ = restored
    return state, step, networks


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------
def _save_npz_atomic(path: str, arrays: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def export_pairs(config, workdir: str, *, state=None, networks=None, overwrite=False) -> str:
    """Writes `config.export.num_pairs` (composite, mask > 0.5) pairs from the EMA generator
    (truncation 1, constant noise, no perturbation) as `export/shard_XXXXX.npz`, each with uint8
    `image` [S, R, R, 3], `mask` [S, R, R, 1] in {0, 1}, `fg_rgb`, `bg_rgb` and `soft_mask`
    (0..255). Shard i uses latents from `fold_in(key(export.seed), i)`, so the output is
    deterministic and resumable (finished shards are skipped; writes are atomic); process p of
    P writes the shards with `i % P == p`. Returns the export directory."""
    export = config.export
    out_dir = os.path.join(workdir, "export")
    if overwrite and jax.process_index() == 0:
        for path in glob.glob(os.path.join(out_dir, "shard_*.npz")):
            os.remove(path)
    os.makedirs(out_dir, exist_ok=True)
    if state is None:
        state, _, networks = restore_train_state(config, workdir)
    generator = networks.generator
    shard_size = export.shard_size
    num_shards = -(-export.num_pairs // shard_size)

    @jax.jit
    def generate(params, buffers, key):
        z = jax.random.normal(key, builders.latent_shape_for(config, shard_size))
        layers = generator.apply({"params": params, **buffers}, z, noise_mode="const")
        # K-instance generators: the union of the instance masks, and the composite as the
        # foreground image (inside the union mask it shows the instances).
        mask = layers.get("union_mask", layers["mask"])
        fg_rgb = layers["composite"] if layers["fg_rgb"].ndim == 5 else layers["fg_rgb"]
        return {
            "image": layers["composite"],
            "mask": (mask > 0.5).astype(jnp.uint8),
            "fg_rgb": fg_rgb,
            "bg_rgb": layers["bg_rgb"],
            "soft_mask": mask,
        }

    params = jax.device_get(state.g_ema_params)
    buffers = jax.device_get(state.g_ema_buffers)
    base_key = jax.random.key(export.seed)
    written = 0
    for shard in range(jax.process_index(), num_shards, jax.process_count()):
        path = os.path.join(out_dir, f"shard_{shard:05d}.npz")
        if os.path.exists(path):
            continue
        out = jax.device_get(generate(params, buffers, jax.random.fold_in(base_key, shard)))
        count = min(shard_size, export.num_pairs - shard * shard_size)
        arrays = {
            "image": sample_grids.to_uint8(out["image"][:count]),
            "mask": out["mask"][:count],
            "fg_rgb": sample_grids.to_uint8(out["fg_rgb"][:count]),
            "bg_rgb": sample_grids.to_uint8(out["bg_rgb"][:count]),
            "soft_mask": np.round(out["soft_mask"][:count] * 255).astype(np.uint8),
        }
        _save_npz_atomic(path, arrays)
        if export.png:
            _write_pngs(out_dir, shard * shard_size, arrays)
        written += count
    logging.info("Exported %d new pairs into %s", written, out_dir)
    return out_dir


def _write_pngs(out_dir: str, first_index: int, arrays: dict) -> None:
    png_dir = os.path.join(out_dir, "png")
    for offset in range(arrays["image"].shape[0]):
        index = first_index + offset
        sample_grids.save_png(arrays["image"][offset], os.path.join(png_dir, f"{index:07d}.png"))
        sample_grids.save_png(
            arrays["mask"][offset, ..., 0] * 255, os.path.join(png_dir, f"{index:07d}_mask.png")
        )


def load_pairs(export_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """All exported pairs in shard order: images float32 [N, R, R, 3] in [-1, 1], masks
    float32 [N, R, R] in {0, 1}."""
    paths = sorted(glob.glob(os.path.join(export_dir, "shard_*.npz")))
    if not paths:
        raise FileNotFoundError(f"No exported pairs in {export_dir}; run --mode=export first")
    images, masks = [], []
    for path in paths:
        with np.load(path) as shard:
            images.append(shard["image"])
            masks.append(shard["mask"])
    images = np.concatenate(images).astype(np.float32) / 127.5 - 1.0
    return images, np.concatenate(masks)[..., 0].astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Segmenter
# ----------------------------------------------------------------------------------------------
def load_eval_split(config) -> tuple[np.ndarray, np.ndarray]:
    """The real evaluation split with masks as arrays (images in [-1, 1], masks {0, 1})."""
    images, masks = [], []
    for batch in input_pipeline.create_eval_iterator(
        config.data,
        split=config.data.eval_split,
        batch_size=config.segmenter.eval_batch_size,
        process_index=0,
        process_count=1,
    ):
        if "mask" not in batch:
            raise ValueError(
                f"config.data.eval_split={config.data.eval_split!r} of {config.data.name!r} has "
                "no masks: the segmenter cannot be scored"
            )
        valid = batch["valid"]
        images.append(batch["image"][valid])
        masks.append(batch["mask"][valid][..., 0])
    return np.concatenate(images), np.concatenate(masks)


def _segmenter_path(workdir: str) -> str:
    return os.path.join(workdir, "segmenter", "best.msgpack")


def save_segmenter(workdir: str, variables: dict) -> str:
    path = _segmenter_path(workdir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as file:
        file.write(flax.serialization.to_bytes(jax.device_get(variables)))
    os.replace(tmp, path)
    return path


def load_segmenter(config, workdir: str) -> dict:
    path = _segmenter_path(workdir)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No segmenter at {path}; run --mode=train_segmenter first")
    resolution = config.data.resolution
    template = segmenter_lib.create_state(
        jax.random.key(0), config.segmenter, (resolution, resolution, 3)
    )
    template = {"params": template.params, "batch_stats": template.batch_stats}
    with open(path, "rb") as file:
        return flax.serialization.from_bytes(template, file.read())


def all_foreground_baseline(masks: np.ndarray) -> float:
    """Per-image IoU of predicting every pixel as foreground (the trivial segmenter)."""
    flat = masks.reshape(masks.shape[0], -1) > 0.5
    return float(np.mean(flat.sum(1) / flat.shape[1]))


def train_and_score_segmenter(config, workdir: str) -> dict:
    """Trains the U-Net on the exported pairs (best validation IoU kept), scores it on the real
    evaluation split, writes `segmenter/report.json` and previews; returns the report."""
    start = time.time()
    images, masks = load_pairs(os.path.join(workdir, "export"))
    result = segmenter_lib.train_segmenter(images, masks, config.segmenter, seed=config.seed)
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
        "all_foreground_iou": all_foreground_baseline(test_masks),
        "segmenter_seconds": time.time() - start,
    }
    write_previews(config, workdir, result.variables, test_images[:16], test_masks[:16])
    _write_json(os.path.join(workdir, "segmenter", "report.json"), report)
    return report


def write_previews(config, workdir, variables, images, masks) -> str:
    """Grid: test images, ground-truth masks, predicted masks, prediction over white."""
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
    return sample_grids.save_png(grid, os.path.join(workdir, "previews", "segmentation.png"))


def segment_folder(config, workdir: str, input_dir: str, output_dir: str, overwrite: bool) -> int:
    """Applies the trained segmenter to every image in `input_dir`; writes `<stem>_mask.png` and
    `<stem>_overlay.png` into `output_dir`. Unreadable files are reported and skipped; existing
    outputs are kept unless `overwrite`. Returns the number of images segmented."""
    from PIL import Image, UnidentifiedImageError

    if not input_dir or not os.path.isdir(input_dir):
        raise FileNotFoundError(f"--input must be an existing folder of images, got {input_dir!r}")
    if not output_dir:
        raise ValueError("--output (folder for the masks) is required for --mode=segment")
    os.makedirs(output_dir, exist_ok=True)
    variables = load_segmenter(config, workdir)
    resolution = config.data.resolution
    names = sorted(
        n for n in os.listdir(input_dir)
        if n.lower().endswith((".jpg", ".jpeg", ".png", ".webp", ".bmp"))
    )
    done, bad = 0, []
    for name in names:
        stem = os.path.splitext(name)[0]
        mask_path = os.path.join(output_dir, f"{stem}_mask.png")
        if os.path.exists(mask_path) and not overwrite:
            raise FileExistsError(f"{mask_path} exists; pass --overwrite to replace it")
        try:
            with Image.open(os.path.join(input_dir, name)) as image:
                rgb = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            bad.append(f"{name}: {error}")
            continue
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        crop = rgb.crop((left, top, left + side, top + side))
        small = np.asarray(crop.resize((resolution, resolution), Image.BILINEAR), np.float32)
        probability = segmenter_lib.predict_masks(
            variables, small[None] / 127.5 - 1.0, config.segmenter.widths, 1
        )[0]
        mask = Image.fromarray((np.asarray(probability) > 0.5).astype(np.uint8) * 255)
        mask = mask.resize(crop.size, Image.NEAREST)
        mask.save(mask_path)
        overlay = np.asarray(crop, np.float32)
        keep = np.asarray(mask, np.float32)[..., None] / 255.0
        overlay = (overlay * (0.35 + 0.65 * keep)).astype(np.uint8)
        Image.fromarray(overlay).save(os.path.join(output_dir, f"{stem}_overlay.png"))
        done += 1
    if bad:
        logging.warning("Skipped %d unreadable files, e.g. %s", len(bad), bad[:5])
    logging.info("Segmented %d images into %s", done, output_dir)
    return done


# ----------------------------------------------------------------------------------------------
# Demo and dispatch
# ----------------------------------------------------------------------------------------------
def _write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as file:
        json.dump(payload, file, indent=2, sort_keys=True)
    os.replace(tmp, path)


def run_demo(config, workdir: str) -> dict:
    """The whole method on one machine: train ILSGAN, export pairs from the EMA generator,
    train the U-Net on them, score it on the test split; writes `report.json` and prints a
    summary table."""
    from ilsgan_jax.train.loop import train_and_evaluate

    start = time.time()
    trained = train_and_evaluate(config, workdir)
    gan_seconds = time.time() - start
    networks = builders.build_networks(config)
    export_pairs(config, workdir, state=trained.state, networks=networks, overwrite=True)
    report = train_and_score_segmenter(config, workdir)
    summary = {
        "per_image_iou": report["test"]["drc_iou"],
        "per_image_dice": report["test"]["drc_dice"],
        "miou": report["test"]["miou"],
        "pixel_accuracy": report["test"]["pixel_accuracy"],
        "all_foreground_iou": report["all_foreground_iou"],
        "gan_images_seen": trained.images_seen,
        "gan_steps": trained.steps,
        "gan_seconds": gan_seconds,
        "segmenter_seconds": report["segmenter_seconds"],
        "wall_time_seconds": time.time() - start,
        "ils_enabled": bool(config.loss.ils.enabled),
        "sample_grid": trained.sample_png,
        "segmentation_previews": os.path.join(workdir, "previews", "segmentation.png"),
        "devices": [str(d) for d in jax.devices()],
    }
    _write_json(os.path.join(workdir, "report.json"), summary)
    lines = [
        "",
        "ILSGAN quick start: results on the synthetic test split",
        f"  per-image IoU (DRC)      {summary['per_image_iou']:.3f}   "
        f"(all-foreground baseline {summary['all_foreground_iou']:.3f})",
        f"  per-image DICE           {summary['per_image_dice']:.3f}",
        f"  mIoU                     {summary['miou']:.3f}",
        f"  pixel accuracy           {summary['pixel_accuracy']:.3f}",
        f"  GAN training             {summary['gan_images_seen'] / 1000:.1f} kimg in "
        f"{gan_seconds / 60:.1f} min",
        f"  wall time                {summary['wall_time_seconds'] / 60:.1f} min",
        f"  report                   {os.path.join(workdir, 'report.json')}",
        "",
    ]
    print("\n".join(lines))  # the demo's console summary (the one user-facing print)
    return summary


def run_mode(mode: str, config, workdir: str, *, input_dir=None, output_dir=None, overwrite=False):
    if mode == "export":
        export_pairs(config, workdir, overwrite=overwrite)
    elif mode == "train_segmenter":
        report = train_and_score_segmenter(config, workdir)
        logging.info("Segmenter report: %s", json.dumps(report["test"], indent=1))
    elif mode == "segment":
        segment_folder(config, workdir, input_dir, output_dir, overwrite)
    elif mode == "evaluate":
        variables = load_segmenter(config, workdir)
        images, masks = load_eval_split(config)
        metrics = segmenter_lib.score_segmenter(variables, images, masks, config.segmenter)
        _write_json(os.path.join(workdir, "evaluation.json"), metrics)
        logging.info("Evaluation: %s", metrics)
    elif mode == "demo":
        run_demo(config, workdir)
    elif mode == "train_encoder":
        from ilsgan_jax.evaluate.inversion import score_encoder

        report = score_encoder(config, workdir, retrain=overwrite)
        logging.info("Encoder report: %s", json.dumps(report["test"], indent=1))
    else:
        raise ValueError(f"unknown mode {mode!r}")
