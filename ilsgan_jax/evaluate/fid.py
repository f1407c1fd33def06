"""FID and KID on Inception pool3 features, following StyleGAN2-ADA's metrics.

- Features: `inception.InceptionV3` on images quantised as StyleGAN2-ADA does
  (`images_to_uint8_range`), or on uint8 batches as they come.
- Statistics: mean and biased covariance (divide by N, as `FeatureStats.get_mean_cov`) in float64
  on the host.
- Frechet distance: `|mu_g - mu_r|^2 + tr(S_g + S_r - 2 sqrtm(S_g S_r))` with
  `scipy.linalg.sqrtm`, keeping the real part of the result as the reference does.
- KID: the reference's subset estimator (polynomial kernel `(x.y / d + 1)^3`, unbiased MMD^2
  averaged over `num_subsets` random subsets of size `min(n_gen, n_real, max_subset_size)`).
- Real statistics are cached as .npz under `<cache_dir>/fid_stats/`, keyed by
  (dataset, resolution, split, num_images).

Protocols: `fid50k_full` = `compute_fid(..., num_gen=50_000, num_real=None)` over the whole
training set without x-flips; `fid10k_full` the same with `num_gen=10_000`; KID as `kid50k_full`
with `num_subsets=100, max_subset_size=1000`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilsgan_jax import runtime
from ilsgan_jax.evaluate import inception

FeatureExtractor = Callable[[np.ndarray], np.ndarray]
GenerateFn = Callable[[jax.Array, int], jax.Array]


# ------------------------------------------------------------------------------------------------
# Statistics and distances (float64, NumPy).
# ------------------------------------------------------------------------------------------------


class FeatureStatistics:
    """Streaming float64 mean/covariance of feature vectors (optionally keeping all of them).

    `update` takes [B, D] arrays; `max_items` stops counting once reached (extra rows dropped).
    """

    def __init__(self, max_items: int | None = None, keep_features: bool = False):
        self.max_items = max_items
        self.keep_features = keep_features
        self.num_items = 0
        self._sum: np.ndarray | None = None
        self._outer_sum: np.ndarray | None = None
        self._kept: list[np.ndarray] = []

    @property
    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def update(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float32)
        if features.ndim != 2:
            raise ValueError(f"features: expected [B, D], got shape {features.shape}")
        if self.max_items is not None:
            features = features[: max(self.max_items - self.num_items, 0)]
        if features.shape[0] == 0:
            return
        if self._sum is None:
            dim = features.shape[1]
            self._sum = np.zeros(dim, np.float64)
            self._outer_sum = np.zeros((dim, dim), np.float64)
        features64 = features.astype(np.float64)
        self._sum += features64.sum(axis=0)
        self._outer_sum += features64.T @ features64
        self.num_items += features.shape[0]
        if self.keep_features:
            self._kept.append(features)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """([D], [D, D]) float64 mean and biased covariance."""
        if self.num_items == 0:
            raise ValueError("FeatureStatistics: no features were added")
        mean = self._sum / self.num_items
        cov = self._outer_sum / self.num_items - np.outer(mean, mean)
        return mean, cov

    def features(self) -> np.ndarray:
        """[N, D] float32 features (only with `keep_features=True`)."""
        if not self.keep_features:
            raise ValueError("FeatureStatistics: created with keep_features=False")
        return np.concatenate(self._kept, axis=0)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and biased covariance [D, D] (float64) of features [N, D]."""
    stats = FeatureStatistics()
    stats.update(features)
    return stats.mean_cov()


def frechet_distance(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Frechet distance between N(mean_a, cov_a) and N(mean_b, cov_b), in float64.

    `sqrtm(cov_a @ cov_b)` may come back complex with tiny imaginary parts (round-off on nearly
    singular products); as StyleGAN2-ADA does, the real part of the final value is returned.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape:
        raise ValueError(
            f"statistics shapes differ: means {mean_a.shape} vs {mean_b.shape}, "
            f"covariances {cov_a.shape} vs {cov_b.shape}"
        )
    mean_term = np.square(mean_a - mean_b).sum()
    sqrt_product, _ = scipy.linalg.sqrtm(cov_a @ cov_b, disp=False)
    distance = mean_term + np.trace(cov_a + cov_b - 2.0 * sqrt_product)
    return float(np.real(distance))


def kernel_inception_distance(
    generated_features: np.ndarray,
    real_features: np.ndarray,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """KID as StyleGAN2-ADA computes it (subset average of the unbiased polynomial MMD^2).

    Args:
      generated_features: [N_g, D]; real_features: [N_r, D].
      seed: seeds the subset draws (the reference uses NumPy's global generator).
    """
    generated = np.asarray(generated_features, np.float64)
    real = np.asarray(real_features, np.float64)
    if generated.ndim != 2 or real.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(f"features: shapes {generated.shape} and {real.shape} do not match")
    dim = generated.shape[1]
    subset_size = min(generated.shape[0], real.shape[0], max_subset_size)
    if subset_size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got subset size {subset_size}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = generated[rng.choice(generated.shape[0], subset_size, replace=False)]
        y = real[rng.choice(real.shape[0], subset_size, replace=False)]
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        across = (x @ y.T / dim + 1) ** 3
        total += (within.sum() - np.diag(within).sum()) / (subset_size - 1)
        total -= across.sum() * 2 / subset_size
    return float(total / num_subsets / subset_size)


# ------------------------------------------------------------------------------------------------
# Real-data statistics cache.
# ------------------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def stats_cache_path(
    dataset: str, resolution: int, split: str, num_images: int | None, cache_dir: str | None = None
) -> str:
    """`<cache_dir>/fid_stats/<dataset>-<resolution>px-<split>-<num_images|all>.npz`."""
    for field, value in (("dataset", dataset), ("split", split)):
        if not _SAFE_NAME.match(str(value)):
            raise ValueError(f"{field}={value!r}: use letters, digits, '_', '-', '.' only")
    count = "all" if num_images is None else str(int(num_images))
    directory = os.path.join(cache_dir or runtime.cache_dir(), "fid_stats")
    return os.path.join(directory, f"{dataset}-{int(resolution)}px-{split}-{count}.npz")


def save_statistics(path: str, stats: FeatureStatistics) -> None:
    """Writes mean, covariance, count (and features when kept) atomically."""
    mean, cov = stats.mean_cov()
    arrays = {"mean": mean, "cov": cov, "num_items": np.int64(stats.num_items)}
    if stats.keep_features:
        arrays["features"] = stats.features()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=".npz", delete=False) as f:
        np.savez(f, **arrays)
        temporary = f.name
    os.replace(temporary, path)


