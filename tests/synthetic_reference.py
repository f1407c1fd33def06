"""The synthetic renderer before its long functions were split (a frozen copy, test-only).

`render_synthetic_objects` here is the module's render path as it was; the refactored renderer
must reproduce its default output bit for bit (tests/test_data_synthetic.py). Do not edit: it is
the reference, not library code.
"""

from collections.abc import Callable

import numpy as np
import scipy.fft

SHAPE_TYPES = ("ellipse", "superellipse", "polygon", "blob")
MIN_AREA_FRACTION = 0.10
MAX_AREA_FRACTION = 0.40
_NUM_BOUNDARY_ANGLES = 256
_MAX_POLYGON_SIDES = 8


def _uniform(rng: np.random.Generator, low: float, high: float, size) -> np.ndarray:
    """Uniform draws as float32 (keeps the per-pixel arithmetic in single precision)."""
    return rng.uniform(low, high, size).astype(np.float32)


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """hue, saturation, value: [...] in [0, 1] -> rgb [..., 3] in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0], np.float32) + 6.0 * hue[..., None]) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return value[..., None] * (1.0 - saturation[..., None] * ramp)


def band_limited_noise(
    rng: np.random.Generator,
    num_images: int,
    resolution: int,
    cycles: np.ndarray,
    bandwidth: float = 0.5,
) -> np.ndarray:
    """White noise filtered to a log-Gaussian band around `cycles` cycles per image.

    cycles: [N] centre frequency in cycles per image side (resolution independent).
    Returns [N, R, R] float32 with zero mean and unit standard deviation per image.
    """
    white = rng.standard_normal((num_images, resolution, resolution), dtype=np.float32)
    spectrum = scipy.fft.rfft2(white)
    freq_y = np.fft.fftfreq(resolution)[:, None] * resolution
    freq_x = np.fft.rfftfreq(resolution)[None, :] * resolution
    radius = np.sqrt(freq_y**2 + freq_x**2).astype(np.float32)
    log_ratio = np.log(np.maximum(radius, 1e-3)[None] / cycles[:, None, None].astype(np.float32))
    gain = np.exp(-0.5 * (log_ratio / bandwidth) ** 2)
    gain[:, 0, 0] = 0.0
    noise = scipy.fft.irfft2(spectrum * gain.astype(np.float32), s=(resolution, resolution))
    noise -= noise.mean(axis=(1, 2), keepdims=True)
    noise /= noise.std(axis=(1, 2), keepdims=True) + 1e-6
    return noise


def _pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1]: (y [R, 1], x [1, R])."""
    centres = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    return centres[:, None], centres[None, :]


def _render_backgrounds(
    rng: np.random.Generator, num_images: int, resolution: int, noise_scale: float = 1.0
) -> np.ndarray:
    """Returns [N, R, R, 3] float32 in [0, 1]; `noise_scale` multiplies both noise amplitudes
    (the random draws do not depend on it, so x0 gives the same gradients without noise)."""
    y, x = _pixel_grid(resolution)
    angle = _uniform(rng, 0.0, 2.0 * np.pi, num_images)
    projection = np.cos(angle)[:, None, None] * (x - 0.5) + np.sin(angle)[:, None, None] * (y - 0.5)
    ramp = np.clip(projection / np.sqrt(0.5) + 0.5, 0.0, 1.0)[..., None]
    colours = _hsv_to_rgb(
        _uniform(rng, 0.0, 1.0, (2, num_images)),
        _uniform(rng, 0.05, 0.45, (2, num_images)),
        _uniform(rng, 0.25, 0.9, (2, num_images)),
    )
    coarse = band_limited_noise(rng, num_images, resolution, _uniform(rng, 1.5, 4.0, num_images))
    fine = band_limited_noise(rng, num_images, resolution, _uniform(rng, 4.0, 12.0, num_images))
    coarse_colour = _uniform(rng, -1.0, 1.0, (num_images, 3)) * _uniform(
        rng, 0.04, 0.12, (num_images, 1)
    )
    fine_amplitude = _uniform(rng, 0.02, 0.08, num_images) * np.float32(noise_scale)
    coarse_colour *= np.float32(noise_scale)
    # background = c0 + ramp * (c1 - c0) + coarse * coarse_colour + fine * fine_amplitude, as one
    # batched [R*R, 3] x [3, 3] product per image.
    fields = np.stack([ramp[..., 0], coarse, fine], axis=-1).reshape(num_images, -1, 3)
    mixing = np.stack(
        [colours[1] - colours[0], coarse_colour, np.repeat(fine_amplitude[:, None], 3, axis=1)],
        axis=1,
    )
    background = np.matmul(fields, mixing.astype(np.float32)) + colours[0][:, None, :]
    background = background.reshape(num_images, resolution, resolution, 3)
    return np.clip(background, 0.0, 1.0, out=background).astype(np.float32, copy=False)


