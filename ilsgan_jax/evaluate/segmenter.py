"""Training and applying the U-Net segmenter on (image, mask) pairs (independent of the GAN).

Follows ILSGAN's `eval_segmentation.py`: first 90% of the pairs train, last 10% validate; batches
of 64 drawn by a shuffling infinite sampler; pixel cross-entropy; Adam 1e-3 decayed x0.2 every
4000 steps; 6000 steps; colour augmentation of the image only (`--aug=color`: brightness,
contrast, luma flip, hue rotation, saturation, each with probability 0.5, as ADA's colour
matrices); validation every 1000 steps and at the end; the parameters with the best validation
foreground IoU (data-set level) are kept.

Entry points for a CLI: `train_segmenter(images, masks, config, seed)` then
`score_segmenter(variables, test_images, test_masks, config)` and `predict_masks(...)`.

The stage has its own `compute_dtype` (not the GAN's `config.model.compute_dtype`): the U-Net
trains on exported pairs, independently of the networks that made them. 'bfloat16' runs its
convolutions in bfloat16 (parameters, batch statistics, optimiser state, logits and the loss stay
float32).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from ilsgan_jax.evaluate import seg_metrics
from ilsgan_jax.models import unet
from ilsgan_jax.nn.precision import compute_dtype as check_compute_dtype


def default_segmenter_config() -> ml_collections.ConfigDict:
    """Defaults of the reference segmenter stage."""
    config = ml_collections.ConfigDict()
    config.widths = unet.DEFAULT_WIDTHS  # U-Net encoder channels per level.
    config.compute_dtype = "float32"  # U-Net convs: 'float32' or 'bfloat16' (TPU, GPU).
    config.batch_size = 64  # Pairs per training step.
    config.num_steps = 6000  # Training iterations.
    config.learning_rate = 1e-3  # Adam step size.
    config.lr_decay_steps = 4000  # Multiply the step size by lr_decay_factor every this many steps.
    config.lr_decay_factor = 0.2
    config.val_fraction = 0.1  # Last fraction of the pairs held out for validation.
    config.eval_every_steps = 1000  # Validation period (also after the last step).
    config.eval_batch_size = 64  # Batch size of validation / prediction.
    # Colour augmentation of the image (ADA colour transforms; probabilities per image).
    config.augment = ml_collections.ConfigDict()
    config.augment.brightness = 0.5  # P(add N(0, brightness_std) to all channels).
    config.augment.contrast = 0.5  # P(scale by 2^N(0, contrast_std)).
    config.augment.lumaflip = 0.5  # P(random reflection along the luma axis).
    config.augment.hue = 0.5  # P(rotate around the luma axis by U(-pi, pi) * hue_max).
    config.augment.saturation = 0.5  # P(scale chroma by 2^N(0, saturation_std)).
    config.augment.brightness_std = 0.2
    config.augment.contrast_std = 0.5
    config.augment.hue_max = 1.0
    config.augment.saturation_std = 1.0
    return config


# ------------------------------------------------------------------------------------------------
# Data helpers.
# ------------------------------------------------------------------------------------------------


def train_val_split(num_pairs: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first `1 - val_fraction` (train) and the rest (val), as the reference."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: must lie in (0, 1)")
    num_train = int(num_pairs * (1.0 - val_fraction))
    if num_train < 1 or num_train >= num_pairs:
        raise ValueError(f"num_pairs={num_pairs}: too few pairs for a {val_fraction} split")
    indices = np.arange(num_pairs)
    return indices[:num_train], indices[num_train:]


def random_batches(
    images: np.ndarray, masks: np.ndarray, batch_size: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless batches from a shuffled pass over the pairs, reshuffled every epoch."""
    rng = np.random.default_rng(seed)
    order = np.empty(0, np.int64)
    while True:
        while order.size < batch_size:
            order = np.concatenate([order, rng.permutation(images.shape[0])])
        batch, order = order[:batch_size], order[batch_size:]
        yield images[batch], masks[batch]


