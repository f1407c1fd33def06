"""The Independence-prior row's own route: per-instance IoU after optimal matching.

The one-image setting has ground truth per object (the built-in picture's object masks, cropped
with each test crop) but the GAN's instances have none, so the instances are scored the way the
union is, through U-Nets trained on generated pairs:

1. `num_pairs` samples of the trained (EMA) generator: the composite and each instance's
   *visible* mask, its weight in the back-to-front composite `m_k * prod_{j > k} (1 - m_j)`
   (an instance hidden behind a later one is not visible there).
2. One binary U-Net per instance slot k (the segmenter recipe of the union route) on
   (composite, visible mask k > 0.5).
3. On every held-out test crop, the K predicted masks are matched to the objects present in the
   crop (ground-truth mask covering at least MIN_OBJECT_FRACTION of it) by the assignment that
   maximises the summed IoU (Hungarian); an object left without a slot scores 0. Each object's
   IoU is averaged over the crops it is present in.
"""

import math
import time

import jax
import numpy as np
from scipy.optimize import linear_sum_assignment

from ilsgan_jax import compiler_options
from ilsgan_jax.data import single_image
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.systems import system_for
from ilsgan_jax.train.restore import restore_train_state

MIN_OBJECT_FRACTION = 0.01  # an object is present in a crop if it covers at least this much
SAMPLE_STREAM = 7_000_001  # folded into the seed for the instance samples (not the export's)


def visible_instance_masks(masks: np.ndarray) -> np.ndarray:
    """Each instance's weight in the back-to-front composite (instance 0 first, K - 1 on top).

    Args:
      masks: [N, K, R, R, 1] float in [0, 1], the instances' masks after layout.
    Returns:
      [N, R, R, K] float32: `m_k * prod_{j > k} (1 - m_j)`; with the background's weight
      `prod_k (1 - m_k)` they sum to 1 at every pixel.
    """
    masks = np.asarray(masks, np.float32)[..., 0]
    visible = np.empty_like(masks)
    uncovered = np.ones_like(masks[:, 0])
    for k in reversed(range(masks.shape[1])):
        visible[:, k] = masks[:, k] * uncovered
        uncovered = uncovered * (1.0 - masks[:, k])
    return np.moveaxis(visible, 1, -1)


def sample_instances(config, workdir: str, count: int, batch_size: int):
    """`count` samples of the EMA generator of the run in `workdir` (best-FID checkpoint if kept,
    else the newest), constant noise: composites float32 [count, R, R, 3] in [-1, 1] and
    visible instance masks [count, R, R, K] in [0, 1]."""
    state, _, networks = restore_train_state(config, workdir, prefer_best=True)
    system = system_for(config)

    @jax.jit
    def generate(params, buffers, key):
        z = jax.random.normal(key, system.latent_shape(config, batch_size))
        layers = networks.generator.apply({"params": params, **buffers}, z, noise_mode="const")
        return layers["composite"], layers["mask"]

    root = jax.random.fold_in(jax.random.key(config.seed), SAMPLE_STREAM)
    images, visible = [], []
    for index in range(math.ceil(count / batch_size)):
        composite, masks = jax.device_get(
            generate(state.g_ema_params, state.g_ema_buffers, jax.random.fold_in(root, index))
        )
        images.append(np.asarray(composite, np.float32))
        visible.append(visible_instance_masks(masks))
    return np.concatenate(images)[:count], np.concatenate(visible)[:count]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def match_instances(
    predicted: np.ndarray, objects: np.ndarray, min_fraction: float = MIN_OBJECT_FRACTION
) -> dict:
    """Per-object IoU after the best one-to-one matching of slots to objects in each crop.

    Args:
      predicted: [T, R, R, K] bool, the slots' masks per crop.
      objects: [T, R, R, J] bool, the objects' ground-truth masks per crop.
      min_fraction: an object is scored in a crop where it covers at least this fraction.
    Returns:
      'per_instance_iou': [J] mean matched IoU per object over the crops it is present in (None
      if it is in none), 'crops_present': [J] ints, 'min_instance_iou' (over the objects present
      somewhere).
    """
    if predicted.shape[:3] != objects.shape[:3]:
        raise ValueError(
            f"predicted {predicted.shape} and objects {objects.shape}: T, R, R must be equal"
        )
    num_objects = objects.shape[-1]
    sums, counts = np.zeros(num_objects), np.zeros(num_objects, np.int64)
    present = objects.mean(axis=(1, 2)) >= min_fraction  # [T, J]
    for crop in range(objects.shape[0]):
        here = np.flatnonzero(present[crop])
        if here.size == 0:
            continue
        iou = np.array(
            [
                [_iou(predicted[crop, ..., k], objects[crop, ..., j]) for j in here]
                for k in range(predicted.shape[-1])
            ]
        )  # [K, present objects]
        slots, matched = linear_sum_assignment(iou, maximize=True)
        scores = np.zeros(here.size)
        scores[matched] = iou[slots, matched]
        sums[here] += scores
        counts[here] += 1
    per_object = [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]
    scored = [value for value in per_object if value is not None]
    return {
        "per_instance_iou": per_object,
        "crops_present": counts.tolist(),
        "min_instance_iou": min(scored) if scored else None,
    }


def score_instances(config, workdir: str, test_images: np.ndarray, test_objects: np.ndarray):
    """The route on the run in `workdir`: `config.export.num_pairs` samples, one U-Net per slot
    (`config.segmenter`), matched on the test crops (test_images float32 [T, R, R, 3] in
    [-1, 1], test_objects [T, R, R, J] bool). Returns `match_instances`' report with each slot's
    share of the samples (`slot_coverage`), each U-Net's seconds and the route's."""
    start = time.time()
    images, visible = sample_instances(
        config, workdir, int(config.export.num_pairs), int(config.export.shard_size)
    )
    options = compiler_options.for_devices(config, jax.local_devices()[:1])
    predicted, unet_seconds = [], []
    for slot in range(visible.shape[-1]):
        slot_start = time.time()
        result = segmenter_lib.train_segmenter(
            images,
            visible[..., slot] > 0.5,
            config.segmenter,
            seed=config.seed + slot,
            compiler_options=options,
        )
        probabilities = segmenter_lib.predict_masks(
            result.variables,
            test_images,
            tuple(config.segmenter.widths),
            int(config.segmenter.eval_batch_size),
            config.segmenter.compute_dtype,
        )
        predicted.append(probabilities > 0.5)
        unet_seconds.append(time.time() - slot_start)
    report = match_instances(np.stack(predicted, axis=-1), test_objects)
    report["slot_coverage"] = (visible > 0.5).mean(axis=(0, 1, 2)).tolist()
    report["unet_seconds"] = unet_seconds
    report["seconds"] = time.time() - start
    return report


def test_objects(config, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` crops of the built-in picture from stream `seed` with each object's mask:
    images float32 [N, R, R, 3] in [-1, 1], objects bool [N, R, R, J]."""
    crops = single_image.crops_with_object_masks(
        config.data, seed=seed, example_indices=np.arange(count)
    )
    return crops["image"].astype(np.float32) / 127.5 - 1.0, crops["masks"] >= 128
