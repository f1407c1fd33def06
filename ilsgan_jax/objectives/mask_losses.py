"""Mask regularisers of the layered generator, per sample (applied to the perturbed mask)."""

import jax
import jax.numpy as jnp


def _check_mask(mask: jnp.ndarray) -> None:
    if mask.ndim != 4 or mask.shape[-1] != 1:
        raise ValueError(f"mask must be [N, H, W, 1], got shape {mask.shape}")


def binarisation_loss(mask: jnp.ndarray) -> jnp.ndarray:
    """`mean_{HW} min(m, 1 - m)`: pushes every mask pixel towards 0 or 1.

    Args:
      mask: [N, H, W, 1] float32 in [0, 1].

    Returns:
      [N] float32 in [0, 0.5].
    """
    _check_mask(mask)
    return jnp.mean(jnp.minimum(mask, 1.0 - mask), axis=(1, 2, 3))


def min_size_loss(
    mask: jnp.ndarray, *, min_size: float = 0.25, symmetric: bool = False
) -> jnp.ndarray:
    """`relu(min_size - mean_{HW} m)`, the minimum mask coverage.

    With `symmetric=True` (the reference does this when the perturbation is off) the term
    `relu(min_size - (1 - mean_{HW} m))` is added, so the background also keeps a minimum size.

    Args:
      mask: [N, H, W, 1] float32 in [0, 1].
      min_size: minimum mean coverage (0.25).
      symmetric: add the background term.

    Returns:
      [N] float32 >= 0.
    """
    _check_mask(mask)
    coverage = jnp.mean(mask, axis=(1, 2, 3))
    loss = jax.nn.relu(min_size - coverage)
    if symmetric:
        loss = loss + jax.nn.relu(min_size - (1.0 - coverage))
    return loss
