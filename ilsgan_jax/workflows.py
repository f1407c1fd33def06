"""The stages after GAN training: export synthetic pairs, train and score the segmenter, segment a
user's folder, evaluate, FID/KID and MINE reports, and the end-to-end demo. Each is a plain
function of (config, workdir), called by `ilsgan_jax.main` (modes export, train_segmenter,
segment, evaluate, fid, mine, demo) and by the Colab notebook.

Workdir layout: `checkpoints/` (GAN train state), `samples/` (grids), `export/` (pairs as the
tfds data set `export/ilsgan_pairs/1.0.0`, optional `export/png/`), `segmenter/` (best U-Net +
`report.json`), `previews/`, `report.json`, `fid.json`, `mine_report.json`.
"""

import json
import os
import shutil
import time

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from ilsgan_jax import compiler_options, parallel
from ilsgan_jax.data import input_pipeline
from ilsgan_jax.evaluate import inception, pair_dataset, seg_metrics, training_fid
from ilsgan_jax.evaluate import mine as mine_lib
from ilsgan_jax.evaluate import samples as sample_grids
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.train import builders, checkpointing
from ilsgan_jax.train.state import create_train_state

EXPORT_KEYS = pair_dataset.PAIR_KEYS


# ----------------------------------------------------------------------------------------------
# GAN checkpoint
# ----------------------------------------------------------------------------------------------
def restore_train_state(config: ml_collections.ConfigDict, workdir: str, *, prefer_best=False):
    """A GAN train state from `workdir/checkpoints`, its step and the networks: with
    `prefer_best`, the kept checkpoint with the lowest FID if any checkpoint has one (DESIGN.md:
    export from the lowest-FID snapshot), else the newest good one.

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
        best_step = checkpointer.best_step() if prefer_best else None
        if best_step is not None:
            state, _ = checkpointer.restore(best_step, abstract)
            logging.info("Using the best-FID checkpoint, step %d", best_step)
            return state, best_step, networks
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
def layers_generate_fn(config, generator, batch_size: int):
    """`generate(params, buffers, key) -> layers` (jitted): `batch_size` latents from `key`, the
    EMA generator at truncation 1 with constant noise, no perturbation. Returns float32 `image`,
    `fg_rgb`, `bg_rgb` [B, R, R, 3] in [-1, 1], `soft_mask` [B, R, R, 1] in [0, 1] and uint8
    `mask` (soft_mask > 0.5). Used by the export (B = shard size) and the MINE report."""

    @jax.jit
    def generate(params, buffers, key):
        z = jax.random.normal(key, builders.latent_shape_for(config, batch_size))
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

    return generate


def _export_settings(config, step) -> dict:
    export = config.export
    return {
        "seed": int(export.seed),
        "num_pairs": int(export.num_pairs),
        "shard_size": int(export.shard_size),
        "resolution": int(config.data.resolution),
        "checkpoint_step": None if step is None else int(step),
    }


def _check_or_record_settings(out_dir: str, settings: dict) -> None:
    """Refuses to resume an export made with other settings (its shards would mix in)."""
    path = os.path.join(out_dir, "export_settings.json")
    if os.path.isfile(path):
        with open(path) as file:
            recorded = json.load(file)
        for name, value in settings.items():
            if recorded.get(name) != value and not (name == "checkpoint_step" and value is None):
                raise ValueError(
                    f"{out_dir} holds an export with {name}={recorded.get(name)!r}, this one has "
                    f"{name}={value!r}; pass --overwrite to replace it (or use another --workdir)"
                )
        return
    _write_json(path, settings)


def write_export_shards(
    config, out_dir: str, state, networks, *, process_index: int, process_count: int
) -> list[int]:
    """Writes the missing shards `i` with `i % process_count == process_index` of the export
    into `pair_dataset.dataset_dir(out_dir)` (and PNGs if `config.export.png`). Shard i holds
    pairs [i * S, min((i + 1) * S, N)) from the latents `fold_in(key(export.seed), i)`, so each
    shard's content depends only on the generator and the seed. Returns the shards written."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    export = config.export
    resolution = config.data.resolution
    shard_size = export.shard_size
    num_shards = -(-export.num_pairs // shard_size)
    directory = pair_dataset.dataset_dir(out_dir)
    generate = layers_generate_fn(config, networks.generator, shard_size)
    params = jax.device_get(state.g_ema_params)
    buffers = jax.device_get(state.g_ema_buffers)
    base_key = jax.random.key(export.seed)
    written = []
    for shard in range(process_index, num_shards, process_count):
        path = os.path.join(directory, pair_dataset.shard_filename(shard, num_shards))
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
        pair_dataset.write_shard(path, arrays, resolution)
        if export.png:
            _write_pngs(out_dir, shard * shard_size, arrays)
        written.append(shard)
    return written


def export_shard_lengths(config) -> list[int]:
    """Pairs per shard: S for all but the last, which holds the remainder."""
    num_pairs, shard_size = config.export.num_pairs, config.export.shard_size
    return [min(shard_size, num_pairs - start) for start in range(0, num_pairs, shard_size)]


def export_pairs(config, workdir: str, *, state=None, networks=None, overwrite=False) -> str:
    """Writes `config.export.num_pairs` (composite, mask > 0.5) pairs, plus fg/bg/soft mask, from
    the EMA generator (of the best-FID checkpoint if one is kept, else the newest) as a tfds data
    set in `workdir/export/ilsgan_pairs/1.0.0` (see `pair_dataset`). Deterministic from
    `export.seed`; resumable (finished shards are skipped; writes are atomic); process p of P
    writes the shards with `i % P == p`, then process 0 writes the tfds metadata. Returns the
    data set directory (for `tfds.builder_from_directory`)."""
    out_dir = os.path.join(workdir, "export")
    directory = pair_dataset.dataset_dir(out_dir)
    if config.export.num_pairs < 1 or config.export.shard_size < 1:
        raise ValueError(
            f"config.export.num_pairs={config.export.num_pairs} and config.export.shard_size="
            f"{config.export.shard_size} must be >= 1"
        )
    if overwrite and jax.process_index() == 0:
        shutil.rmtree(out_dir, ignore_errors=True)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("export: old export removed")
    step = None
    if state is None:
        state, step, networks = restore_train_state(config, workdir, prefer_best=True)
    os.makedirs(out_dir, exist_ok=True)
    _check_or_record_settings(out_dir, _export_settings(config, step))
    written = write_export_shards(
        config,
        out_dir,
        state,
        networks,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("export: all shards written")
    if jax.process_index() == 0:
        pair_dataset.write_metadata(directory, config.data.resolution, export_shard_lengths(config))
    logging.info("Exported %d new shards into %s", len(written), directory)
    return directory


def _write_pngs(out_dir: str, first_index: int, arrays: dict) -> None:
    png_dir = os.path.join(out_dir, "png")
    for offset in range(arrays["image"].shape[0]):
        index = first_index + offset
        sample_grids.save_png(arrays["image"][offset], os.path.join(png_dir, f"{index:07d}.png"))
        sample_grids.save_png(
            arrays["mask"][offset, ..., 0] * 255, os.path.join(png_dir, f"{index:07d}_mask.png")
        )


def load_pairs(dataset_directory: str) -> tuple[np.ndarray, np.ndarray]:
    """All exported pairs in export order, read with tf.data from the tfds data set
    (`pair_dataset.dataset_dir(workdir/export)`): images float32 [N, R, R, 3] in [-1, 1], masks
    float32 [N, R, R] in {0, 1}."""
    arrays = pair_dataset.read_arrays(dataset_directory, keys=("image", "mask"))
    images = arrays["image"].astype(np.float32) / 127.5 - 1.0
    return images, arrays["mask"][..., 0].astype(np.float32)


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


def synthetic_mask_statistics(masks: np.ndarray) -> dict[str, float]:
    """`synthetic_mask_coverage` (mean of the masks) and `synthetic_full_fraction` (fraction of
    masks covering > 99% of their image) of exported masks `[N, R, R]` in {0, 1}."""
    stats = seg_metrics.mask_statistics(masks)
    return {
        "synthetic_mask_coverage": float(stats["coverage"]),
        "synthetic_full_fraction": float(stats["full_fraction"]),
    }


def train_and_score_segmenter(config, workdir: str) -> dict:
    """Trains the U-Net on the exported pairs (best validation IoU kept), scores it on the real
    evaluation split, writes `segmenter/report.json` and previews; returns the report."""
    start = time.time()
    images, masks = load_pairs(pair_dataset.dataset_dir(os.path.join(workdir, "export")))
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
        "all_foreground_iou": all_foreground_baseline(test_masks),
        # What the segmenter learnt from: the exported masks' mean coverage and the fraction of
        # all-foreground ones (coverage > 99%: the generator's layers have not separated).
        **synthetic_mask_statistics(masks),
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
# Generator diagnostics: FID/KID, MINE
# ----------------------------------------------------------------------------------------------
def metric_name(prefix: str, num_images: int) -> str:
    """StyleGAN2-ADA's names: ('fid', 50000) -> 'fid50k_full', ('kid', 1234) -> 'kid1234_full'."""
    count = f"{num_images // 1000}k" if num_images % 1000 == 0 else str(num_images)
    return f"{prefix}{count}_full"


def run_fid(config, workdir: str, *, feature_extractor=None) -> dict:
    """FID and KID of the EMA generator (best-FID checkpoint if one is kept, else the newest)
    from `config.eval.fid_full_num_images` images (50k: fid50k_full) against the whole training
    split, real statistics cached (`training_fid.generator_metrics`). Process 0 writes
    `workdir/fid.json`; returns the report.

    Args:
      feature_extractor: replaces Inception (tests); otherwise the converted weights must exist
        (FileNotFoundError naming `python -m ilsgan_jax.evaluate.convert_inception`).
    """
    inception_params = None
    if feature_extractor is None:
        inception_params = inception.load_inception_params()
    state, step, networks = restore_train_state(config, workdir, prefer_best=True)
    num_images = config.eval.fid_full_num_images
    metrics = training_fid.generator_metrics(
        config,
        networks.generator,
        state,
        num_images,
        inception_params=inception_params,
        with_kid=True,
        feature_extractor=feature_extractor,
    )
    report = {
        "metric": metric_name("fid", num_images),
        "fid": float(metrics.fid),
        "kid_metric": metric_name("kid", num_images),
        "kid": float(metrics.kid),
        "num_images": int(metrics.num_generated),
        "num_real_images": int(metrics.num_real),
        "checkpoint_step": int(step),
        "data": config.data.name,
        "resolution": int(config.data.resolution),
        "split": config.data.train_split,
    }
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, "fid.json"), report)
    logging.info("%s = %.4f, %s = %.6f (step %d)", report["metric"], report["fid"],
                 report["kid_metric"], report["kid"], step)
    return report


