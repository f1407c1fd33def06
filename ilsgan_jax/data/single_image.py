"""One image as a training set: random square crops of a single picture (Dai et al.'s
homogeneous-object-cluster setting, e.g. one photo of many similar objects).

The image is decoded once with Pillow (clear errors for a missing or unreadable file) and held in
memory; tf.data then makes every example from its global index `g` alone: a stateless draw keyed
by (seed, g) gives the crop side (a fraction of the shorter image side, uniform in
`data.crop_fraction`), the crop position and the x-flip (when `data.mirror`); the crop is resized
to R x R with the pipeline's antialiased bilinear resize (preprocess.crop_and_resize) and rounded
to uint8 like a decoded file. Example `g` of step `s` is `s * global_batch + process_index *
local_batch + i`, so the stream does not depend on the number of processes and resuming at step
`s` simply starts the indices there (exact, free resumption).

The picture is a file (`data.image_path`) or a built-in scene with known per-object masks
(`data.builtin_image`, see builtin_images.py); for a built-in one, `crops_with_object_masks` gives
the stream's crops together with every object's mask cropped the same way, for scoring.

Config fields read (config.data): image_path, builtin_image, crop_fraction, resolution, mirror,
prefetch, num_parallel_calls; random_crop_scale, when present, must be 1 (the pipeline's crops).
"""

import os
from collections.abc import Iterator

import numpy as np
import PIL.Image
import tensorflow as tf

from ilsgan_jax.data import builtin_images, preprocess

_SEED_MODULUS = 2**31 - 1


def load_image(path: str | None) -> np.ndarray:
    """Decodes `path` fully: uint8 [H, W, 3] (grey and RGBA images are converted to RGB).

    Raises:
      ValueError naming `data.image_path` and the file when it is unset, missing or unreadable.
    """
    if not path:
        raise ValueError(
            "data.image_path must name an image file (or data.builtin_image one of "
            f"{sorted(builtin_images.BUILTIN_IMAGES)}) for data.name='single_image'"
        )
    if not os.path.isfile(path):
        raise ValueError(f"data.image_path: no such file: {path}")
    try:
        with PIL.Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"data.image_path: cannot decode {path}: {error}") from error
    if array.ndim != 3 or min(array.shape[:2]) < 1:
        raise ValueError(f"data.image_path: {path} decodes to an empty image {array.shape}")
    return array


def _builtin_name(data_config) -> str | None:
    """data.builtin_image, or None; ValueError when both it and data.image_path are set."""
    name = data_config.get("builtin_image")
    if name and data_config.get("image_path"):
        raise ValueError(
            f"set one of data.image_path ({data_config.image_path!r}) and data.builtin_image "
            f"({name!r}), not both"
        )
    return name or None


def source_image(data_config) -> np.ndarray:
    """The picture of `data.builtin_image` or, when that is unset, `data.image_path`: uint8
    [H, W, 3]."""
    name = _builtin_name(data_config)
    if name is not None:
        return builtin_images.render_builtin_image(name)["image"]
    return load_image(data_config.get("image_path"))


def _builtin_scene(data_config) -> dict[str, np.ndarray]:
    name = _builtin_name(data_config)
    if name is None:
        raise ValueError("per-object masks need data.builtin_image (an image file has none)")
    return builtin_images.render_builtin_image(name)


def object_masks(data_config) -> np.ndarray:
    """Per-object masks of the built-in picture: uint8 [H, W, K] in [0, 255] (see
    builtin_images.render_builtin_image); ValueError for a picture from a file (no masks)."""
    return _builtin_scene(data_config)["masks"]


def check_crop_fraction(crop_fraction) -> tuple[float, float]:
    """(low, high) with 0 < low <= high <= 1; a single number means a fixed fraction."""
    values = (crop_fraction,) * 2 if np.isscalar(crop_fraction) else tuple(crop_fraction)
    if len(values) != 2:
        raise ValueError(f"data.crop_fraction must be a number or (low, high), got {crop_fraction}")
    low, high = (float(value) for value in values)
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"data.crop_fraction must satisfy 0 < low <= high <= 1, got {values}")
    return low, high


