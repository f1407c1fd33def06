"""tf.data input pipelines that hand out per-process NumPy batches.

Training: this process's share of the split (tfds.even_splits or the same contiguous slices) ->
per-epoch seeded shuffle of encoded records -> repeat -> skip to the resume point -> decode, crop,
resize (antialiased) -> random x-flip -> random crop (`data.random_crop_scale` > 1: the R x R
image resized to int(scale * R), then a uniformly placed R x R window) -> batch (drop_remainder)
-> [-1, 1] float32 -> prefetch.

Resumption reseeds per epoch and skips within the epoch: epoch e is shuffled with a seed derived
from (seed, e) and every example's flip and crop offsets are stateless functions of (seed, e,
position), so the stream from `start_step` is exactly the tail of the stream from step 0.
Resuming costs reading (not decoding) at most one epoch of records (decoding too for CUB, whose
tfds records are decoded before the shuffle; see sources.SourceSplit.decode_before_shuffle).

Evaluation: fixed order, once through, the last batch padded with zeros and `valid = False`;
every process yields the same number of batches (ceil of the largest share / batch size).
"""

import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from ilsgan_jax.data import preprocess, sources
from ilsgan_jax.data.sources import prepare_synthetic  # noqa: F401  (public entry point)

_SEED_MODULUS = 2**31 - 1
_CROP_STREAM = 1  # folded into an example's flip seed to key its crop offsets


def _process_index_and_count(process_index: int | None, process_count: int | None):
    if process_index is None or process_count is None:
        import jax  # Only needed for the defaults; keeps tests of the pipeline JAX-free.

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return int(process_index), int(process_count)


def _tf_option(value: int) -> int:
    return tf.data.AUTOTUNE if int(value) < 0 else int(value)