# ------------------------------------------------------------------------------------------------
# Colour augmentation (image only).
# ------------------------------------------------------------------------------------------------


def _rotation_about(axis: jax.Array, theta: jax.Array) -> jax.Array:
    """[N, 3, 3] rotations by theta [N] around a unit axis [3] (Rodrigues)."""
    cross = jnp.array(
        [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]]
    )
    outer = jnp.outer(axis, axis)
    cos, sin = jnp.cos(theta)[:, None, None], jnp.sin(theta)[:, None, None]
    return cos * jnp.eye(3) + sin * cross + (1.0 - cos) * outer


def color_augment(key: jax.Array, images: jax.Array, config: ml_collections.ConfigDict):
    """ADA colour transforms, composed as one affine colour map per image.

    Order as ADA: brightness, contrast, luma flip, hue rotation, saturation (each applied with its
    probability). Contrast scales around 0, i.e. around mid-grey of [-1, 1] images.

    Args:
      key: PRNG key.
      images: [N, H, W, 3] float32 in [-1, 1] (outputs may leave this range, as in ADA).
      config: the `augment` sub-config.
    Returns:
      [N, H, W, 3] float32.
    """
    batch = images.shape[0]
    keys = jax.random.split(key, 10)
    luma = jnp.ones(3) / jnp.sqrt(3.0)
    luma_outer = jnp.outer(luma, luma)
    identity = jnp.broadcast_to(jnp.eye(3), (batch, 3, 3))

    def chosen(index, probability):
        return jax.random.uniform(keys[index], (batch,)) < probability

    brightness = jax.random.normal(keys[0], (batch,)) * config.brightness_std
    brightness = jnp.where(chosen(1, config.brightness), brightness, 0.0)
    contrast = jnp.exp2(jax.random.normal(keys[2], (batch,)) * config.contrast_std)
    contrast = jnp.where(chosen(3, config.contrast), contrast, 1.0)
    flip = jnp.floor(jax.random.uniform(keys[4], (batch,)) * 2)
    flip = jnp.where(chosen(5, config.lumaflip), flip, 0.0)
    theta = (jax.random.uniform(keys[6], (batch,)) * 2 - 1) * jnp.pi * config.hue_max
    theta = jnp.where(chosen(7, config.hue), theta, 0.0)
    saturation = jnp.exp2(jax.random.normal(keys[8], (batch,)) * config.saturation_std)
    saturation = jnp.where(chosen(9, config.saturation), saturation, 1.0)

    # colour_out = matrix @ colour_in + offset; build the composition step by step.
    matrix = identity * contrast[:, None, None]
    offset = (brightness * contrast)[:, None] * jnp.ones(3)
    flip_matrix = jnp.eye(3) - 2.0 * luma_outer * flip[:, None, None]
    hue_matrix = _rotation_about(luma, theta)
    saturation_matrix = luma_outer + (jnp.eye(3) - luma_outer) * saturation[:, None, None]
    for step in (flip_matrix, hue_matrix, saturation_matrix):
        matrix = step @ matrix
        offset = jnp.einsum("nij,nj->ni", step, offset)
    return jnp.einsum("nij,nhwj->nhwi", matrix, images) + offset[:, None, None, :]


# ------------------------------------------------------------------------------------------------
# Training step.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SegmenterState:
    """Everything the training step changes."""

    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array


jax.tree_util.register_dataclass(
    SegmenterState, data_fields=["params", "batch_stats", "opt_state", "step"], meta_fields=[]
)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam with the reference's StepLR (x lr_decay_factor every lr_decay_steps)."""
    schedule = optax.exponential_decay(
        config.learning_rate,
        transition_steps=config.lr_decay_steps,
        decay_rate=config.lr_decay_factor,
        staircase=True,
    )
    return optax.adam(schedule)


