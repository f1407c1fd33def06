"""Procedural images of textured objects over a textured background, with exact masks.

A plain, vectorised NumPy renderer (no TensorFlow) that the tfds builder calls in chunks; the
geometry (shapes, anti-aliased coverage) lives in synthetic_shapes.py.

Backgrounds, by type:
  'noise': a smooth two-colour gradient in a random direction plus band-limited noise (a
    log-Gaussian band around a random spatial frequency) in random colours; background colours
    are muted (low saturation).
  'structured': the 'noise' background with large sharp-edged structures painted over it, in
    the objects' saturated colours: a half-plane behind a straight edge through the central
    region (always), then two slots that each hold, with probability 0.75, a band crossing the
    image or a big star-shaped blob (25-60% of the image, centred anywhere, so often cut by the
    border), flat-coloured or (half the blobs) textured like an object. A layered generator can
    explain such structures, or parts of them, with its foreground layer; the mask stays the
    object's alone.
Objects: one star-shaped region per image, an ellipse, a superellipse, a convex polygon or a
Fourier blob, covering 10-40% of the image, at a position drawn independently of everything
else, coloured with saturated random colours, a linear shading ramp and a texture (stripes or
band-limited noise) that moves with the object. Object and background parameters are drawn from
separate random streams, so the two layers are statistically independent.

The image is `coverage * object + (1 - coverage) * background`, with the analytic anti-aliased
coverage of synthetic_shapes (`coverage > 0.5` is exactly the set of pixel centres inside the
object). synthetic_scenes.render_multi_object_scene draws several such objects, apart, over one
background.
"""

import numpy as np
import scipy.fft

from ilsgan_jax.data import synthetic_shapes
from ilsgan_jax.data.synthetic_shapes import SHAPE_TYPES, PlacedShapes
from ilsgan_jax.data.synthetic_shapes import uniform as _uniform

BACKGROUND_TYPES = ("noise", "structured")
MIN_AREA_FRACTION = 0.10
MAX_AREA_FRACTION = 0.40
# 'structured' backgrounds: slots of bands / blobs over the half-plane, and their probability.
_NUM_STRUCTURE_SLOTS = 2
_STRUCTURE_PROBABILITY = 0.75


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


def _render_backgrounds(
    rng: np.random.Generator, num_images: int, resolution: int, noise_scale: float = 1.0
) -> np.ndarray:
    """Returns [N, R, R, 3] float32 in [0, 1]; `noise_scale` multiplies both noise amplitudes
    (the random draws do not depend on it, so x0 gives the same gradients without noise)."""
    y, x = synthetic_shapes.pixel_grid(resolution)
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


def object_textures(
    rng: np.random.Generator,
    num_images: int,
    resolution: int,
    local_u: np.ndarray,
    local_v: np.ndarray,
    pattern_scale: float = 1.0,
) -> np.ndarray:
    """Saturated base colour + shading ramp + stripes or noise, in the object's frame.

    local_u, local_v: [N, R, R] object-frame coordinates (object scale ~ 1).
    pattern_scale: multiplies the pattern's drawn strength; 0 gives flat, shaded colours (the
      same random draws, so the colours are those of pattern_scale=1).
    Returns [N, R, R, 3] float32 in [0, 1].
    """
    base = _object_colours(rng, num_images)
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
    mix = (pattern_scale * strength * pattern)[..., None]
    texture = (1.0 - mix) * base[:, None, None, :] + mix * accent[:, None, None, :]
    return np.clip(texture * shading[..., None], 0.0, 1.0).astype(np.float32)


def _object_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """[N, 3] float32 saturated colours in [0, 1], the objects' base colour distribution."""
    return _hsv_to_rgb(
        _uniform(rng, 0.0, 1.0, count),
        _uniform(rng, 0.55, 1.0, count),
        _uniform(rng, 0.45, 1.0, count),
    )


