"""The layout module of the independence-prior GAN: a spatial transformer for each instance.

Coordinates (the convention of `torch.nn.functional.affine_grid(..., align_corners=False)`):
normalised coordinates put the image's outer pixel edges at -1 and +1, so the centre of pixel
column `j` of a `W`-wide image is at `x = (2j + 1) / W - 1` (rows likewise with `H`; +x right,
+y down). A 2x3 matrix `theta` maps every OUTPUT position `(x, y, 1)` to the SOURCE position it
samples: `(x_s, y_s) = theta @ (x, y, 1)`; positions outside the source read zeros. So `theta`
is the inverse of the motion applied to the content: `theta = [[1, 0, 2s/W], [0, 1, 0]]` moves the
content LEFT by `s` pixels.

Layout parameters (unconstrained, per instance, last axis): rotation, log-scale, tx, ty, mapped
through tanh to bounded values:
  angle  = max_rotation * tanh(p0)                 radians; positive turns the content clockwise
                                                   on screen (the y axis points down)
  scale  = exp(a + b * tanh(p1 + c))               in (scale_range[0], scale_range[1]), with a,
                                                   b the centre and half-width of the log range and
                                                   c = atanh(-a / b) so that p1 = 0 gives scale 1
  tx, ty = max_translation * tanh(p2), * tanh(p3)  content displacement as a fraction of the
                                                   image width / height (+ = right / down)
The content moves by `M(u) = frame_scale * scale * R(angle) u + 2 (tx, ty)` in normalised
coordinates, so `theta = M^-1 = [R(-angle) / s, -R(-angle) 2 (tx, ty) / s]` with
`s = frame_scale * scale`. `frame_scale` (fixed, in (0, 1], default 1) shrinks a provider's whole
frame to that fraction of the image's side before the learned scale: a frame smaller than the
image cannot hold a picture of the whole crop. Zero parameters with frame_scale 1 give the
identity exactly. Rotation in normalised coordinates is a true rotation for square images (all
images in this project); for non-square images it is a rotation of the stretched square.
"""

import math

import flax.linen as nn
import jax.numpy as jnp

NUM_LAYOUT_PARAMS = 4  # rotation, log-scale, tx, ty


def _check_bounds(
    max_rotation: float, scale_range, max_translation: float, frame_scale: float = 1.0
) -> tuple[float, float]:
    if not 0.0 < frame_scale <= 1.0:
        raise ValueError(f"model.layout.frame_scale must be in (0, 1], got {frame_scale}")
    if max_rotation < 0:
        raise ValueError(f"max_rotation must be >= 0 radians, got {max_rotation}")
    if max_translation < 0:
        raise ValueError(f"max_translation must be >= 0, got {max_translation}")
    low, high = (float(value) for value in scale_range)
    if not 0.0 < low <= 1.0 <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= 1 <= high, got {tuple(scale_range)}")
    if (low == 1.0) != (high == 1.0):
        raise ValueError(
            f"scale_range {tuple(scale_range)} must be (1, 1) (scale fixed) or contain 1 strictly "
            "inside, so that zero parameters map to scale 1 with a smooth bound"
        )
    return low, high


def bounded_scale(log_scale_param: jnp.ndarray, scale_range) -> jnp.ndarray:
    """`exp(a + b * tanh(p + c))` in (low, high), equal to 1 at p = 0 (see the module docstring).

    Args:
      log_scale_param: [...] float32, unconstrained.
      scale_range: (low, high) with low < 1 < high, or (1, 1) for a fixed scale.

    Returns:
      [...] float32 scales.
    """
    low, high = _check_bounds(0.0, scale_range, 0.0)
    if low == high:
        return jnp.ones_like(log_scale_param)
    centre = 0.5 * (math.log(high) + math.log(low))
    half_width = 0.5 * (math.log(high) - math.log(low))
    offset = math.atanh(-centre / half_width)
    return jnp.exp(centre + half_width * jnp.tanh(log_scale_param + offset))


