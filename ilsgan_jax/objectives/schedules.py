"""Training schedules and hyperparameter rules: ILS sigma, generator EMA, lazy regularisation."""

import jax.numpy as jnp

SIGMA_STRATEGIES = ("all_time", "cool_down", "cos")
ILS_WARMUP_KIMG = 400  # the reference's `start`: the initial sigma applies while kimg <= 400
COOL_DOWN_PERIOD_KIMG = 200  # 'cool_down': sigma on for 200 kimg, off for 600, repeating
COS_PERIOD_KIMG = 400  # 'cos': the reference's T_max

# sigma presets of the reference configs (train_ILS_64.py / train_ILS_128.py): estimator,
# initial sigma (kimg <= 400) and sigma afterwards.
ILS_PRESETS = {
    "ILS_predL": {"estimator": "laplace", "initial_sigma": 0.2, "sigma": 1.0},
    "ILS_predN": {"estimator": "gaussian", "initial_sigma": 0.2, "sigma": 1.0},
    "ILS_learnL": {"estimator": "neural_laplace", "initial_sigma": 1e-3, "sigma": 1e-3},
    "ILS_learnN": {"estimator": "neural_gaussian", "initial_sigma": 1e-3, "sigma": 1e-3},
}


def ils_sigma(
    cur_nimg: int | jnp.ndarray,
    *,
    initial_sigma: float = 0.2,
    sigma: float = 1.0,
    strategy: str = "all_time",
    initial_enabled: bool = True,
    warmup_kimg: int = ILS_WARMUP_KIMG,
) -> jnp.ndarray:
    """Weight of the ILS term after `cur_nimg` real images (reference `accumulate_gradients`).

    With kimg = cur_nimg // 1000 (integer, as the reference passes it):
      kimg <= warmup_kimg (400): `initial_sigma` (0 if `initial_enabled` is False);
      kimg > warmup_kimg: 'all_time' -> sigma;
                   'cool_down' -> [sigma, 0, 0, 0][((kimg - warmup_kimg - 1) // 200) % 4];
                   'cos' -> sigma * 0.5 * (1 + cos(pi * kimg / 400)) (the reference's formula).

    Args:
      cur_nimg: images seen so far, int or int32 scalar array (jit-friendly).
      initial_sigma: 0.2 for the fixed estimators, 1e-3 for the learned ones.
      sigma: 1.0 for the fixed estimators, 1e-3 for the learned ones.
      strategy: one of `SIGMA_STRATEGIES`.
      initial_enabled: the reference's `initial_anti`.
      warmup_kimg: end of the initial phase; the reference's fixed 400 kimg (5% of its
        8000-kimg runs).

    Returns:
      [] float32 >= 0.
    """
    if strategy not in SIGMA_STRATEGIES:
        raise ValueError(f"strategy must be one of {SIGMA_STRATEGIES}, got '{strategy}'")
    kimg = jnp.asarray(cur_nimg) // 1000
    if strategy == "all_time":
        late = jnp.float32(sigma)
    elif strategy == "cool_down":
        phase = ((kimg - warmup_kimg - 1) // COOL_DOWN_PERIOD_KIMG) % 4
        late = jnp.where(phase == 0, jnp.float32(sigma), jnp.float32(0.0))
    else:
        angle = jnp.pi * kimg.astype(jnp.float32) / COS_PERIOD_KIMG
        late = jnp.float32(sigma) * 0.5 * (1.0 + jnp.cos(angle))
    early = jnp.float32(initial_sigma if initial_enabled else 0.0)
    return jnp.where(kimg <= warmup_kimg, early, late).astype(jnp.float32)


def linear_rampup(
    cur_nimg: int | jnp.ndarray, rampup_kimg: float, start_kimg: float = 0.0
) -> jnp.ndarray:
    """A weight's multiplier: 0 until `start_kimg` thousand images, then rising linearly to 1
    over the next `rampup_kimg` (`clip((kimg - start_kimg) / rampup_kimg, 0, 1)`; a step from 0
    to 1 at `start_kimg` when `rampup_kimg` is 0, so 1 throughout with both 0). [] float32 in
    [0, 1]."""
    if rampup_kimg < 0:
        raise ValueError(f"rampup_kimg must be >= 0, got {rampup_kimg}")
    if start_kimg < 0:
        raise ValueError(f"start_kimg must be >= 0, got {start_kimg}")
    kimg = jnp.asarray(cur_nimg, jnp.float32) / 1000.0
    if rampup_kimg == 0:
        return (kimg >= start_kimg).astype(jnp.float32)
    return jnp.clip((kimg - start_kimg) / rampup_kimg, 0.0, 1.0).astype(jnp.float32)


def default_ema_kimg(batch_size: int) -> float:
    """StyleGAN2-ADA's EMA half-life for a batch: `10 * batch / 32` kimg."""
    return 10.0 * batch_size / 32.0


def ema_beta(
    cur_nimg: int | jnp.ndarray,
    *,
    batch_size: int,
    ema_kimg: float | None = None,
    ema_rampup: float | None = 0.05,
) -> jnp.ndarray:
    """Generator EMA decay: `0.5 ** (batch / max(min(ema_kimg * 1000, cur_nimg * rampup), 1e-8))`.

    Args:
      cur_nimg: images seen before this update (int or scalar array).
      batch_size: global batch size.
      ema_kimg: EMA half-life in kimg; None -> `default_ema_kimg(batch_size)`.
      ema_rampup: ramp-up coefficient (0.05); None disables the ramp-up.

    Returns:
      [] float32 in [0, 1): the weight of the old EMA parameters.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if ema_kimg is None:
        ema_kimg = default_ema_kimg(batch_size)
    ema_nimg = jnp.float32(ema_kimg * 1000.0)
    if ema_rampup is not None:
        ema_nimg = jnp.minimum(ema_nimg, jnp.asarray(cur_nimg, jnp.float32) * ema_rampup)
    return jnp.power(jnp.float32(0.5), batch_size / jnp.maximum(ema_nimg, 1e-8))


def lazy_regularisation_adam(
    learning_rate: float, betas: tuple[float, float], interval: int | None
) -> tuple[float, tuple[float, float]]:
    """Adam hyperparameters rescaled for lazy regularisation (StyleGAN2).

    With c = interval / (interval + 1): lr * c and (beta1 ** c, beta2 ** c). E.g. G (interval 4):
    0.0025 -> 0.002, 0.99 -> 0.99 ** 0.8; D (interval 16): 0.0025 * 16/17, 0.99 ** (16/17).
    `interval=None` (no lazy regularisation) returns the inputs unchanged.
    """
    if interval is None:
        return learning_rate, betas
    if interval < 1:
        raise ValueError(f"interval must be >= 1 or None, got {interval}")
    ratio = interval / (interval + 1)
    return learning_rate * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def r1_gamma_heuristic(resolution: int, batch_size: int) -> float:
    """StyleGAN2-ADA's R1 weight rule `0.0002 * res^2 / batch` (0.0256 at 64 px, batch 32)."""
    if resolution <= 0 or batch_size <= 0:
        raise ValueError(
            f"resolution ({resolution}) and batch_size ({batch_size}) must be positive"
        )
    return 0.0002 * resolution**2 / batch_size


__all__ = [
    "COOL_DOWN_PERIOD_KIMG",
    "COS_PERIOD_KIMG",
    "ILS_PRESETS",
    "ILS_WARMUP_KIMG",
    "SIGMA_STRATEGIES",
    "default_ema_kimg",
    "ema_beta",
    "ils_sigma",
    "lazy_regularisation_adam",
    "r1_gamma_heuristic",
]
