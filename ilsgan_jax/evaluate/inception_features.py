"""Inception pool3 features of real and generated images, and their streaming statistics.

Images are quantised as StyleGAN2-ADA does (`inception.images_to_uint8_range`), or taken as they
come when they are uint8 batches. The extractor runs on fixed-size batches (a short last batch is
padded and the extra rows dropped), sharded over the local devices when the batch divides evenly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilsgan_jax.evaluate import inception
from ilsgan_jax.evaluate.feature_stats import FeatureStatistics

FeatureExtractor = Callable[[np.ndarray], np.ndarray]
GenerateFn = Callable[[jax.Array, int], jax.Array]


def make_inception_extractor(
    inception_variables: dict, batch_size: int, devices: list | None = None
) -> FeatureExtractor:
    """A jitted `images -> [B, 2048] features` for batches of exactly `batch_size`.

    Images are [B, H, W, 3] float32 in [-1, 1] (quantised like StyleGAN2-ADA) or uint8 in
    [0, 255]. When `batch_size` divides evenly over the local devices the batch is sharded along
    a 1-D 'data' mesh (weights replicated); otherwise it runs on one device. Single-process only:
    in multi-process runs each process must extract its own slice and the statistics be merged.
    """
    devices = list(devices or jax.local_devices())
    network = inception.InceptionV3()

    def extract(variables, images):
        return network.apply(variables, images)

    if len(devices) > 1 and batch_size % len(devices) == 0:
        mesh = Mesh(np.asarray(devices), ("data",))
        batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        replicated = NamedSharding(mesh, PartitionSpec())
        variables = jax.device_put(inception_variables, replicated)
        jitted = jax.jit(extract, in_shardings=(replicated, batch_sharding))
    else:
        batch_sharding = None
        variables = jax.device_put(inception_variables, devices[0])
        jitted = jax.jit(extract)

    def extract_features(images: np.ndarray) -> np.ndarray:
        images = _as_uint8_range(images)
        if images.shape[0] != batch_size:
            raise ValueError(f"images: expected batch {batch_size}, got {images.shape[0]}")
        if batch_sharding is not None:
            images = jax.device_put(images, batch_sharding)
        return np.asarray(jitted(variables, images))

    return extract_features


def _as_uint8_range(images) -> jax.Array:
    """uint8 batches pass as they are; float batches in [-1, 1] are quantised."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected [B, H, W, 3], got shape {images.shape}")
    if images.dtype == np.uint8:
        return jnp.asarray(images, jnp.float32)
    return inception.images_to_uint8_range(jnp.asarray(images, jnp.float32))


def _padded(images: np.ndarray, batch_size: int) -> np.ndarray:
    """Pads a short last batch by repeating its first image (the extra rows are dropped)."""
    missing = batch_size - images.shape[0]
    if missing <= 0:
        return images
    filler = np.repeat(np.asarray(images[:1]), missing, axis=0)
    return np.concatenate([np.asarray(images), filler], axis=0)


def _image_batches(real_iterator: Iterable) -> Iterable[np.ndarray]:
    for batch in real_iterator:
        yield batch["image"] if isinstance(batch, dict) else batch


def real_feature_statistics(
    real_iterator: Iterable,
    extract_features: FeatureExtractor,
    batch_size: int,
    num_images: int | None = None,
    keep_features: bool = False,
) -> FeatureStatistics:
    """Statistics of real images.

    Args:
      real_iterator: finite iterable of image batches (arrays [B, H, W, 3], float32 in [-1, 1]
        or uint8, or dicts with an 'image' entry), B <= batch_size. It is read to its end
        (`num_images=None`, the 'full' protocol) or until `num_images` images.
    """
    stats = FeatureStatistics(max_items=num_images, keep_features=keep_features)
    for images in _image_batches(real_iterator):
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size]
            stats.update(extract_features(_padded(chunk, batch_size))[: chunk.shape[0]])
        if stats.is_full:
            break
    if num_images is not None and stats.num_items < num_images:
        raise ValueError(f"real_iterator: ended after {stats.num_items} of {num_images} images")
    return stats


def generated_feature_statistics(
    generate_fn: GenerateFn,
    extract_features: FeatureExtractor,
    num_images: int,
    batch_size: int,
    seed: int = 0,
    keep_features: bool = False,
) -> FeatureStatistics:
    """Statistics of `num_images` generated images.

    Args:
      generate_fn: `(key, batch_size) -> [batch_size, H, W, 3]` float32 in [-1, 1]; batch i gets
        `jax.random.fold_in(jax.random.key(seed), i)`, so results are reproducible.
    """
    stats = FeatureStatistics(max_items=num_images, keep_features=keep_features)
    base_key = jax.random.key(seed)
    batch_index = 0
    while not stats.is_full:
        images = generate_fn(jax.random.fold_in(base_key, batch_index), batch_size)
        if images.shape[0] != batch_size:
            raise ValueError(f"generate_fn: returned {images.shape[0]} images, not {batch_size}")
        stats.update(extract_features(images))
        batch_index += 1
    return stats
