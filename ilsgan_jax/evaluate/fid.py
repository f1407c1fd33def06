"""FID (and KID) of a generator against a real data set, following StyleGAN2-ADA's metrics.

- Features: Inception pool3 (`inception_features`), statistics in float64 on the host
  (`feature_stats`).
- Frechet distance: `|mu_g - mu_r|^2 + tr(S_g + S_r - 2 sqrtm(S_g S_r))` with
  `scipy.linalg.sqrtm`, keeping the real part of the result as the reference does.
- KID: `kid.kernel_inception_distance` (the reference's subset estimator).
- Real statistics are cached as .npz under `<cache_dir>/fid_stats/`, keyed by
  (dataset, resolution, split, num_images) (`stats_cache`).

Protocols: `fid50k_full` = `compute_fid(..., num_gen=50_000, num_real=None)` over the whole
training set without x-flips; `fid10k_full` the same with `num_gen=10_000`; KID as `kid50k_full`
with `num_subsets=100, max_subset_size=1000`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np
import scipy.linalg
from absl import logging

from ilsgan_jax.evaluate.inception_features import (
    FeatureExtractor,
    GenerateFn,
    generated_feature_statistics,
    make_inception_extractor,
    real_feature_statistics,
)
from ilsgan_jax.evaluate.kid import kernel_inception_distance
from ilsgan_jax.evaluate.stats_cache import (
    CachedStatistics,
    has_statistics,
    load_statistics,
    save_statistics,
    stats_cache_path,
)


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
        if has_statistics(path):
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