MINE_PAIRS = {
    "mi_bg_invisible_fg_visible": "I(b * m; f * m): background hidden by the mask vs the "
    "visible foreground",
    "mi_fg_invisible_bg_visible": "I(f * (1 - m); b * (1 - m)): foreground outside the mask vs "
    "the visible background",
}


def generate_region_layers(config, networks, state, num_samples: int, key) -> dict:
    """`num_samples` (fg_rgb, bg_rgb, soft mask) of the EMA generator (constant noise), in
    batches of `config.eval.batch_size` with latents from `fold_in(key, batch)`: float32
    `fg_rgb`, `bg_rgb` [N, R, R, 3] in [-1, 1] and `mask` [N, R, R, 1] in [0, 1]."""
    batch_size = config.eval.batch_size
    generate = layers_generate_fn(config, networks.generator, batch_size)
    params = jax.device_get(state.g_ema_params)
    buffers = jax.device_get(state.g_ema_buffers)
    batches = []
    for batch in range(-(-num_samples // batch_size)):
        layers = generate(params, buffers, jax.random.fold_in(key, batch))
        batches.append(jax.device_get({k: layers[k] for k in ("fg_rgb", "bg_rgb", "soft_mask")}))
    return {
        "fg_rgb": np.concatenate([b["fg_rgb"] for b in batches])[:num_samples],
        "bg_rgb": np.concatenate([b["bg_rgb"] for b in batches])[:num_samples],
        "mask": np.concatenate([b["soft_mask"] for b in batches])[:num_samples],
    }


def region_mi_report(key, fg_rgb, bg_rgb, mask, mine_config) -> dict:
    """The MINE estimates of the two region pairs (`mine.generator_region_mi`) with the settings.

    Args:
      fg_rgb, bg_rgb: [N, H, W, 3] float32 in [-1, 1]; mask: [N, H, W, 1] float32 in [0, 1].
      mine_config: `config.mine` (critic and training settings).
    """
    estimates = mine_lib.generator_region_mi(key, fg_rgb, bg_rgb, mask, mine_config)
    settings = {
        name: (list(value) if isinstance(value, tuple) else value)
        for name, value in mine_config.to_dict().items()
    }
    return {
        "estimates_nats": {name: float(value) for name, value in estimates.items()},
        "pairs": dict(MINE_PAIRS),
        "settings": {**settings, "num_samples": int(fg_rgb.shape[0])},
        "estimator": "Donsker-Varadhan lower bound, MLP critic, evaluated on all samples",
    }


def run_mine(config, workdir: str) -> dict:
    """MINE diagnostic of the trained EMA generator (best-FID checkpoint if kept, else the
    newest): MI between the visible and invisible regions (DESIGN.md, the two ILS terms) on
    `config.mine.num_samples` generated layers. Process 0 writes `workdir/mine_report.json`."""
    if config.mine.num_samples < config.mine.batch_size:
        raise ValueError(
            f"config.mine.num_samples={config.mine.num_samples} is below "
            f"config.mine.batch_size={config.mine.batch_size}"
        )
    state, step, networks = restore_train_state(config, workdir, prefer_best=True)
    latent_key, critic_key = jax.random.split(jax.random.key(config.mine.seed))
    layers = generate_region_layers(config, networks, state, config.mine.num_samples, latent_key)
    report = region_mi_report(
        critic_key, layers["fg_rgb"], layers["bg_rgb"], layers["mask"], config.mine
    )
    report["checkpoint_step"] = int(step)
    report["resolution"] = int(config.data.resolution)
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, "mine_report.json"), report)
    logging.info("MINE (nats): %s", report["estimates_nats"])
    return report


