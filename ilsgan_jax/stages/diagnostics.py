"""Diagnostics of the trained generator: `--mode=fid` (fid50k_full and KID -> `fid.json`) and
`--mode=mine` (MINE estimates of the mutual information between visible and invisible regions ->
`mine_report.json`), both of the EMA generator of the best-FID checkpoint if one is kept, else
the newest."""

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from ilsgan_jax.data import cub_split
from ilsgan_jax.evaluate import inception
from ilsgan_jax.evaluate import mine as mine_lib
from ilsgan_jax.stages import atomic
from ilsgan_jax.stages.export import layers_generate_fn
from ilsgan_jax.train import training_fid
from ilsgan_jax.train.restore import restore_train_state

MINE_PAIRS = {
    "mi_bg_invisible_fg_visible": "I(b * m; f * m): background hidden by the mask vs the "
    "visible foreground",
    "mi_fg_invisible_bg_visible": "I(f * (1 - m); b * (1 - m)): foreground outside the mask vs "
    "the visible background",
}


def metric_name(prefix: str, num_images: int) -> str:
    """StyleGAN2-ADA's names: ('fid', 50000) -> 'fid50k_full', ('kid', 1234) -> 'kid1234_full'."""
    count = f"{num_images // 1000}k" if num_images % 1000 == 0 else str(num_images)
    return f"{prefix}{count}_full"


def run_fid(config: ml_collections.ConfigDict, workdir: str, *, feature_extractor=None) -> dict:
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
        **cub_split.report_fields(config.data),
    }
    if jax.process_index() == 0:
        atomic.write_json(epath.Path(workdir) / "fid.json", report)
    logging.info("%s = %.4f, %s = %.6f (step %d)", report["metric"], report["fid"],
                 report["kid_metric"], report["kid"], step)
    return report


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


def run_mine(config: ml_collections.ConfigDict, workdir: str) -> dict:
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
        atomic.write_json(epath.Path(workdir) / "mine_report.json", report)
    logging.info("MINE (nats): %s", report["estimates_nats"])
    return report