def pixel_cross_entropy(logits: jax.Array, masks: jax.Array) -> jax.Array:
    """Mean cross-entropy over pixels: logits [N, H, W, 2], masks [N, H, W] bool/int (1 = fg)."""
    return jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(logits, masks.astype(jnp.int32))
    )


def build_unet(config: ml_collections.ConfigDict) -> unet.UNet:
    """The U-Net of the segmenter config (`widths`, `compute_dtype`, checked by name)."""
    check_compute_dtype(config.compute_dtype, "config.segmenter.compute_dtype")
    return unet.UNet(widths=tuple(config.widths), compute_dtype=config.compute_dtype)


def create_state(
    key: jax.Array, config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]
) -> SegmenterState:
    """Initial parameters (PyTorch-like init differs; Flax defaults used) and optimiser state."""
    model = build_unet(config)
    variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    opt_state = make_optimizer(config).init(params)
    return SegmenterState(params, variables["batch_stats"], opt_state, jnp.zeros((), jnp.int32))


def make_train_step(config: ml_collections.ConfigDict, compiler_options: dict | None = None):
    """A jitted `(state, images, masks, key) -> (state, {'loss'})`, compiled with
    `compiler_options` (`ilsgan_jax.compiler_options.for_devices`; None = XLA's defaults).

    images: [B, H, W, 3] float32 in [-1, 1]; masks: [B, H, W] bool (foreground).
    """
    model = build_unet(config)
    optimizer = make_optimizer(config)

    def loss_fn(params, batch_stats, images, masks):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return pixel_cross_entropy(logits, masks), updates["batch_stats"]

    @functools.partial(jax.jit, compiler_options=compiler_options or None)
    def train_step(state: SegmenterState, images, masks, key):
        images = color_augment(key, images, config.augment)
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, images, masks
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return SegmenterState(params, batch_stats, opt_state, state.step + 1), {"loss": loss}

    return train_step


# ------------------------------------------------------------------------------------------------
# Evaluation, prediction, the loop.
# ------------------------------------------------------------------------------------------------


def _variables(state: SegmenterState) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


@functools.lru_cache(maxsize=8)
def _eval_apply(widths: tuple[int, ...], compute_dtype: str):
    """Jitted eval-mode forward pass, built once per architecture (not once per call)."""
    check_compute_dtype(compute_dtype)
    model = unet.UNet(widths=widths, compute_dtype=compute_dtype)
    return jax.jit(lambda variables, images: model.apply(variables, images, train=False))


def _batched_logits(variables, images: np.ndarray, widths, batch_size: int, compute_dtype: str):
    """Yields (logits [b, H, W, 2] float32, count) in eval mode; the last batch is padded."""
    apply = _eval_apply(tuple(widths), compute_dtype)
    for start in range(0, images.shape[0], batch_size):
        chunk = np.asarray(images[start : start + batch_size], np.float32)
        count = chunk.shape[0]
        if count < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - count, 0)])
        yield apply(variables, chunk), count


def predict_masks(
    variables: dict,
    images: np.ndarray,
    widths=unet.DEFAULT_WIDTHS,
    batch_size: int = 64,
    compute_dtype: str = "float32",
) -> np.ndarray:
    """Foreground probabilities [N, H, W] float32 in [0, 1] of images [N, H, W, 3] in [-1, 1]
    (the U-Net's convolutions in `compute_dtype`)."""
    outputs = []
    for logits, count in _batched_logits(variables, images, widths, batch_size, compute_dtype):
        outputs.append(np.asarray(jax.nn.softmax(logits, axis=-1)[:count, ..., 1]))
    return np.concatenate(outputs, axis=0)


