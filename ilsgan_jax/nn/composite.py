"""Alpha compositing of a foreground layer over a background layer."""

import jax.numpy as jnp


def composite(fg_rgb: jnp.ndarray, mask: jnp.ndarray, bg_rgb: jnp.ndarray) -> jnp.ndarray:
    """Blends the foreground over the background: `mask * fg_rgb + (1 - mask) * bg_rgb`.

    Args:
      fg_rgb: [N, H, W, C] float32, roughly in [-1, 1] (unbounded generator output).
      mask: [N, H, W, 1] float32 in [0, 1] (broadcast over channels).
      bg_rgb: [N, H, W, C] float32, roughly in [-1, 1].

    Returns:
      [N, H, W, C] float32, the composite image.
    """
    if fg_rgb.shape != bg_rgb.shape:
        raise ValueError(
            f"fg_rgb {fg_rgb.shape} and bg_rgb {bg_rgb.shape} must have the same shape"
        )
    if mask.shape[:-1] != fg_rgb.shape[:-1] or mask.shape[-1] not in (1, fg_rgb.shape[-1]):
        raise ValueError(f"mask {mask.shape} does not broadcast against fg_rgb {fg_rgb.shape}")
    return mask * fg_rgb + (1.0 - mask) * bg_rgb
