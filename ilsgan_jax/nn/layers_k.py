"""Composition of K instance layers over a background (the independence-prior GAN).

Back to front, instance 1 first and instance K on top:

    x = m_K f_K + (1 - m_K) (... (m_2 f_2 + (1 - m_2) (m_1 f_1 + (1 - m_1) b)))

Each step is the two-layer `composite` of ILSGAN, so K = 1 is exactly `composite(f, m, b)`.
"""

import jax.numpy as jnp

from ilsgan_jax.nn.composite import composite


def _check_instances(bg_rgb: jnp.ndarray, fg_rgbs: jnp.ndarray, masks: jnp.ndarray) -> None:
    if bg_rgb.ndim != 4:
        raise ValueError(f"bg_rgb must be [N, H, W, C], got shape {bg_rgb.shape}")
    n, height, width, channels = bg_rgb.shape
    if fg_rgbs.ndim != 5 or fg_rgbs.shape[:1] + fg_rgbs.shape[2:] != (n, height, width, channels):
        raise ValueError(
            f"fg_rgbs must be [{n}, K, {height}, {width}, {channels}], got {fg_rgbs.shape}"
        )
    if masks.shape != fg_rgbs.shape[:4] + (1,):
        raise ValueError(f"masks must be {fg_rgbs.shape[:4] + (1,)}, got shape {masks.shape}")


def composite_back_to_front(
    bg_rgb: jnp.ndarray, fg_rgbs: jnp.ndarray, masks: jnp.ndarray
) -> jnp.ndarray:
    """Alpha-composites the instances over the background, instance 0 first, K - 1 on top.

    Args:
      bg_rgb: [N, H, W, C] float32, roughly in [-1, 1].
      fg_rgbs: [N, K, H, W, C] float32, roughly in [-1, 1].
      masks: [N, K, H, W, 1] float32 in [0, 1].

    Returns:
      [N, H, W, C] float32.
    """
    _check_instances(bg_rgb, fg_rgbs, masks)
    canvas = bg_rgb
    for index in range(fg_rgbs.shape[1]):
        canvas = composite(fg_rgbs[:, index], masks[:, index], canvas)
    return canvas


def union_mask(masks: jnp.ndarray) -> jnp.ndarray:
    """Coverage of all instances together, `1 - prod_k (1 - m_k)`: the total weight the
    composite gives to instance pixels (K = 1: the mask itself, returned as is so that it equals
    ILSGAN's mask bit for bit; `1 - (1 - m)` would round).

    Args:
      masks: [N, K, H, W, 1] float32 in [0, 1].

    Returns:
      [N, H, W, 1] float32 in [0, 1].
    """
    if masks.ndim != 5 or masks.shape[-1] != 1:
        raise ValueError(f"masks must be [N, K, H, W, 1], got shape {masks.shape}")
    if masks.shape[1] == 1:
        return masks[:, 0]
    return 1.0 - jnp.prod(1.0 - masks, axis=1)


def composite_without(
    bg_rgb: jnp.ndarray, fg_rgbs: jnp.ndarray, masks: jnp.ndarray, instance: int
) -> jnp.ndarray:
    """The composite of the background and every instance except `instance` (kept order).

    Args:
      bg_rgb: [N, H, W, C]; fg_rgbs: [N, K, H, W, C]; masks: [N, K, H, W, 1] in [0, 1].
      instance: index in [0, K).

    Returns:
      [N, H, W, C] float32 (the background itself when K = 1).
    """
    _check_instances(bg_rgb, fg_rgbs, masks)
    num_instances = fg_rgbs.shape[1]
    if not 0 <= instance < num_instances:
        raise ValueError(f"instance must be in [0, {num_instances}), got {instance}")
    others = [index for index in range(num_instances) if index != instance]
    if not others:
        return bg_rgb
    return composite_back_to_front(bg_rgb, fg_rgbs[:, others], masks[:, others])
