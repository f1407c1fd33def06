"""Scenes of several objects over one background (the built-in single images): the objects,
backgrounds and masks of synthetic_render, with K objects placed apart in one image.
"""

import dataclasses

import numpy as np

from ilsgan_jax.data import synthetic_render, synthetic_shapes
from ilsgan_jax.data.synthetic_shapes import SHAPE_TYPES, PlacedShapes
from ilsgan_jax.data.synthetic_shapes import uniform as _uniform

# Candidate centres drawn per object and per layout attempt.
_NUM_CANDIDATE_CENTRES = 256
_MAX_LAYOUT_ATTEMPTS = 50


def _place_apart(
    rng: np.random.Generator,
    reach: np.ndarray,
    margin: float,
    kinds: np.ndarray | None = None,
    copy_distance: float = 0.0,
) -> np.ndarray:
    """Centres [M, 2] (x, y in image units) of M discs of radius `reach` [M] inside the image,
    at least `margin` apart, and the centres of two discs of the same kind (`kinds` [M] int, or
    None: all different) at least `copy_distance` apart; rejection sampling, first fitting
    candidate in draw order.

    Raises:
      ValueError when no layout is found in _MAX_LAYOUT_ATTEMPTS attempts.
    """
    count = reach.shape[0]
    kinds = np.arange(count) if kinds is None else np.asarray(kinds)
    for _ in range(_MAX_LAYOUT_ATTEMPTS):
        centres = np.zeros((count, 2), np.float32)
        for k in range(count):
            candidates = _uniform(rng, reach[k], 1.0 - reach[k], (_NUM_CANDIDATE_CENTRES, 2))
            distances = np.linalg.norm(candidates[:, None, :] - centres[None, :k], axis=-1)
            needed = reach[k] + reach[:k] + margin
            needed = np.where(kinds[:k] == kinds[k], np.maximum(needed, copy_distance), needed)
            fits = np.all(distances > needed, axis=1)
            if not fits.any():
                break
            centres[k] = candidates[np.argmax(fits)]
        else:
            return centres
    raise ValueError(f"cannot place {count} objects apart; lower total_area or copy_distance")


def _draw_scene_objects(
    rng: np.random.Generator,
    num_objects: int,
    total_area: float,
    margin: float,
    copies: int = 1,
    copy_distance: float = 0.0,
) -> PlacedShapes:
    """K shapes, each placed `copies` times (the same shape, scale and rotation; rows ordered
    object-major: row m is object m // copies), with areas total_area / (K * copies) x
    U(0.8, 1.2) of the image each, whose circumscribed circles lie inside the image and at least
    `margin` (image units) apart, copies of one object `copy_distance` or more apart."""
    shape_ids = rng.integers(0, len(SHAPE_TYPES), num_objects)
    parameters = synthetic_shapes.draw_shape_parameters(rng, shape_ids)
    _, unit_radius = synthetic_shapes.unit_boundary(parameters)
    area_fraction = _uniform(rng, 0.8, 1.2, num_objects) * np.float32(
        total_area / (num_objects * copies)
    )
    scale = np.sqrt(area_fraction / synthetic_shapes.unit_area(unit_radius)).astype(np.float32)
    rotation = _uniform(rng, 0.0, 2.0 * np.pi, num_objects)
    reach = np.max(unit_radius, axis=1) * scale
    if np.any(reach >= 0.5 - margin):
        raise ValueError(f"objects of total_area={total_area} do not fit; lower it")
    kinds = np.repeat(np.arange(num_objects), copies)
    centres = _place_apart(rng, reach[kinds], margin, kinds, copy_distance)
    if copies > 1:
        parameters = _take_rows(parameters, kinds)
    return PlacedShapes(
        parameters, scale[kinds], rotation[kinds], centres[:, 0], centres[:, 1]
    )


def _take_rows(parameters, rows: np.ndarray):
    """The dataclass of arrays `parameters` (nested dataclasses too) at `rows` of every array."""
    taken = {}
    for field in dataclasses.fields(parameters):
        value = getattr(parameters, field.name)
        taken[field.name] = (
            _take_rows(value, rows) if dataclasses.is_dataclass(value) else value[rows]
        )
    return type(parameters)(**taken)


