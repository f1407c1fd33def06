"""The PerturbGAN layer perturbation: integer shift of the foreground, background contrast jitter.

Follows `LayerTransform` of the official ILSGAN code (pixel blit + colour jitter; the general
affine branch is disabled in every ILSGAN configuration and is not implemented here).

The perturbation vector `eps` is laid out as the reference lays it out:
`[contrast (if bg_contrast > 0), shift_x, shift_y (if xint_max > 0)]`, each entry U[-1, 1].
"""

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from ilsgan_jax.nn.composite import composite


def perturbation_dim(*, xint_max: float, bg_contrast: float) -> int:
    """Number of entries of `eps` per sample: 1 for contrast (if on) + 2 for the shift (if on)."""
    return int(bg_contrast > 0.0) + 2 * int(xint_max > 0.0)


def sample_perturbation(
    key: jax.Array, batch: int, *, xint_max: float, bg_contrast: float
) -> jnp.ndarray:
    """Draws the per-sample perturbation vector, `eps ~ U[-1, 1]`.

    Args:
      key: PRNG key.
      batch: number of samples N.
      xint_max: maximal shift as a fraction of the image width (0 disables the shift).
      bg_contrast: background contrast jitter strength (0 disables the jitter).

    Returns:
      eps: [N, D] float32 in [-1, 1), D = `perturbation_dim(...)` (may be 0).
    """
    dim = perturbation_dim(xint_max=xint_max, bg_contrast=bg_contrast)
    return 2.0 * jax.random.uniform(key, (batch, dim), dtype=jnp.float32) - 1.0


def _check_eps(eps: jnp.ndarray, *, xint_max: float, bg_contrast: float) -> None:
    dim = perturbation_dim(xint_max=xint_max, bg_contrast=bg_contrast)
    if eps.ndim != 2 or eps.shape[1] != dim:
        raise ValueError(
            f"eps must be [N, {dim}] for xint_max={xint_max}, bg_contrast={bg_contrast}; "
            f"got shape {eps.shape}"
        )


def shift_offsets(
    eps: jnp.ndarray, *, xint_max: float, bg_contrast: float, width: int
) -> jnp.ndarray:
    """Integer pixel offsets of the foreground shift, `round(eps * xint_max * W)`.

    Both components are scaled by the image width, as in the reference (`ty` too). Rounding is
    half-to-even, like `torch.round`.

    Args:
      eps: [N, D] float32 in [-1, 1], laid out as `sample_perturbation` returns it.
      xint_max: maximal shift as a fraction of the width (> 0).
      bg_contrast: contrast jitter strength (only decides where the shift entries start).
      width: image width W in pixels.

    Returns:
      [N, 2] int32, columns (tx, ty): tx moves content right, ty moves it down (when positive).
    """
    _check_eps(eps, xint_max=xint_max, bg_contrast=bg_contrast)
    if xint_max <= 0.0:
        raise ValueError(f"shift_offsets needs xint_max > 0, got {xint_max}")
    start = int(bg_contrast > 0.0)
    fraction = eps[:, start : start + 2] * jnp.float32(xint_max)
    return jnp.round(fraction * jnp.float32(width)).astype(jnp.int32)


def _shift_one(image: jnp.ndarray, tx: jnp.ndarray, ty: jnp.ndarray) -> jnp.ndarray:
    """out[y, x] = image[y - ty, x - tx] where that source pixel exists, else 0."""
    height, width = image.shape[:2]
    source_rows = jnp.arange(height) - ty
    source_cols = jnp.arange(width) - tx
    row_valid = (source_rows >= 0) & (source_rows < height)
    col_valid = (source_cols >= 0) & (source_cols < width)
    gathered = image[jnp.clip(source_rows, 0, height - 1)][:, jnp.clip(source_cols, 0, width - 1)]
    valid = row_valid[:, None, None] & col_valid[None, :, None]
    return jnp.where(valid, gathered, jnp.zeros((), image.dtype))