def _radial_functions(
    rng: np.random.Generator, shape_ids: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Draws one star-shaped shape per image (unit scale).

    Returns radius_fn, where radius_fn(theta [N, ...], index [N]) -> R(theta) [N, ...]
    evaluates the radial function of the shapes selected by `index` (an index array into the
    batch) at angles theta in the shape's own frame.
    """
    count = shape_ids.shape[0]
    aspect = np.exp(_uniform(rng, -0.45, 0.45, count))
    exponent = np.exp(_uniform(rng, np.log(0.8), np.log(4.0), count))
    sides = rng.integers(3, _MAX_POLYGON_SIDES + 1, count)
    # Polygon: K vertices at jittered, increasing angles and radii 0.8..1.2 (star-shaped about
    # the centre, every sector < pi wide, so bounded); slots k >= K are unused.
    spacing = 2.0 * np.pi / sides[:, None]
    vertex_angles = (
        np.arange(_MAX_POLYGON_SIDES)[None, :]
        + _uniform(rng, -0.2, 0.2, (count, _MAX_POLYGON_SIDES))
    ) * spacing
    vertex_radii = _uniform(rng, 0.8, 1.2, (count, _MAX_POLYGON_SIDES))
    slot = np.arange(_MAX_POLYGON_SIDES)[None, :]
    next_slot = np.where(slot + 1 < sides[:, None], slot + 1, 0)
    next_angles = np.take_along_axis(vertex_angles, next_slot, axis=1)
    next_angles = np.where(slot + 1 < sides[:, None], next_angles, next_angles + 2.0 * np.pi)
    sector_widths = np.where(slot < sides[:, None], next_angles - vertex_angles, 0.0)
    vertices = vertex_radii[..., None] * np.stack(
        [np.cos(vertex_angles), np.sin(vertex_angles)], axis=-1
    )
    edges = np.take_along_axis(vertices, next_slot[..., None], axis=1) - vertices
    # Distance along the ray at angle t to edge k: cross(P_k, D_k) / cross(u(t), D_k).
    edge_moments = vertices[..., 0] * edges[..., 1] - vertices[..., 1] * edges[..., 0]
    # Fourier blob: harmonics 2..4 with small amplitudes keep R(theta) positive.
    harmonics = np.arange(2, 5)
    amplitudes = _uniform(rng, 0.0, 0.18, (count, 3))
    phases = _uniform(rng, 0.0, 2.0 * np.pi, (count, 3))

    def radius_fn(theta: np.ndarray, index: np.ndarray) -> np.ndarray:
        radius = np.empty(theta.shape, dtype=np.float32)
        kinds = shape_ids[index]
        for kind in range(len(SHAPE_TYPES)):
            rows = np.nonzero(kinds == kind)[0]
            if rows.size == 0:
                continue
            which = index[rows]
            angle = theta[rows].astype(np.float32)
            expand = (slice(None),) + (None,) * (angle.ndim - 1)
            if kind in (0, 1):  # ellipse, superellipse with semi-axes a, 1/a
                a = np.sqrt(aspect[which]).astype(np.float32)[expand]
                cos_t, sin_t = np.abs(np.cos(angle)) / a, np.abs(np.sin(angle)) * a
                if kind == 0:
                    radius[rows] = 1.0 / np.sqrt(cos_t**2 + sin_t**2)
                else:
                    p = exponent[which].astype(np.float32)[expand]
                    radius[rows] = (cos_t**p + sin_t**p + 1e-12) ** (-1.0 / p)
            elif kind == 2:  # polygon: the edge whose angular sector holds the ray
                polygon_radius = np.zeros(angle.shape, dtype=np.float32)
                cos_a, sin_a = np.cos(angle), np.sin(angle)
                for side in range(_MAX_POLYGON_SIDES):
                    start = vertex_angles[which, side].astype(np.float32)[expand]
                    width = sector_widths[which, side].astype(np.float32)[expand]
                    in_sector = np.mod(angle - start, 2.0 * np.pi) < width + 1e-5
                    edge_x = edges[which, side, 0].astype(np.float32)[expand]
                    edge_y = edges[which, side, 1].astype(np.float32)[expand]
                    denominator = cos_a * edge_y - sin_a * edge_x
                    moment = edge_moments[which, side].astype(np.float32)[expand]
                    distance = moment / np.where(np.abs(denominator) > 1e-9, denominator, 1e-9)
                    polygon_radius = np.where(in_sector, distance, polygon_radius)
                radius[rows] = polygon_radius
            else:  # Fourier blob
                wobble = np.zeros(angle.shape, dtype=np.float32)
                for h, harmonic in enumerate(harmonics):
                    wobble += amplitudes[which, h].astype(np.float32)[expand] * np.cos(
                        harmonic * angle + phases[which, h].astype(np.float32)[expand]
                    )
                radius[rows] = 1.0 + wobble
        return radius

    return radius_fn


def _object_textures(
    rng: np.random.Generator,
    num_images: int,
    resolution: int,
    local_u: np.ndarray,
    local_v: np.ndarray,
) -> np.ndarray:
    """Saturated base colour + shading ramp + stripes or noise, in the object's frame.

    local_u, local_v: [N, R, R] object-frame coordinates (object scale ~ 1).
    Returns [N, R, R, 3] float32 in [0, 1].
    """
    base = _hsv_to_rgb(
        _uniform(rng, 0.0, 1.0, num_images),
        _uniform(rng, 0.55, 1.0, num_images),
        _uniform(rng, 0.45, 1.0, num_images),
    )
    accent = _hsv_to_rgb(
        _uniform(rng, 0.0, 1.0, num_images),
        _uniform(rng, 0.4, 1.0, num_images),
        _uniform(rng, 0.2, 1.0, num_images),
    )
    shade_angle = _uniform(rng, 0.0, 2.0 * np.pi, num_images)[:, None, None]
    shading = 1.0 + _uniform(rng, 0.1, 0.35, num_images)[:, None, None] * (
        np.cos(shade_angle) * local_u + np.sin(shade_angle) * local_v
    )
    stripe_angle = _uniform(rng, 0.0, np.pi, num_images)[:, None, None]
    stripe_freq = _uniform(rng, 1.5, 4.0, num_images)[:, None, None]
    stripes = 0.5 + 0.5 * np.sin(
        2.0
        * np.pi
        * stripe_freq
        * (np.cos(stripe_angle) * local_u + np.sin(stripe_angle) * local_v)
    )
    noise = band_limited_noise(rng, num_images, resolution, _uniform(rng, 3.0, 8.0, num_images))
    noise_pattern = np.clip(0.5 + 0.3 * noise, 0.0, 1.0)
    use_stripes = (_uniform(rng, 0.0, 1.0, num_images) < 0.5)[:, None, None]
    pattern = np.where(use_stripes, stripes, noise_pattern)
    strength = _uniform(rng, 0.2, 0.6, num_images)[:, None, None]
    mix = (strength * pattern)[..., None]
    texture = (1.0 - mix) * base[:, None, None, :] + mix * accent[:, None, None, :]
    return np.clip(texture * shading[..., None], 0.0, 1.0).astype(np.float32)


def render_synthetic_objects(
    rng: np.random.Generator,
    num_images: int,
    resolution: int,
    return_layers: bool = False,
    background_noise: float = 1.0,
) -> dict[str, np.ndarray]:
    """Renders `num_images` images of one object over a background.

    Args:
      rng: the NumPy generator; the output is a deterministic function of its state.
      num_images: N >= 1.
      resolution: R, image side in pixels (any R >= 8; the data sets use powers of two).
      return_layers: also return the float layers and the shape parameters.
      background_noise: >= 0, multiplies the amplitudes of the backgrounds' band-limited noise
        (coarse coloured 0.04-0.12 and fine 0.02-0.08 of the [0, 1] range at x1); the other
        draws do not depend on it.

    Returns:
      'image': [N, R, R, 3] uint8, the composite.
      'mask': [N, R, R, 1] uint8 in [0, 255], the object's coverage (255 inside, 0 outside,
        anti-aliased on edge pixels); `mask >= 128` is exactly the set of pixel centres inside
        the shape.
      With return_layers: 'background', 'foreground' [N, R, R, 3] float32 in [0, 1], 'coverage'
      [N, R, R] float32 in [0, 1], 'shape_id' [N] int (index into SHAPE_TYPES),
      'area_fraction' [N] float, the drawn area of the shape as a fraction of the image (before
      any clipping at the image border).
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    if not background_noise >= 0.0:
        raise ValueError(f"background_noise must be >= 0, got {background_noise}")
    # Independent streams for the background, the shape and the object's texture: the layers
    # are independent by construction, and the shapes do not depend on the resolution (the noise
    # fields consume resolution-dependent numbers of draws).
    background_rng, shape_rng, texture_rng = rng.spawn(3)
    background = _render_backgrounds(background_rng, num_images, resolution, background_noise)

    shape_ids = shape_rng.integers(0, len(SHAPE_TYPES), num_images)
    radius_fn = _radial_functions(shape_rng, shape_ids)
    everyone = np.arange(num_images)
    boundary_theta = np.broadcast_to(
        np.linspace(0.0, 2.0 * np.pi, _NUM_BOUNDARY_ANGLES, endpoint=False, dtype=np.float32),
        (num_images, _NUM_BOUNDARY_ANGLES),
    )
    unit_radius = radius_fn(boundary_theta, everyone)
    unit_area = 0.5 * np.mean(unit_radius**2, axis=1) * 2.0 * np.pi
    area_fraction = _uniform(shape_rng, MIN_AREA_FRACTION, MAX_AREA_FRACTION, num_images)
    scale = np.sqrt(area_fraction / unit_area).astype(np.float32)
    rotation = _uniform(shape_rng, 0.0, 2.0 * np.pi, num_images)
    # Extent of the rotated, scaled boundary along x and y; centres keep the object inside the
    # image when it fits (else it is centred on that axis and clipped symmetrically).
    boundary_angle = boundary_theta + rotation[:, None]
    extent_x = np.max(np.abs(np.cos(boundary_angle)) * unit_radius, axis=1) * scale
    extent_y = np.max(np.abs(np.sin(boundary_angle)) * unit_radius, axis=1) * scale
    centre_draw = _uniform(shape_rng, 0.0, 1.0, (2, num_images))
    room_x = np.maximum(0.5 - extent_x, 0.0)
    room_y = np.maximum(0.5 - extent_y, 0.0)
    centre_x = 0.5 + (2.0 * centre_draw[0] - 1.0) * room_x
    centre_y = 0.5 + (2.0 * centre_draw[1] - 1.0) * room_y

    y, x = _pixel_grid(resolution)
    dx = x[None] - centre_x[:, None, None]
    dy = y[None] - centre_y[:, None, None]
    cos_r, sin_r = np.cos(rotation)[:, None, None], np.sin(rotation)[:, None, None]
    local_u = (cos_r * dx + sin_r * dy) / scale[:, None, None]
    local_v = (-sin_r * dx + cos_r * dy) / scale[:, None, None]
    rho = np.sqrt(local_u**2 + local_v**2)
    theta = np.arctan2(local_v, local_u)
    level = rho / radius_fn(theta, everyone) - 1.0
    # |grad level| per pixel from central differences (one-sided at the border).
    grad_y, grad_x = np.gradient(level, axis=(1, 2))
    grad_norm = np.maximum(np.sqrt(grad_x**2 + grad_y**2), 1e-6)
    coverage = np.clip(0.5 - level / grad_norm, 0.0, 1.0).astype(np.float32)
    # Exactness at the threshold: a pixel centre is inside iff level < 0 iff coverage > 0.5.
    foreground = _object_textures(texture_rng, num_images, resolution, local_u, local_v)

    alpha = coverage[..., None]
    composite = alpha * foreground + (1.0 - alpha) * background
    image = np.clip(np.rint(composite * 255.0), 0, 255).astype(np.uint8)
    # Quantise so that `mask >= 128` keeps exactly the pixels with coverage > 0.5.
    quantised = np.rint(coverage * 255.0)
    quantised = np.where(coverage > 0.5, np.maximum(quantised, 128), np.minimum(quantised, 127))
    mask = quantised.astype(np.uint8)[..., None]
    result = {"image": image, "mask": mask}
    if return_layers:
        result.update(
            background=background,
            foreground=foreground,
            coverage=coverage,
            shape_id=shape_ids,
            area_fraction=area_fraction,
        )
    return result
