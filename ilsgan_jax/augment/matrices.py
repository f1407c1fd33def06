"""Per-sample random transform matrices of the ADA pipeline.

Geometric transforms are composed into one inverse homogeneous 2-D matrix per sample,
`g_inv: [N, 3, 3]`, mapping an output pixel to the input pixel it is read from; coordinates are in
pixels with the origin at the image centre (pixel centres at `j - (W - 1) / 2`). Colour transforms
are composed into one homogeneous 3-D matrix per sample, `colour: [N, 4, 4]`, mapping an RGB value
`[r, g, b, 1]` to the output RGB value.

Every transform follows StyleGAN2-ADA's `AugmentPipe`: its parameter is drawn for every sample and
replaced by the identity value unless `uniform < multiplier * p`, so p is a traced scalar and at
p = 0 both matrices are exactly the identity. Random draws come from `jax.random`, so the stream
differs from the PyTorch reference; the distributions are the same.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ilsgan_jax.augment.config import AdaConfig

# The luma axis [1, 1, 1, 0] / sqrt(3) in homogeneous RGB.
LUMA_AXIS = np.array([1.0, 1.0, 1.0, 0.0], dtype=np.float32) / np.sqrt(3.0)


class _Draws:
    """All random numbers of one sampler, drawn in two PRNG calls and handed out column by column.

    Two calls instead of one per transform keep the compiled program small (each threefry call is
    unrolled into the program); the draws are independent U[0, 1) and N(0, 1) values either way.
    """

    _COLUMNS = 16  # More than any sampler uses.

    def __init__(self, key: jax.Array, batch_size: int):
        uniform_key, normal_key = jax.random.split(key)
        self._uniform = jax.random.uniform(uniform_key, (self._COLUMNS, batch_size))
        self._normal = jax.random.normal(normal_key, (self._COLUMNS, batch_size))
        self._next_uniform = 0
        self._next_normal = 0

    def uniform(self) -> jax.Array:
        """[N] float32 in [0, 1)."""
        column = self._uniform[self._next_uniform]
        self._next_uniform += 1
        return column

    def normal(self) -> jax.Array:
        """[N] float32 standard normal."""
        column = self._normal[self._next_normal]
        self._next_normal += 1
        return column


def _stack_rows(rows: list[list]) -> jax.Array:
    """A batch of matrices from rows of scalars and [N] arrays: returns [N, len(rows), len(row)]."""
    elements = jnp.broadcast_arrays(*[jnp.asarray(e, jnp.float32) for row in rows for e in row])
    matrix = jnp.stack(elements, axis=-1)
    return matrix.reshape(matrix.shape[:-1] + (len(rows), len(rows[0])))


def translate2d(tx, ty) -> jax.Array:
    """[N, 3, 3] translation by (tx, ty) pixels; tx, ty: [N] or scalars."""
    return _stack_rows([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def scale2d(sx, sy) -> jax.Array:
    """[N, 3, 3] scaling of x by sx and y by sy; sx, sy: [N] or scalars."""
    return _stack_rows([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def rotate2d_from_cos_sin(cos, sin) -> jax.Array:
    """[N, 3, 3] rotation by the angle with the given cosine and sine ([N] or scalars)."""
    return _stack_rows([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])


def rotate2d(theta) -> jax.Array:
    """[N, 3, 3] rotation by theta radians (counter-clockwise in x-right, y-down pixel axes)."""
    return rotate2d_from_cos_sin(jnp.cos(theta), jnp.sin(theta))


def translate3d(tx, ty, tz) -> jax.Array:
    """[N, 4, 4] homogeneous 3-D translation; tx, ty, tz: [N] or scalars."""
    return _stack_rows([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]])


def scale3d(sx, sy, sz) -> jax.Array:
    """[N, 4, 4] homogeneous 3-D scaling; sx, sy, sz: [N] or scalars."""
    return _stack_rows([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]])


def rotate3d(axis: np.ndarray, theta) -> jax.Array:
    """[N, 4, 4] rotation by theta ([N] radians) around the unit vector `axis` ([3] or [4])."""
    vx, vy, vz = (float(a) for a in axis[:3])
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    one_minus_cos = 1 - cos
    return _stack_rows(
        [
            [vx * vx * one_minus_cos + cos, vx * vy * one_minus_cos - vz * sin,
             vx * vz * one_minus_cos + vy * sin, 0],
            [vy * vx * one_minus_cos + vz * sin, vy * vy * one_minus_cos + cos,
             vy * vz * one_minus_cos - vx * sin, 0],
            [vz * vx * one_minus_cos - vy * sin, vz * vy * one_minus_cos + vx * sin,
             vz * vz * one_minus_cos + cos, 0],
            [0, 0, 0, 1],
        ]
    )  # fmt: skip


def _gate(draws: _Draws, probability) -> jax.Array:
    """Boolean [N]: True with the given probability (traced scalar)."""
    return draws.uniform() < probability


def sample_geometric_matrix(
    key: jax.Array, p, batch_size: int, height: int, width: int, config: AdaConfig
) -> jax.Array:
    """Draws the per-sample inverse geometric transform of the 'bgc' pipeline.

    Args:
      key: PRNG key.
      p: augmentation probability, float scalar in [0, 1] (may be traced).
      batch_size, height, width: static image batch geometry.
      config: which transforms are on and their strengths.

    Returns:
      g_inv: [N, 3, 3] float32, output pixel -> input pixel, centre-origin pixel coordinates.
      The identity for every sample when p == 0.
    """
    p = jnp.asarray(p, jnp.float32)
    draws = _Draws(key, batch_size)
    n = batch_size
    g_inv = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))

    if config.xflip > 0:
        flip = jnp.floor(draws.uniform() * 2)
        flip = jnp.where(_gate(draws, config.xflip * p), flip, 0.0)
        g_inv = g_inv @ scale2d(1 - 2 * flip, 1)  # A flip is its own inverse.

    if config.rotate90 > 0:
        quarter_turns = jnp.floor(draws.uniform() * 4)
        quarter_turns = jnp.where(_gate(draws, config.rotate90 * p), quarter_turns, 0.0)
        # Inverse of a rotation by -pi/2 * k is a rotation by +pi/2 * k. Its cosine and sine are
        # looked up exactly instead of computed (cos(pi/2) is not 0 in float32).
        turns = quarter_turns.astype(jnp.int32)
        cos = jnp.array([1.0, 0.0, -1.0, 0.0])[turns]
        sin = jnp.array([0.0, 1.0, 0.0, -1.0])[turns]
        g_inv = g_inv @ rotate2d_from_cos_sin(cos, sin)

    if config.xint > 0:
        shift = (jnp.stack([draws.uniform(), draws.uniform()], axis=1) * 2 - 1) * config.xint_max
        shift = jnp.where(_gate(draws, config.xint * p)[:, None], shift, 0.0)
        g_inv = g_inv @ translate2d(
            -jnp.round(shift[:, 0] * width), -jnp.round(shift[:, 1] * height)
        )

    if config.scale > 0:
        scale = jnp.exp2(draws.normal() * config.scale_std)
        scale = jnp.where(_gate(draws, config.scale * p), scale, 1.0)
        g_inv = g_inv @ scale2d(1 / scale, 1 / scale)

    # Rotation is split into a pre- and a post-rotation around the anisotropic scaling, each with
    # probability p_rot, so that P(pre or post) = rotate * p.
    p_rot = 1 - jnp.sqrt(jnp.clip(1 - config.rotate * p, 0.0, 1.0))
    if config.rotate > 0:
        theta = (draws.uniform() * 2 - 1) * math.pi * config.rotate_max
        theta = jnp.where(_gate(draws, p_rot), theta, 0.0)
        g_inv = g_inv @ rotate2d(theta)  # Inverse of rotate2d(-theta).

    if config.aniso > 0:
        stretch = jnp.exp2(draws.normal() * config.aniso_std)
        stretch = jnp.where(_gate(draws, config.aniso * p), stretch, 1.0)
        g_inv = g_inv @ scale2d(1 / stretch, stretch)

    if config.rotate > 0:
        theta = (draws.uniform() * 2 - 1) * math.pi * config.rotate_max
        theta = jnp.where(_gate(draws, p_rot), theta, 0.0)
        g_inv = g_inv @ rotate2d(theta)

    if config.xfrac > 0:
        shift = jnp.stack([draws.normal(), draws.normal()], axis=1) * config.xfrac_std
        shift = jnp.where(_gate(draws, config.xfrac * p)[:, None], shift, 0.0)
        g_inv = g_inv @ translate2d(-shift[:, 0] * width, -shift[:, 1] * height)

    return g_inv


def sample_colour_matrix(
    key: jax.Array, p, batch_size: int, num_channels: int, config: AdaConfig
) -> jax.Array:
    """Draws the per-sample colour transform of the 'bgc' pipeline.

    Args:
      key: PRNG key.
      p: augmentation probability, float scalar in [0, 1] (may be traced).
      batch_size: static batch size.
      num_channels: 1 or 3; hue and saturation are skipped for 1 channel (as in the reference).
      config: which transforms are on and their strengths.

    Returns:
      colour: [N, 4, 4] float32, homogeneous RGB in -> RGB out. The identity when p == 0.
    """
    p = jnp.asarray(p, jnp.float32)
    draws = _Draws(key, batch_size)
    n = batch_size
    identity = jnp.eye(4, dtype=jnp.float32)
    luma_outer = jnp.asarray(np.outer(LUMA_AXIS, LUMA_AXIS))
    colour = jnp.broadcast_to(identity, (n, 4, 4))

    if config.brightness > 0:
        offset = draws.normal() * config.brightness_std
        offset = jnp.where(_gate(draws, config.brightness * p), offset, 0.0)
        colour = translate3d(offset, offset, offset) @ colour

    if config.contrast > 0:
        gain = jnp.exp2(draws.normal() * config.contrast_std)
        gain = jnp.where(_gate(draws, config.contrast * p), gain, 1.0)
        colour = scale3d(gain, gain, gain) @ colour

    if config.lumaflip > 0:
        flip = jnp.floor(draws.uniform() * 2)
        flip = jnp.where(_gate(draws, config.lumaflip * p), flip, 0.0)
        householder = identity - 2 * luma_outer * flip[:, None, None]
        colour = householder @ colour

    if config.hue > 0 and num_channels > 1:
        theta = (draws.uniform() * 2 - 1) * math.pi * config.hue_max
        theta = jnp.where(_gate(draws, config.hue * p), theta, 0.0)
        colour = rotate3d(LUMA_AXIS, theta) @ colour

    if config.saturation > 0 and num_channels > 1:
        saturation = jnp.exp2(draws.normal() * config.saturation_std)
        saturation = jnp.where(_gate(draws, config.saturation * p), saturation, 1.0)
        saturate = luma_outer + (identity - luma_outer) * saturation[:, None, None]
        colour = saturate @ colour

    return colour
