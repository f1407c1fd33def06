"""Streaming float64 statistics of feature vectors: mean and biased covariance (divide by N, as
StyleGAN2-ADA's `FeatureStats.get_mean_cov`), computed on the host; optionally all the features
too (for KID)."""

from __future__ import annotations

import numpy as np


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