def render_multi_object_scene(
    rng: np.random.Generator,
    num_objects: int,
    resolution: int,
    *,
    total_area: float = 0.2,
    background_noise: float = 1.0,
    background_type: str = "noise",
    copies: int = 1,
    copy_distance: float = 0.0,
    texture_pattern_scale: float = 1.0,
    return_layers: bool = False,
) -> dict[str, np.ndarray]:
    """Renders one image of K objects over one background, with each object's mask.

    The objects are drawn from render_synthetic_objects' shape and texture distributions, with
    areas of total_area / (K * copies) x U(0.8, 1.2) of the image each, and placed apart: their
    circumscribed circles lie inside the image, 2 pixels or more apart, so no pixel is covered
    by two objects. They are composited back to front (object k over objects < k).

    With copies > 1 every object is stamped at `copies` places, the copies of one object at
    least `copy_distance` (a fraction of the image side, between centres) apart: the same shape,
    size, rotation and colours (the texture's noise, drawn over the image, differs between
    copies). Object k's mask is then the union of its copies, so a crop of the picture shows the
    K objects in changing combinations and at changing relative places.

    Args:
      rng: the NumPy generator; the output is a deterministic function of its state.
      num_objects: K >= 1.
      resolution: R, image side in pixels (>= 8).
      total_area: the objects' summed area as a fraction of the image, in (0, 0.5].
      background_noise, background_type: as in render_synthetic_objects.
      copies: how many times each object is placed (>= 1).
      copy_distance: the least centre distance of two copies of one object, in [0, 1).
      texture_pattern_scale: the objects' stripes or noise at this fraction of their drawn
        strength, in [0, 1]; 0 = flat, shaded colours. Shapes and colours do not depend on it.
      return_layers: also return the float layers.

    Returns:
      'image': [R, R, 3] uint8, the composite.
      'masks': [R, R, K] uint8 in [0, 255], object k's visible coverage, quantised like
        render_synthetic_objects' mask (`masks[..., k] >= 128` is exactly the set of pixel
        centres inside object k or one of its copies); the K binary masks are disjoint.
      With return_layers: 'background' [R, R, 3], 'foreground' [M, R, R, 3] and 'coverage'
      [M, R, R] (each placed shape's own coverage, M = K * copies, object-major), float32 in
      [0, 1].
    """
    if num_objects < 1:
        raise ValueError(f"num_objects must be >= 1, got {num_objects}")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    if not 0.0 <= copy_distance < 1.0:
        raise ValueError(f"copy_distance must be in [0, 1), got {copy_distance}")
    if not 0.0 <= texture_pattern_scale <= 1.0:
        raise ValueError(f"texture_pattern_scale must be in [0, 1], got {texture_pattern_scale}")
    if not 0.0 < total_area <= 0.5:
        raise ValueError(f"total_area must be in (0, 0.5], got {total_area}")
    synthetic_render.check_common_arguments(resolution, background_noise, background_type)
    background_rng, shape_rng, texture_rng = rng.spawn(3)
    background, _ = synthetic_render.background_layer(
        rng, background_rng, 1, resolution, background_noise, background_type
    )
    shapes = _draw_scene_objects(
        shape_rng, num_objects, total_area, 2.0 / resolution, copies, copy_distance
    )
    local_u, local_v = synthetic_shapes.shape_frames(shapes, resolution)
    coverage = synthetic_shapes.shape_coverage(shapes.parameters, local_u, local_v)
    if copies == 1:
        foreground = synthetic_render.object_textures(
            texture_rng, num_objects, resolution, local_u, local_v, texture_pattern_scale
        )
    else:  # one texture draw per object, replayed for each of its copies
        texture_seeds = texture_rng.integers(0, 2**32, num_objects)
        foreground = np.concatenate(
            [
                synthetic_render.object_textures(
                    np.random.default_rng(texture_seeds[row // copies]),
                    1,
                    resolution,
                    local_u[row : row + 1],
                    local_v[row : row + 1],
                    texture_pattern_scale,
                )
                for row in range(num_objects * copies)
            ]
        )

    composite = background[0]
    for alpha, layer in zip(coverage[..., None], foreground, strict=True):
        composite = alpha * layer + (1.0 - alpha) * composite
    # Visible part of object k: its coverage times the uncovered part of the objects above it.
    visible = np.empty_like(coverage)
    uncovered = np.ones(coverage.shape[1:], np.float32)
    for k in reversed(range(coverage.shape[0])):
        visible[k] = coverage[k] * uncovered
        uncovered *= 1.0 - coverage[k]
    # The copies of one object never overlap, so the sum is their union.
    visible = visible.reshape(num_objects, copies, resolution, resolution).sum(axis=1)
    masks = np.moveaxis(synthetic_render.quantise_mask(visible), 0, -1)
    result = {"image": synthetic_render.to_uint8_image(composite), "masks": masks}
    if return_layers:
        result.update(background=background[0], foreground=foreground, coverage=coverage)
    return result