def _epoch_seed(seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """A shuffle seed per (seed, epoch): a stateless hash of the pair, int64 tensor."""
    key = tf.stack([tf.constant(seed % _SEED_MODULUS, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform([], seed=key, minval=0, maxval=_SEED_MODULUS, dtype=tf.int64)


def random_crop_side(data_config) -> int:
    """`int(data.random_crop_scale * data.resolution)`, the side the training images are resized
    to before their random R x R crop (R itself: no crop). ValueError naming the field for a
    scale below 1 or not finite."""
    scale = float(data_config.random_crop_scale)
    if not math.isfinite(scale) or scale < 1.0:
        raise ValueError(f"data.random_crop_scale must be a finite number >= 1, got {scale}")
    return preprocess.random_crop_side(scale, int(data_config.resolution))


def _with_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return dataset.with_options(options)


def _example_augmentation(data_config, seed: int):
    """`(image, example_index) -> image`: the x-flip (`data.mirror`) and the resize-and-random-
    crop (`data.random_crop_scale`) of one training example, stateless: drawn from (`seed`, the
    example's index in the whole stream), so a resumed stream repeats them exactly."""
    crop_side, resolution = random_crop_side(data_config), int(data_config.resolution)
    mirror = bool(data_config.mirror)

    def augment(image, example_index):
        example_seed = tf.stack([tf.constant(seed % _SEED_MODULUS, tf.int64), example_index])
        if mirror:
            flip = tf.random.stateless_uniform([], seed=example_seed) < 0.5
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        if crop_side > resolution:
            crop_seed = tf.random.experimental.stateless_fold_in(example_seed, _CROP_STREAM)
            image = preprocess.resize_and_random_crop(image, crop_side, resolution, crop_seed)
        return image

    return augment


def create_train_iterator(
    data_config,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches for this process.

    Args:
      data_config: the `config.data` ConfigDict (see config.py).
      global_batch_size: images per step over all processes; must divide by process_count.
      seed: shuffle, flip and crop seed (the same on every process; shares are disjoint anyway).
      start_step: the step training resumes at; the stream continues where step 0's would be.
      process_index, process_count: default to jax.process_index() / jax.process_count().

    Yields:
      {'image': float32 [global_batch_size // process_count, R, R, 3] in [-1, 1]}.
    """
    process_index, process_count = _process_index_and_count(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of "
            f"the process count {process_count}"
        )
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    local_batch_size = global_batch_size // process_count
    source = sources.source_split(
        data_config, data_config.train_split, process_index, process_count
    )
    if source.num_records < 1:
        raise ValueError(
            f"Process {process_index} has no training examples "
            f"({source.total_records} over {process_count} processes)"
        )
    num_records = source.num_records
    first_example = start_step * local_batch_size
    start_epoch, offset = divmod(first_example, num_records)
    buffer_size = max(1, min(int(data_config.shuffle_buffer), num_records))
    num_parallel_calls = _tf_option(data_config.num_parallel_calls)
    if source.decode_before_shuffle:
        records = source.records.map(
            lambda record: source.decode(record, False)["image"],
            num_parallel_calls=num_parallel_calls,
        )
        decode_record = lambda image: image  # noqa: E731
    else:
        records = source.records
        decode_record = lambda record: source.decode(record, False)["image"]  # noqa: E731
    augment = _example_augmentation(data_config, seed)

    def epoch_records(epoch: tf.Tensor) -> tf.data.Dataset:
        shuffled = records.shuffle(
            buffer_size, seed=_epoch_seed(seed, epoch), reshuffle_each_iteration=False
        )
        return shuffled.enumerate().map(lambda position, record: (epoch, position, record))

    def decode(epoch, position, record):
        return augment(decode_record(record), epoch * num_records + position)

    dataset = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
    dataset = dataset.flat_map(epoch_records).skip(offset)
    dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls)
    dataset = dataset.batch(local_batch_size, drop_remainder=True)
    dataset = dataset.map(lambda images: {"image": preprocess.images_to_unit_range(images)})
    dataset = _with_options(dataset.prefetch(_tf_option(data_config.prefetch)))
    return dataset.as_numpy_iterator()


def create_eval_iterator(
    data_config,
    *,
    split: str,
    batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    with_masks: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over this process's share of `split`, in a fixed order.

    Args:
      data_config: the `config.data` ConfigDict.
      split: e.g. data_config.eval_split ('test') or 'train' (FID statistics of the full data).
      batch_size: per-process batch size.
      with_masks: include masks when the split has them (a split without masks yields none).

    Yields:
      'image': float32 [B, R, R, 3] in [-1, 1]; 'mask': float32 [B, R, R, 1] in {0, 1}
      (ground truth thresholded at 0.5; only when the split has masks and with_masks);
      'valid': bool [B], False on the padding of the last batch (padded images and masks are
      all 0.0).
      Every process yields ceil(ceil(N / process_count) / B) batches.
    """
    process_index, process_count = _process_index_and_count(process_index, process_count)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source = sources.source_split(data_config, split, process_index, process_count)
    include_masks = with_masks and source.has_masks
    largest_share = -(-source.total_records // process_count)
    num_batches = -(-largest_share // batch_size)
    resolution = int(data_config.resolution)

    def decode(record):
        example = source.decode(record, include_masks)
        example["valid"] = tf.constant(True)
        return example

    padding = {
        "image": tf.zeros((resolution, resolution, 3), tf.uint8),
        "valid": tf.constant(False),
    }
    if include_masks:
        padding["mask"] = tf.zeros((resolution, resolution, 1), tf.uint8)
    dataset = source.records.map(
        decode, num_parallel_calls=_tf_option(data_config.num_parallel_calls)
    )
    dataset = dataset.concatenate(
        tf.data.Dataset.from_tensors(padding).repeat(num_batches * batch_size - source.num_records)
    )

    def to_float(batch):
        batch = dict(batch)
        valid = tf.cast(batch["valid"], tf.float32)[:, None, None, None]
        batch["image"] = preprocess.images_to_unit_range(batch["image"]) * valid
        if "mask" in batch:
            batch["mask"] = preprocess.masks_to_binary(batch["mask"])
        return batch

    dataset = dataset.batch(batch_size, drop_remainder=True).map(to_float)
    dataset = _with_options(dataset.prefetch(_tf_option(data_config.prefetch)))
    return dataset.as_numpy_iterator()


def num_examples(data_config, split: str) -> int:
    """Number of examples of `split` over all processes (after skipping unreadable files)."""
    return sources.source_split(data_config, split, 0, 1).total_records