@dataclasses.dataclass(frozen=True)
class CachedStatistics:
    """Real-data statistics read from the cache."""

    mean: np.ndarray  # [D] float64
    cov: np.ndarray  # [D, D] float64
    num_items: int
    features: np.ndarray | None  # [N, D] float32 when saved with features (for KID)


def load_statistics(path: str) -> CachedStatistics:
    with np.load(path) as archive:
        for key in ("mean", "cov", "num_items"):
            if key not in archive.files:
                raise ValueError(f"{path}: not a statistics file (no {key!r})")
        features = archive["features"] if "features" in archive.files else None
        return CachedStatistics(
            archive["mean"], archive["cov"], int(archive["num_items"]), features
        )


# ------------------------------------------------------------------------------------------------
# Feature extraction.
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# FID / KID end to end.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GenerativeMetrics:
    fid: float
    kid: float | None  # None unless requested
    num_generated: int
    num_real: int


def compute_fid(
    generate_fn: GenerateFn,
    real_iterator: Iterable | Callable[[], Iterable] | None,
    inception_params: dict | None,
    num_gen: int,
    *,
    batch_size: int = 64,
    num_real: int | None = None,
    cache_key: tuple[str, int, str] | None = None,
    cache_dir: str | None = None,
    with_kid: bool = False,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    feature_extractor: FeatureExtractor | None = None,
) -> GenerativeMetrics:
    """FID (and optionally KID) of a generator against a real data set.

    Args:
      generate_fn: `(key, batch_size) -> images [batch_size, H, W, 3]` float32 in [-1, 1].
      real_iterator: finite iterable of real batches (see `real_feature_statistics`), or a
        zero-argument callable returning one (called only on a cache miss); may be None when
        `cache_key` names statistics already cached.
      inception_params: variables from `inception.load_inception_params()`; ignored when
        `feature_extractor` is given.
      num_gen: number of generated images (50_000 for fid50k_full, 10_000 for fid10k_full).
      num_real: real images to use; None = the whole iterator (the '_full' protocols).
      cache_key: (dataset, resolution, split) to cache the real statistics under
        `stats_cache_path(dataset, resolution, split, num_real)`.
      with_kid: also compute KID (real features are then cached too).
      seed: seeds the generator keys and the KID subsets.
      feature_extractor: replaces the Inception extractor (tests, other detectors).
    """
    if num_gen < 2:
        raise ValueError(f"num_gen={num_gen}: need at least 2 images")
    if feature_extractor is None:
        if inception_params is None:
            raise ValueError("inception_params: required unless feature_extractor is given")
        feature_extractor = make_inception_extractor(inception_params, batch_size)

    real = _real_statistics(
        real_iterator, feature_extractor, batch_size, num_real, cache_key, cache_dir, with_kid
    )
    generated = generated_feature_statistics(
        generate_fn, feature_extractor, num_gen, batch_size, seed=seed, keep_features=with_kid
    )
    generated_mean, generated_cov = generated.mean_cov()
    fid = frechet_distance(generated_mean, generated_cov, real.mean, real.cov)
    kid = None
    if with_kid:
        kid = kernel_inception_distance(
            generated.features(), real.features, kid_subsets, kid_subset_size, seed=seed
        )
    return GenerativeMetrics(fid, kid, generated.num_items, real.num_items)


def _real_statistics(
    real_iterator, feature_extractor, batch_size, num_real, cache_key, cache_dir, with_kid
) -> CachedStatistics:
    path = None
    if cache_key is not None:
        dataset, resolution, split = cache_key
        path = stats_cache_path(dataset, resolution, split, num_real, cache_dir)
        if os.path.isfile(path):
            cached = load_statistics(path)
            if not with_kid or cached.features is not None:
                logging.info("FID: real statistics from %s", path)
                return cached
    if real_iterator is None:
        raise ValueError(f"real_iterator: needed, no usable cached statistics at {path}")
    if callable(real_iterator):
        real_iterator = real_iterator()
    stats = real_feature_statistics(
        real_iterator, feature_extractor, batch_size, num_real, keep_features=with_kid
    )
    if path is not None:
        save_statistics(path, stats)
        logging.info("FID: cached real statistics of %d images at %s", stats.num_items, path)
    mean, cov = stats.mean_cov()
    features = stats.features() if with_kid else None
    return CachedStatistics(mean, cov, stats.num_items, features)
