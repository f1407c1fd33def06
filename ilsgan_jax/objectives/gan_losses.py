"""Adversarial losses and their discriminator regularisers, per sample.

Two choices, selected by a string:
  'ns_r1'   StyleGAN2 non-saturating logistic loss; R1 on reals (lazy, see `lazy_r1_loss`).
  'wgan_gp' WGAN-GP as in PerturbGAN (adambielski/perturbed-seg `train.py`):
            D: D(fake) - D(real) + drift * D(real)^2 + lambda * (||grad D(x_hat)||_2 - 1)^2,
            G: -D(fake); lambda = 10, drift = 0.001, x_hat = a * real + (1 - a) * fake,
            a ~ U[0, 1] per sample.

All losses are returned per sample ([N]); the caller takes the batch mean.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSS_TYPES = ("ns_r1", "wgan_gp")
WGAN_GP_WEIGHT = 10.0  # lambda of the gradient penalty (PerturbGAN / Gulrajani et al.)
WGAN_DRIFT_WEIGHT = 0.001  # weight of E[D(real)^2] (PerturbGAN --real_penalty)

ImageCritic = Callable[[jnp.ndarray], jnp.ndarray]


def _check_loss_type(loss_type: str) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got '{loss_type}'")


def _per_sample(logits: jnp.ndarray, name: str) -> jnp.ndarray:
    if logits.ndim == 1:
        return logits
    if logits.ndim == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    raise ValueError(f"{name} must be [N] or [N, 1], got shape {logits.shape}")


def generator_adversarial_loss(
    fake_logits: jnp.ndarray, *, loss_type: str = "ns_r1"
) -> jnp.ndarray:
    """Generator loss per sample.

    Args:
      fake_logits: [N] or [N, 1] float32, D's output on (augmented, perturbed) fakes.
      loss_type: 'ns_r1' -> softplus(-D(fake)); 'wgan_gp' -> -D(fake).

    Returns:
      [N] float32.
    """
    _check_loss_type(loss_type)
    fake_logits = _per_sample(fake_logits, "fake_logits")
    if loss_type == "ns_r1":
        return jax.nn.softplus(-fake_logits)
    return -fake_logits


def discriminator_adversarial_loss(
    real_logits: jnp.ndarray,
    fake_logits: jnp.ndarray,
    *,
    loss_type: str = "ns_r1",
    wgan_drift: float = WGAN_DRIFT_WEIGHT,
) -> jnp.ndarray:
    """Discriminator loss per sample (without R1 / gradient penalty).

    Args:
      real_logits: [N] or [N, 1] float32, D on reals.
      fake_logits: [N] or [N, 1] float32, D on fakes (same N).
      loss_type: 'ns_r1' -> softplus(D(fake)) + softplus(-D(real));
        'wgan_gp' -> D(fake) - D(real) + wgan_drift * D(real)^2.
      wgan_drift: drift weight for 'wgan_gp' (0.001).

    Returns:
      [N] float32.
    """
    _check_loss_type(loss_type)
    real_logits = _per_sample(real_logits, "real_logits")
    fake_logits = _per_sample(fake_logits, "fake_logits")
    if real_logits.shape != fake_logits.shape:
        raise ValueError(
            f"real_logits {real_logits.shape} and fake_logits {fake_logits.shape} differ"
        )
    if loss_type == "ns_r1":
        return jax.nn.softplus(fake_logits) + jax.nn.softplus(-real_logits)
    return fake_logits - real_logits + wgan_drift * jnp.square(real_logits)


def _input_gradients(d_fn: ImageCritic, images: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(gradient of sum_i D(images)_i w.r.t. images, logits) with one forward pass."""
    logits, pullback = jax.vjp(d_fn, images)
    (gradients,) = pullback(jnp.ones_like(logits))
    return gradients, logits


def r1_penalty_and_logits(
    d_fn: ImageCritic, real_images: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """R1 penalty `||d sum(D(x)) / dx_i||^2` per sample, and D's logits on the same pass.

    Differentiable w.r.t. whatever `d_fn` closes over (e.g. D's parameters), so the train step can
    take `jax.grad` of a loss built from it.

    Args:
      d_fn: maps [N, H, W, C] images to [N] or [N, 1] logits (augmentation included if any).
      real_images: [N, H, W, C] float32 in [-1, 1].

    Returns:
      (penalty [N] float32 >= 0, summed over H, W, C; logits as `d_fn` returns them).
    """
    if real_images.ndim != 4:
        raise ValueError(f"real_images must be [N, H, W, C], got shape {real_images.shape}")
    gradients, logits = _input_gradients(d_fn, real_images)
    return jnp.sum(jnp.square(gradients), axis=(1, 2, 3)), logits


def r1_penalty(d_fn: ImageCritic, real_images: jnp.ndarray) -> jnp.ndarray:
    """R1 penalty per sample, [N]; see `r1_penalty_and_logits`."""
    return r1_penalty_and_logits(d_fn, real_images)[0]


def lazy_r1_loss(penalty: jnp.ndarray, *, gamma: float, interval: int) -> jnp.ndarray:
    """Lazy R1 loss per sample: `penalty * gamma / 2 * interval`.

    The reference multiplies the R1 loss by the phase interval (its `gain`) because the term is
    only evaluated every `interval` D steps (16).

    Args:
      penalty: [N] from `r1_penalty`.
      gamma: R1 weight (`r1_gamma_heuristic` gives 0.0002 * res^2 / batch).
      interval: lazy regularisation interval (16; 1 when not lazy).
    """
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    return penalty * (gamma / 2.0) * interval


def _safe_norm(squared: jnp.ndarray) -> jnp.ndarray:
    """sqrt with a zero (not NaN) gradient at 0."""
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def wgan_gradient_penalty(
    key: jax.Array, d_fn: ImageCritic, real_images: jnp.ndarray, fake_images: jnp.ndarray
) -> jnp.ndarray:
    """WGAN-GP penalty `(||grad D(x_hat)||_2 - 1)^2` per sample (unweighted; multiply by 10).

    `x_hat = a * real + (1 - a) * fake`, `a ~ U[0, 1]` per sample; both inputs are treated as
    constants (no gradient flows to the generator), as in the reference.

    Args:
      key: PRNG key for the interpolation weights.
      d_fn: maps [N, H, W, C] images to [N] or [N, 1] logits.
      real_images: [N, H, W, C] float32 in [-1, 1].
      fake_images: [N, H, W, C] float32, same shape.

    Returns:
      [N] float32 >= 0.
    """
    if real_images.shape != fake_images.shape or real_images.ndim != 4:
        raise ValueError(
            f"real_images {real_images.shape} and fake_images {fake_images.shape} must be the "
            "same [N, H, W, C] shape"
        )
    alpha = jax.random.uniform(key, (real_images.shape[0], 1, 1, 1), dtype=real_images.dtype)
    interpolates = alpha * jax.lax.stop_gradient(real_images) + (1.0 - alpha) * (
        jax.lax.stop_gradient(fake_images)
    )
    gradients, _ = _input_gradients(d_fn, interpolates)
    norms = _safe_norm(jnp.sum(jnp.square(gradients), axis=(1, 2, 3)))
    return jnp.square(norms - 1.0)
