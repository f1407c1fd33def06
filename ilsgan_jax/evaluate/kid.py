"""KID as StyleGAN2-ADA computes it: the subset estimator (polynomial kernel `(x.y / d + 1)^3`,
unbiased MMD^2 averaged over `num_subsets` random subsets of size
`min(n_gen, n_real, max_subset_size)`), in float64 on the host.

The `kid50k_full` protocol is `fid.compute_fid(..., with_kid=True)` with `num_subsets=100,
max_subset_size=1000`.
"""

from __future__ import annotations

import numpy as np


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