def score_segmenter(
    variables: dict,
    images: np.ndarray,
    masks: np.ndarray,
    config: ml_collections.ConfigDict,
    upsample_x2: bool = False,
) -> dict[str, float]:
    """Segmentation metrics of the segmenter on (images, masks).

    Args:
      images: [N, H, W, 3] float32 in [-1, 1].
      masks: [N, H, W] (or [N, H, W, 1]) ground truth, bool or float (thresholded at 0.5); with
        `upsample_x2` (the "128" protocol) at twice the image resolution.
    Returns:
      `seg_metrics.SegmentationAccumulator.result()`.
    """
    masks = np.asarray(masks)
    if masks.shape[0] != images.shape[0]:
        raise ValueError(f"masks: {masks.shape[0]} masks for {images.shape[0]} images")
    accumulator = seg_metrics.SegmentationAccumulator()
    start = 0
    batches = _batched_logits(
        variables, images, config.widths, config.eval_batch_size, config.compute_dtype
    )
    for logits, count in batches:
        target = masks[start : start + count]
        start += count
        logits = logits[:count]
        if upsample_x2:
            accumulator.update(seg_metrics.protocol_128_batch_sums(logits, target))
        else:
            accumulator.add(seg_metrics.logits_to_mask(logits), target)
    return accumulator.result()


@dataclasses.dataclass
class SegmenterResult:
    variables: dict  # {'params', 'batch_stats'} with the best validation IoU.
    best_step: int
    best_val_metrics: dict[str, float]
    history: list[dict[str, float]]  # One entry per validation: step, loss, metrics.


def train_segmenter(
    images: np.ndarray,
    masks: np.ndarray,
    config: ml_collections.ConfigDict | None = None,
    seed: int = 0,
    train_batches: Iterator[tuple[np.ndarray, np.ndarray]] | None = None,
    compiler_options: dict | None = None,
) -> SegmenterResult:
    """Trains the segmenter on pairs and keeps the best-validation parameters.

    Args:
      images: [N, H, W, 3] float32 in [-1, 1] (e.g. exported composites).
      masks: [N, H, W] bool / float in [0, 1] (thresholded at 0.5).
      config: `default_segmenter_config()` or a modified copy.
      seed: seeds initialisation, batch order and augmentation.
      train_batches: optional iterator of (images [B, ...], masks [B, ...]) replacing the
        sampling from the training part of `images` (validation still uses the last fraction).
      compiler_options: XLA options of the train step (`compiler_options.for_devices`).
    """
    config = config or default_segmenter_config()
    images = np.asarray(images, np.float32)
    masks = np.asarray(seg_metrics.as_binary_mask(masks, "masks"))
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[:3] != masks.shape:
        raise ValueError(f"images {images.shape} / masks {masks.shape}: need [N,H,W,3] / [N,H,W]")
    train_indices, val_indices = train_val_split(images.shape[0], config.val_fraction)
    if train_batches is None:
        train_batches = random_batches(
            images[train_indices], masks[train_indices], config.batch_size, seed
        )
    init_key, loop_key = jax.random.split(jax.random.key(seed))
    state = create_state(init_key, config, images.shape[1:])
    train_step = make_train_step(config, compiler_options)

    best = None
    history = []
    for step in range(1, config.num_steps + 1):
        batch_images, batch_masks = next(train_batches)
        state, metrics = train_step(
            state, batch_images, batch_masks, jax.random.fold_in(loop_key, step)
        )
        if step % config.eval_every_steps == 0 or step == config.num_steps:
            loss = float(metrics["loss"])
            if not np.isfinite(loss):
                raise FloatingPointError(f"segmenter loss is {loss} at step {step}")
            val_metrics = score_segmenter(
                _variables(state), images[val_indices], masks[val_indices], config
            )
            history.append({"step": step, "loss": loss, **val_metrics})
            logging.info("segmenter step %d loss %.4f val IoU %.4f", step, loss, val_metrics["iou"])
            if best is None or val_metrics["iou"] > best.best_val_metrics["iou"]:
                best = SegmenterResult(jax.device_get(_variables(state)), step, val_metrics, [])
    best.history = history
    return best