# ----------------------------------------------------------------------------------------------
# Demo and dispatch
# ----------------------------------------------------------------------------------------------
def _write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as file:
        json.dump(payload, file, indent=2, sort_keys=True)
    os.replace(tmp, path)


# The demo calls the layers separated when fewer than half of the exported masks are
# all-foreground (on the synthetic data they go from ~100% to ~0% within a few kimg).
MAX_FULL_FRACTION_SEPARATED = 0.5


def separation_advice(summary: dict, config, workdir: str) -> list[str]:
    """Console lines on whether the generator's layers separated; if not, how to continue."""
    full = summary["synthetic_full_fraction"]
    if summary["layers_separated"]:
        return [f"  layers                   separated ({full:.0%} of the masks all-foreground)"]
    kimg = summary["gan_images_seen"] / 1000
    rate = summary["gan_images_this_run"] / max(summary["gan_seconds"], 1e-9)
    if kimg >= config.train.total_kimg:
        how = f"raise --config.train.total_kimg (now {config.train.total_kimg:g}) and run again"
    else:
        how = "run the same command again"
    return [
        f"  layers                   NOT separated yet: {full:.0%} of the masks are all-foreground",
        f"    ({kimg:.1f} kimg, this run at {rate:.0f} images/s; on the synthetic data they",
        "    separate at ~55-60 kimg or later). To continue,",
        f"    {how}: training resumes from {os.path.join(workdir, 'checkpoints')}",
        "    with a new time budget.",
    ]