def random_crop(
    image: tf.Tensor,
    example_index: tf.Tensor,
    *,
    seed: int,
    crop_fraction: tuple[float, float],
    resolution: int,
    mirror: bool,
) -> tf.Tensor:
    """Example `example_index` of the stream: uint8 [R, R, C].

    Args:
      image: uint8 [H, W, C] tensor, the whole picture (C = 3; extra channels, such as object
        masks stacked after the colours, are cropped, resized and flipped alike).
      example_index: int64 scalar tensor, the global example index g.
      seed: stream seed; crop_fraction: (low, high) of the crop side / shorter image side;
      resolution: R; mirror: random x-flips with probability 0.5.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    draws = tf.random.stateless_uniform(
        [4], seed=tf.stack([tf.constant(seed % _SEED_MODULUS, tf.int64), example_index])
    )
    low, high = crop_fraction
    shorter = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.cast(tf.round((low + (high - low) * draws[0]) * shorter), tf.int32)
    side = tf.clip_by_value(side, 1, tf.minimum(height, width))
    top = tf.cast(tf.floor(draws[1] * tf.cast(height - side + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(draws[2] * tf.cast(width - side + 1, tf.float32)), tf.int32)
    top, left = tf.minimum(top, height - side), tf.minimum(left, width - side)
    crop = preprocess.to_uint8(
        preprocess.crop_and_resize(image, (top, left, side, side), resolution)
    )
    if mirror:
        crop = tf.cond(draws[3] < 0.5, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
    return tf.ensure_shape(crop, (resolution, resolution, image.shape[-1]))


def crops_with_object_masks(
    data_config, *, seed: int, example_indices: np.ndarray
) -> dict[str, np.ndarray]:
    """The stream's examples `example_indices` with each object's mask cropped alike.

    The masks are cropped, resized (the same antialiased bilinear resize) and flipped with the
    image, so they are the per-object ground truth of exactly the crops the training stream
    yields for these global indices and `seed` (the `seed` given to the iterator).

    Args:
      data_config: `config.data` with builtin_image, crop_fraction, resolution, mirror.
      seed: the stream seed; example_indices: [N] int, global example indices (>= 0).

    Returns:
      'image': uint8 [N, R, R, 3], equal to the stream's crops; 'masks': uint8 [N, R, R, K] in
      [0, 255] (threshold at 128 for binary masks; an object outside the crop has an empty mask).
    """
    scene = _builtin_scene(data_config)
    picture = tf.constant(np.concatenate([scene["image"], scene["masks"]], axis=-1))
    crop_fraction = check_crop_fraction(data_config.crop_fraction)
    resolution, mirror = int(data_config.resolution), bool(data_config.mirror)
    indices = np.asarray(example_indices, np.int64).reshape(-1)
    if indices.size == 0 or indices.min() < 0:
        raise ValueError("example_indices must be a non-empty array of indices >= 0")
    crops = tf.data.Dataset.from_tensor_slices(indices).map(
        lambda index: random_crop(
            picture,
            index,
            seed=int(seed),
            crop_fraction=crop_fraction,
            resolution=resolution,
            mirror=mirror,
        )
    )
    crops = next(crops.batch(indices.size).as_numpy_iterator())
    return {"image": crops[..., :3], "masks": crops[..., 3:]}


def create_single_image_iterator(
    data_config,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches of random crops of the picture (`source_image`) for this process.

    Same interface as input_pipeline.create_train_iterator.

    Args:
      data_config: `config.data` with image_path or builtin_image, crop_fraction, resolution,
        mirror, prefetch, num_parallel_calls.
      global_batch_size: images per step over all processes; must divide by process_count.
      seed: crop and flip seed.
      start_step: the step training resumes at; the stream is exactly step 0's from there on.
      process_index, process_count: default to jax.process_index() / jax.process_count().

    Yields:
      {'image': float32 [global_batch_size // process_count, R, R, 3] in [-1, 1]}.
    """
    if process_index is None or process_count is None:
        import jax  # Only for the defaults; keeps the tests of this module JAX-free.

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of "
            f"the process count {process_count}"
        )
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    resolution = int(data_config.resolution)
    if resolution < 1:
        raise ValueError(f"data.resolution must be positive, got {resolution}")
    crop_fraction = check_crop_fraction(data_config.crop_fraction)
    if data_config.get("random_crop_scale", 1.0) != 1.0:
        raise ValueError(
            "data.random_crop_scale must be 1.0 for data.name='single_image' (its crops are set "
            f"by data.crop_fraction), got {data_config.random_crop_scale}"
        )
    image = tf.constant(source_image(data_config))
    local_batch_size = global_batch_size // process_count
    mirror = bool(data_config.mirror)

    def example(local_counter):
        step, position = local_counter // local_batch_size, local_counter % local_batch_size
        index = step * global_batch_size + process_index * local_batch_size + position
        return random_crop(
            image,
            index,
            seed=int(seed),
            crop_fraction=crop_fraction,
            resolution=resolution,
            mirror=mirror,
        )

    parallel = int(data_config.num_parallel_calls)
    prefetch = int(data_config.prefetch)
    dataset = tf.data.Dataset.range(start_step * local_batch_size, np.iinfo(np.int64).max)
    parallel = tf.data.AUTOTUNE if parallel < 0 else parallel
    dataset = dataset.map(example, num_parallel_calls=parallel)
    dataset = dataset.batch(local_batch_size, drop_remainder=True)
    dataset = dataset.map(lambda images: {"image": preprocess.images_to_unit_range(images)})
    dataset = dataset.prefetch(tf.data.AUTOTUNE if prefetch < 0 else prefetch)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).as_numpy_iterator()