def affine_matrices(
    params: jnp.ndarray,
    *,
    max_rotation: float,
    scale_range: tuple[float, float],
    max_translation: float,
    frame_scale: float = 1.0,
) -> jnp.ndarray:
    """Bounded layout parameters -> sampling matrices `theta` (output -> source).

    Args:
      params: [..., 4] float32 unconstrained (rotation, log-scale, tx, ty), e.g. [N, K, 4].
      max_rotation: bound of the rotation angle, radians.
      scale_range: (low, high) bounds of the content scale, low <= 1 <= high.
      max_translation: bound of |tx|, |ty|, fraction of the image width / height.
      frame_scale: fixed factor in (0, 1] on the content scale: the frame's side as a fraction
        of the image's at learned scale 1.

    Returns:
      [..., 2, 3] float32 matrices in normalised coordinates (module docstring); zero params
      with frame_scale 1 give exactly [[1, 0, 0], [0, 1, 0]].
    """
    _check_bounds(max_rotation, scale_range, max_translation, frame_scale)
    if params.shape[-1] != NUM_LAYOUT_PARAMS:
        raise ValueError(f"params must be [..., {NUM_LAYOUT_PARAMS}], got shape {params.shape}")
    angle = max_rotation * jnp.tanh(params[..., 0])
    scale = frame_scale * bounded_scale(params[..., 1], scale_range)
    shift_x = 2.0 * max_translation * jnp.tanh(params[..., 2])  # normalised units
    shift_y = 2.0 * max_translation * jnp.tanh(params[..., 3])
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    # Inverse rotation R(-angle) / scale = [[cos, sin], [-sin, cos]] / scale.
    row_x = jnp.stack([cos, sin, -(cos * shift_x + sin * shift_y)], axis=-1)
    row_y = jnp.stack([-sin, cos, -(-sin * shift_x + cos * shift_y)], axis=-1)
    return jnp.stack([row_x, row_y], axis=-2)


def translation_matrix(shift_x: jnp.ndarray, shift_y: jnp.ndarray, height: int, width: int):
    """theta that moves content by (shift_x, shift_y) pixels (right, down): [..., 2, 3]."""
    shift_x, shift_y = jnp.broadcast_arrays(jnp.asarray(shift_x, jnp.float32), shift_y)
    ones, zeros = jnp.ones_like(shift_x), jnp.zeros_like(shift_x)
    return jnp.stack(
        [
            jnp.stack([ones, zeros, -2.0 * shift_x / width], axis=-1),
            jnp.stack([zeros, ones, -2.0 * shift_y / height], axis=-1),
        ],
        axis=-2,
    )