def _half_plane_layer(
    rng: np.random.Generator, num_images: int, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """A half-plane behind a straight edge through a point of the central region, flat coloured.

    Returns (coverage [N, R, R] float32 in [0, 1], colour [N, 1, 1, 3] float32).
    """
    angle = _uniform(rng, 0.0, 2.0 * np.pi, num_images)
    point = _uniform(rng, 0.35, 0.65, (2, num_images))
    distance = synthetic_shapes.line_distance(angle, point[0], point[1], resolution)
    colour = _object_colours(rng, num_images)[:, None, None, :]
    return synthetic_shapes.distance_coverage(distance), colour


def _band_coverage(rng: np.random.Generator, num_images: int, resolution: int) -> np.ndarray:
    """A straight band crossing the image, 10-24% of the side wide: [N, R, R] coverage."""
    angle = _uniform(rng, 0.0, 2.0 * np.pi, num_images)
    point = _uniform(rng, 0.2, 0.8, (2, num_images))
    half_width = _uniform(rng, 0.05, 0.12, num_images)
    distance = synthetic_shapes.line_distance(angle, point[0], point[1], resolution)
    half_width_pixels = half_width[:, None, None] * np.float32(resolution)
    return synthetic_shapes.distance_coverage(np.abs(distance) - half_width_pixels)


def _big_blobs(
    rng: np.random.Generator, num_images: int, resolution: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A star-shaped shape of the objects' family, 25-60% of the image, centred anywhere.

    Returns (coverage, local_u, local_v), each [N, R, R] float32 (frames as shape_frames).
    """
    shape_ids = rng.integers(0, len(SHAPE_TYPES), num_images)
    parameters = synthetic_shapes.draw_shape_parameters(rng, shape_ids)
    _, unit_radius = synthetic_shapes.unit_boundary(parameters)
    area_fraction = _uniform(rng, 0.25, 0.6, num_images)
    scale = np.sqrt(area_fraction / synthetic_shapes.unit_area(unit_radius)).astype(np.float32)
    rotation = _uniform(rng, 0.0, 2.0 * np.pi, num_images)
    centre = _uniform(rng, 0.0, 1.0, (2, num_images))
    shapes = PlacedShapes(parameters, scale, rotation, centre[0], centre[1])
    local_u, local_v = synthetic_shapes.shape_frames(shapes, resolution)
    return synthetic_shapes.shape_coverage(parameters, local_u, local_v), local_u, local_v


def _structure_layer(
    rng: np.random.Generator, num_images: int, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """One slot: with probability 0.75 a band or (equally likely) a big blob, flat coloured in an
    object colour; half the blobs carry an object texture instead.

    Returns (coverage [N, R, R], colour [N, R, R, 3]), float32 in [0, 1].
    """
    present = _uniform(rng, 0.0, 1.0, num_images) < _STRUCTURE_PROBABILITY
    use_band = _uniform(rng, 0.0, 1.0, num_images) < 0.5
    textured = ~use_band & (_uniform(rng, 0.0, 1.0, num_images) < 0.5)
    band = _band_coverage(rng, num_images, resolution)
    blob, local_u, local_v = _big_blobs(rng, num_images, resolution)
    flat = _object_colours(rng, num_images)[:, None, None, :]
    texture = object_textures(rng, num_images, resolution, local_u, local_v)
    coverage = np.where(use_band[:, None, None], band, blob) * present[:, None, None]
    colour = np.where(textured[:, None, None, None], texture, flat)
    return coverage.astype(np.float32), colour.astype(np.float32)


def _paint_structures(
    rng: np.random.Generator, backgrounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Paints the half-plane, then the structure slots, over backgrounds [N, R, R, 3].

    Returns (backgrounds [N, R, R, 3] float32 in [0, 1], structure coverage [N, R, R] float32:
    the union of the structures' coverages, 1 - prod(1 - coverage)).
    """
    num_images, resolution = backgrounds.shape[:2]
    half_plane_rng, *slot_rngs = rng.spawn(1 + _NUM_STRUCTURE_SLOTS)
    layers = [_half_plane_layer(half_plane_rng, num_images, resolution)]
    layers += [_structure_layer(slot_rng, num_images, resolution) for slot_rng in slot_rngs]
    uncovered = np.ones(backgrounds.shape[:3], np.float32)
    for coverage, colour in layers:
        alpha = coverage[..., None]
        backgrounds = alpha * colour + (1.0 - alpha) * backgrounds
        uncovered *= 1.0 - coverage
    return np.clip(backgrounds, 0.0, 1.0).astype(np.float32), 1.0 - uncovered


def background_layer(
    rng: np.random.Generator,
    background_rng: np.random.Generator,
    num_images: int,
    resolution: int,
    background_noise: float,
    background_type: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The backgrounds [N, R, R, 3] of `background_type` and, for 'structured', the structures'
    coverage [N, R, R] (else None). `background_rng` draws the 'noise' part; the structures come
    from a further stream of `rng`, so the other layers are those of the 'noise' type."""
    backgrounds = _render_backgrounds(background_rng, num_images, resolution, background_noise)
    if background_type == "noise":
        return backgrounds, None
    return _paint_structures(rng.spawn(1)[0], backgrounds)


def _draw_single_objects(
    rng: np.random.Generator, num_images: int
) -> tuple[PlacedShapes, np.ndarray]:
    """One shape per image covering 10-40% of it, inside the image when it fits (else centred
    on that axis and clipped symmetrically). Returns (shapes, drawn area fraction [N])."""
    shape_ids = rng.integers(0, len(SHAPE_TYPES), num_images)
    parameters = synthetic_shapes.draw_shape_parameters(rng, shape_ids)
    boundary_theta, unit_radius = synthetic_shapes.unit_boundary(parameters)
    area_fraction = _uniform(rng, MIN_AREA_FRACTION, MAX_AREA_FRACTION, num_images)
    scale = np.sqrt(area_fraction / synthetic_shapes.unit_area(unit_radius)).astype(np.float32)
    rotation = _uniform(rng, 0.0, 2.0 * np.pi, num_images)
    # Extent of the rotated, scaled boundary along x and y.
    boundary_angle = boundary_theta + rotation[:, None]
    extent_x = np.max(np.abs(np.cos(boundary_angle)) * unit_radius, axis=1) * scale
    extent_y = np.max(np.abs(np.sin(boundary_angle)) * unit_radius, axis=1) * scale
    centre_draw = _uniform(rng, 0.0, 1.0, (2, num_images))
    room_x = np.maximum(0.5 - extent_x, 0.0)
    room_y = np.maximum(0.5 - extent_y, 0.0)
    centre_x = 0.5 + (2.0 * centre_draw[0] - 1.0) * room_x
    centre_y = 0.5 + (2.0 * centre_draw[1] - 1.0) * room_y
    return PlacedShapes(parameters, scale, rotation, centre_x, centre_y), area_fraction


def to_uint8_image(composite: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded."""
    return np.clip(np.rint(composite * 255.0), 0, 255).astype(np.uint8)


def quantise_mask(coverage: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] -> uint8 in [0, 255] with `mask >= 128` iff `coverage > 0.5`."""
    quantised = np.rint(coverage * 255.0)
    quantised = np.where(coverage > 0.5, np.maximum(quantised, 128), np.minimum(quantised, 127))
    return quantised.astype(np.uint8)


def check_common_arguments(resolution: int, background_noise: float, background_type: str):
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    if not background_noise >= 0.0:
        raise ValueError(f"background_noise must be >= 0, got {background_noise}")
    if background_type not in BACKGROUND_TYPES:
        raise ValueError(
            f"background_type must be one of {BACKGROUND_TYPES}, got {background_type!r}"
        )


def render_synthetic_objects(
    rng: np.random.Generator,
    num_images: int,
    resolution: int,
    return_layers: bool = False,
    background_noise: float = 1.0,
    background_type: str = "noise",
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
      background_type: one of BACKGROUND_TYPES (module docstring). 'structured' renders the
        same objects, masks and noise backgrounds as 'noise' and paints the structures over the
        backgrounds.

    Returns:
      'image': [N, R, R, 3] uint8, the composite.
      'mask': [N, R, R, 1] uint8 in [0, 255], the object's coverage (255 inside, 0 outside,
        anti-aliased on edge pixels); `mask >= 128` is exactly the set of pixel centres inside
        the shape.
      With return_layers: 'background', 'foreground' [N, R, R, 3] float32 in [0, 1], 'coverage'
      [N, R, R] float32 in [0, 1], 'shape_id' [N] int (index into SHAPE_TYPES),
      'area_fraction' [N] float, the drawn area of the shape as a fraction of the image (before
      any clipping at the image border); for 'structured' also 'structure_coverage' [N, R, R]
      float32 in [0, 1], the background structures' coverage.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    check_common_arguments(resolution, background_noise, background_type)
    # Independent streams for the background, the shape and the object's texture: the layers
    # are independent by construction, and the shapes do not depend on the resolution (the noise
    # fields consume resolution-dependent numbers of draws).
    background_rng, shape_rng, texture_rng = rng.spawn(3)
    background, structure_coverage = background_layer(
        rng, background_rng, num_images, resolution, background_noise, background_type
    )
    shapes, area_fraction = _draw_single_objects(shape_rng, num_images)
    local_u, local_v = synthetic_shapes.shape_frames(shapes, resolution)
    coverage = synthetic_shapes.shape_coverage(shapes.parameters, local_u, local_v)
    foreground = object_textures(texture_rng, num_images, resolution, local_u, local_v)

    alpha = coverage[..., None]
    composite = alpha * foreground + (1.0 - alpha) * background
    result = {"image": to_uint8_image(composite), "mask": quantise_mask(coverage)[..., None]}
    if return_layers:
        result.update(
            background=background,
            foreground=foreground,
            coverage=coverage,
            shape_id=shapes.parameters.shape_ids,
            area_fraction=area_fraction,
        )
        if structure_coverage is not None:
            result.update(structure_coverage=structure_coverage)
    return result
