"""The cache of real-data statistics: one .npz per (dataset, resolution, split, num_images) under
`<cache_dir>/fid_stats/`, holding the float64 mean and covariance, the image count and (when KID
needs them) the features. Written atomically; the cache directory may be a URL (gs://...)."""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
from etils import epath

from ilsgan_jax import files, runtime
from ilsgan_jax.evaluate.feature_stats import FeatureStatistics

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def stats_cache_path(
    dataset: str, resolution: int, split: str, num_images: int | None, cache_dir: str | None = None
) -> str:
    """`<cache_dir>/fid_stats/<dataset>-<resolution>px-<split>-<num_images|all>.npz`."""
    for field, value in (("dataset", dataset), ("split", split)):
        if not _SAFE_NAME.match(str(value)):
            raise ValueError(f"{field}={value!r}: use letters, digits, '_', '-', '.' only")
    count = "all" if num_images is None else str(int(num_images))
    directory = epath.Path(cache_dir or runtime.cache_dir()) / "fid_stats"
    return str(directory / f"{dataset}-{int(resolution)}px-{split}-{count}.npz")


def save_statistics(path: str, stats: FeatureStatistics) -> None:
    """Writes mean, covariance, count (and features when kept) atomically."""
    mean, cov = stats.mean_cov()
    arrays = {"mean": mean, "cov": cov, "num_items": np.int64(stats.num_items)}
    if stats.keep_features:
        arrays["features"] = stats.features()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files.write_bytes(path, buffer.getvalue())


@dataclasses.dataclass(frozen=True)
class CachedStatistics:
    """Real-data statistics read from the cache."""

    mean: np.ndarray  # [D] float64
    cov: np.ndarray  # [D, D] float64
    num_items: int
    features: np.ndarray | None  # [N, D] float32 when saved with features (for KID)


def has_statistics(path: str) -> bool:
    """Whether the cache file `path` (local or a URL) exists."""
    return epath.Path(path).is_file()


def load_statistics(path: str) -> CachedStatistics:
    with epath.Path(path).open("rb") as file, np.load(file) as archive:
        for key in ("mean", "cov", "num_items"):
            if key not in archive.files:
                raise ValueError(f"{path}: not a statistics file (no {key!r})")
        features = archive["features"] if "features" in archive.files else None
        return CachedStatistics(
            archive["mean"], archive["cov"], int(archive["num_items"]), features
        )