def shift_layers(arrays: Sequence[jnp.ndarray], offsets: jnp.ndarray) -> list[jnp.ndarray]:
    """Shifts every array of each sample by that sample's integer offset, filling with zeros.

    Equivalent to the reference `pixel_blit`: positive `tx` moves content right (along W),
    positive `ty` moves it down (along H); pixels shifted in from outside are 0, so a shifted
    mask is 0 where the foreground no longer covers the image. Vectorised over the batch (a
    gather with a validity mask, no Python loop) and differentiable w.r.t. the arrays.

    Args:
      arrays: sequence of [N, H, W, C_i] arrays (e.g. fg_rgb and mask), same N, H, W.
      offsets: [N, 2] integer (tx, ty) in pixels; any value (|t| >= size gives all zeros).

    Returns:
      list of arrays with the input shapes and dtypes.
    """
    if not arrays:
        raise ValueError("shift_layers needs at least one array")
    leading = arrays[0].shape[:3]
    for index, array in enumerate(arrays):
        if array.ndim != 4 or array.shape[:3] != leading:
            raise ValueError(
                f"arrays[{index}] has shape {array.shape}; every array must be [N, H, W, C] "
                f"with N, H, W = {leading}"
            )
    if offsets.shape != (leading[0], 2):
        raise ValueError(f"offsets must be [{leading[0]}, 2], got shape {offsets.shape}")
    offsets = offsets.astype(jnp.int32)
    shift_batch = jax.vmap(_shift_one)
    return [shift_batch(array, offsets[:, 0], offsets[:, 1]) for array in arrays]


def contrast_jitter(
    images: jnp.ndarray, eps: jnp.ndarray, *, xint_max: float, bg_contrast: float
) -> jnp.ndarray:
    """Per-sample contrast jitter of the background, as the reference `color_jitter`.

    `(x - mean) * (1 + eps_c * bg_contrast) + mean`, then clamped per channel to the
    [min, max] of the input, where mean/min/max are per sample and channel over H, W.

    Args:
      images: [N, H, W, C] float32 (the background layer).
      eps: [N, D] perturbation vector; its entry 0 is the contrast entry when bg_contrast > 0.
      xint_max, bg_contrast: the perturbation settings (identity when bg_contrast <= 0).

    Returns:
      [N, H, W, C] float32.
    """
    _check_eps(eps, xint_max=xint_max, bg_contrast=bg_contrast)
    if bg_contrast <= 0.0:
        return images
    channel_mean = jnp.mean(images, axis=(1, 2), keepdims=True)
    channel_min = jnp.min(images, axis=(1, 2), keepdims=True)
    channel_max = jnp.max(images, axis=(1, 2), keepdims=True)
    factor = (1.0 + eps[:, 0] * jnp.float32(bg_contrast))[:, None, None, None]
    jittered = (images - channel_mean) * factor + channel_mean
    return jnp.minimum(channel_max, jnp.maximum(channel_min, jittered))


def perturb_layers(
    layers: Mapping[str, jnp.ndarray], eps: jnp.ndarray, *, xint_max: float, bg_contrast: float
) -> dict[str, jnp.ndarray]:
    """Applies the layer perturbation and recomposes the image the discriminator sees.

    Args:
      layers: mapping with `fg_rgb` [N, H, W, 3], `mask` [N, H, W, 1] in [0, 1] and
        `bg_rgb` [N, H, W, 3] (other keys are ignored).
      eps: [N, D] float32 in [-1, 1] from `sample_perturbation` with the same settings.
      xint_max: maximal shift as a fraction of the width (0 disables the shift).
      bg_contrast: background contrast jitter strength (0 disables it).

    Returns:
      dict with `fg_rgb` and `mask` shifted together (zero fill), `bg_rgb` contrast-jittered
      (never shifted) and `composite` = `composite(fg_rgb, mask, bg_rgb)` of those.
    """
    for name in ("fg_rgb", "mask", "bg_rgb"):
        if name not in layers:
            raise ValueError(f"layers is missing the entry '{name}'")
    fg_rgb, mask, bg_rgb = layers["fg_rgb"], layers["mask"], layers["bg_rgb"]
    _check_eps(eps, xint_max=xint_max, bg_contrast=bg_contrast)
    if eps.shape[0] != fg_rgb.shape[0]:
        raise ValueError(f"eps has {eps.shape[0]} rows but the layers have {fg_rgb.shape[0]}")
    bg_rgb = contrast_jitter(bg_rgb, eps, xint_max=xint_max, bg_contrast=bg_contrast)
    if xint_max > 0.0:
        offsets = shift_offsets(
            eps, xint_max=xint_max, bg_contrast=bg_contrast, width=fg_rgb.shape[2]
        )
        fg_rgb, mask = shift_layers([fg_rgb, mask], offsets)
    return {
        "fg_rgb": fg_rgb,
        "mask": mask,
        "bg_rgb": bg_rgb,
        "composite": composite(fg_rgb, mask, bg_rgb),
    }