def run_demo(config, workdir: str) -> dict:
    """The whole method on one machine: train ILSGAN, export pairs from the EMA generator,
    train the U-Net on them, score it on the test split; writes `report.json` and prints a
    summary table."""
    from ilsgan_jax.train.loop import train_and_evaluate

    start = time.time()
    trained = train_and_evaluate(config, workdir)
    gan_seconds = time.time() - start
    logging.info("GAN stage: %.1f s (the loop's own count: %.1f s)", gan_seconds,
                 trained.wall_time_seconds)
    networks = builders.build_networks(config)
    export_start = time.time()
    export_pairs(config, workdir, state=trained.state, networks=networks, overwrite=True)
    export_seconds = time.time() - export_start
    report = train_and_score_segmenter(config, workdir)
    summary = {
        "per_image_iou": report["test"]["drc_iou"],
        "per_image_dice": report["test"]["drc_dice"],
        "miou": report["test"]["miou"],
        "pixel_accuracy": report["test"]["pixel_accuracy"],
        "all_foreground_iou": report["all_foreground_iou"],
        "synthetic_mask_coverage": report["synthetic_mask_coverage"],
        "synthetic_full_fraction": report["synthetic_full_fraction"],
        "layers_separated": report["synthetic_full_fraction"] < MAX_FULL_FRACTION_SEPARATED,
        "gan_images_seen": trained.images_seen,
        "gan_images_this_run": trained.images_this_run,
        "gan_steps": trained.steps,
        "gan_seconds": gan_seconds,
        "export_seconds": export_seconds,
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
        *separation_advice(summary, config, workdir),
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
    elif mode == "fid":
        run_fid(config, workdir)
    elif mode == "mine":
        run_mine(config, workdir)
    elif mode == "demo":
        run_demo(config, workdir)
    elif mode == "train_encoder":
        from ilsgan_jax.evaluate.inversion import score_encoder

        report = score_encoder(config, workdir, retrain=overwrite)
        logging.info("Encoder report: %s", json.dumps(report["test"], indent=1))
    else:
        raise ValueError(f"unknown mode {mode!r}")