def sample_positions(
    theta: jnp.ndarray, height: int, width: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Source pixel positions of every output pixel.

    Computed around the pixel grid's centre in pixel units,
    `x_pix = theta00 u + theta01 (W / H) v + theta02 W / 2 + (W - 1) / 2` with
    `u = j - (W - 1) / 2`, `v = i - (H - 1) / 2` (algebraically the normalised-coordinate map of
    the module docstring), so the identity matrix gives exactly the integer grid and a translation
    by `2s / W` (s integer, W a power of two) an exact integer shift.

    Args:
      theta: [N, 2, 3] float32.
      height, width: output (= source) size.

    Returns:
      (x, y): each [N, H, W] float32, positions in pixel indices (pixel (0, 0) at 0.0).
    """
    u = jnp.arange(width, dtype=jnp.float32) - 0.5 * (width - 1)
    v = jnp.arange(height, dtype=jnp.float32) - 0.5 * (height - 1)
    u, v = u[None, None, :], v[None, :, None]
    t = theta[:, :, :, None, None]
    x = t[:, 0, 0] * u + t[:, 0, 1] * (width / height) * v + t[:, 0, 2] * (0.5 * width)
    y = t[:, 1, 0] * (height / width) * u + t[:, 1, 1] * v + t[:, 1, 2] * (0.5 * height)
    return x + 0.5 * (width - 1), y + 0.5 * (height - 1)


def bilinear_sample(images: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Bilinear interpolation with zeros outside the image, one gather over the flat batch.

    Args:
      images: [N, H, W, C] float32.
      x, y: [N, Ho, Wo] float32 positions in pixel indices.

    Returns:
      [N, Ho, Wo, C] float32, differentiable w.r.t. `images` and the positions.
    """
    n, height, width, channels = images.shape
    x_floor, y_floor = jnp.floor(x), jnp.floor(y)
    frac_x, frac_y = x - x_floor, y - y_floor
    col0, row0 = x_floor.astype(jnp.int32), y_floor.astype(jnp.int32)
    cols = jnp.stack([col0, col0 + 1, col0, col0 + 1], axis=-1)  # [N, Ho, Wo, 4]
    rows = jnp.stack([row0, row0, row0 + 1, row0 + 1], axis=-1)
    weights = jnp.stack(
        [
            (1.0 - frac_x) * (1.0 - frac_y),
            frac_x * (1.0 - frac_y),
            (1.0 - frac_x) * frac_y,
            frac_x * frac_y,
        ],
        axis=-1,
    )
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    weights = jnp.where(inside, weights, 0.0)
    batch_offset = (jnp.arange(n, dtype=jnp.int32) * (height * width))[:, None, None, None]
    flat_index = batch_offset + jnp.clip(rows, 0, height - 1) * width + jnp.clip(cols, 0, width - 1)
    corners = images.reshape(n * height * width, channels)[flat_index]  # [N, Ho, Wo, 4, C]
    return jnp.einsum("nhwk,nhwkc->nhwc", weights, corners)


def warp(images: jnp.ndarray, theta: jnp.ndarray) -> jnp.ndarray:
    """Spatial transformer: `out[p] = bilinear(images, theta @ p)`, zeros outside.

    Args:
      images: [N, H, W, C] float32 (any range; e.g. RGB in [-1, 1] and a mask in [0, 1]).
      theta: [N, 2, 3] float32 sampling matrices (module docstring convention).

    Returns:
      [N, H, W, C] float32; differentiable w.r.t. `images` and `theta`.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    if theta.shape != (images.shape[0], 2, 3):
        raise ValueError(f"theta must be [{images.shape[0]}, 2, 3], got shape {theta.shape}")
    x, y = sample_positions(theta.astype(jnp.float32), images.shape[1], images.shape[2])
    return bilinear_sample(images, x, y)


def frame_window(size: int, taper: float) -> jnp.ndarray:
    """A mask window that falls linearly to zero at the frame's border: `[size, size, 1]`,
    `w(row) * w(column)` with `w(u) = clip(min(u, 1 - u) / taper, 0, 1)` at pixel centres
    `u = (j + 0.5) / size`; all ones for `taper = 0`.

    A provider's mask multiplied by it is zero along the frame, so the frame's edge never shows
    as a line in the composite, whatever the layout does with the frame.
    """
    if not 0.0 <= taper <= 0.5:
        raise ValueError(f"model.layout.mask_border_taper must be in [0, 0.5], got {taper}")
    if taper == 0.0:
        return jnp.ones((size, size, 1), jnp.float32)
    centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    profile = jnp.clip(jnp.minimum(centres, 1.0 - centres) / taper, 0.0, 1.0)
    return (profile[:, None] * profile[None, :])[..., None]


class LayoutNetwork(nn.Module):
    """Predicts each instance's unconstrained layout parameters from its latent.

    `latents: [N, K, D] -> params: [N, K, 4 + extra_outputs]` (rotation, log-scale, tx, ty; see
    `affine_matrices`; then any extra per-instance outputs, e.g. a presence logit). An MLP of
    `num_hidden_layers` lrelu layers; the output layer starts at zero, so a fresh network
    predicts the identity layout for every instance.
    """

    hidden_features: int = 64  # width of the hidden layers
    num_hidden_layers: int = 2  # number of hidden layers (0 = a linear map)
    extra_outputs: int = 0  # outputs after the 4 layout parameters

    @nn.compact
    def __call__(self, latents: jnp.ndarray) -> jnp.ndarray:
        if latents.ndim != 3:
            raise ValueError(f"latents must be [N, K, D], got shape {latents.shape}")
        hidden = latents.astype(jnp.float32)
        for index in range(self.num_hidden_layers):
            hidden = nn.leaky_relu(
                nn.Dense(self.hidden_features, name=f"hidden{index}")(hidden), negative_slope=0.2
            )
        return nn.Dense(
            NUM_LAYOUT_PARAMS + self.extra_outputs,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            name="output",
        )(hidden)
