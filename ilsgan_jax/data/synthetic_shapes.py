"""Geometry of the synthetic data: star-shaped shapes and their anti-aliased pixel coverage.

A shape is the region `rho < R(theta)` of a radial function R, in the shape's own frame: an
ellipse, a superellipse, a convex polygon or a Fourier blob, at unit scale (area ~ pi). A placed
shape adds a scale, a rotation and a centre in the image's [0, 1] coordinates.

Anti-aliasing is analytic: the shape is the level set `g(x) = rho / R(theta) - 1 < 0`; the
coverage of a pixel is `clip(0.5 - g / |grad g|, 0, 1)` (the signed distance to the edge in
pixels, shifted to the pixel centre), so `coverage > 0.5` is exactly the set of pixel centres
inside the shape. Straight edges (half-planes, bands) use their exact signed distance the same way.
"""

import dataclasses

import numpy as np

SHAPE_TYPES = ("ellipse", "superellipse", "polygon", "blob")
_NUM_BOUNDARY_ANGLES = 256
_MAX_POLYGON_SIDES = 8


def uniform(rng: np.random.Generator, low: float, high: float, size) -> np.ndarray:
    """Uniform draws as float32 (keeps the per-pixel arithmetic in single precision)."""
    return rng.uniform(low, high, size).astype(np.float32)


def pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1]: (y [R, 1], x [1, R])."""
    centres = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    return centres[:, None], centres[None, :]


def _per_row(values: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """[M] values as float32 [M, 1, ...], broadcastable against angle [M, ...]."""
    return values.astype(np.float32)[(slice(None),) + (None,) * (angle.ndim - 1)]


@dataclasses.dataclass(frozen=True)
class Polygons:
    """Convex polygons with K = 3..8 vertices at jittered, increasing angles and radii 0.8..1.2
    (star-shaped about the centre, every sector < pi wide, so bounded); slots k >= K are unused.

    All arrays are [N, 8] (edges [N, 8, 2]): vertex_angles (radians, float64), sector_widths
    (angular width of the sector of edge k; 0 for unused slots), edges (vertex k+1 - vertex k),
    edge_moments (cross(vertex k, edge k)).
    """

    vertex_angles: np.ndarray
    sector_widths: np.ndarray
    edges: np.ndarray
    edge_moments: np.ndarray


def _draw_polygons(rng: np.random.Generator, count: int) -> Polygons:
    sides = rng.integers(3, _MAX_POLYGON_SIDES + 1, count)
    spacing = 2.0 * np.pi / sides[:, None]
    vertex_angles = (
        np.arange(_MAX_POLYGON_SIDES)[None, :]
        + uniform(rng, -0.2, 0.2, (count, _MAX_POLYGON_SIDES))
    ) * spacing
    vertex_radii = uniform(rng, 0.8, 1.2, (count, _MAX_POLYGON_SIDES))
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
    return Polygons(vertex_angles, sector_widths, edges, edge_moments)


@dataclasses.dataclass(frozen=True)
class ShapeParameters:
    """One star-shaped shape per row, at unit scale.

    shape_ids: [N] int, index into SHAPE_TYPES. aspect: [N] float32, squared ratio of the
    (super)ellipse's semi-axes (a, 1/a with a = sqrt(aspect)). exponent: [N] float32, the
    superellipse's exponent. polygons: the polygon of every row (used where shape_id = 2).
    amplitudes, phases: [N, 3] float32, the blob's harmonics 2..4.
    """

    shape_ids: np.ndarray
    aspect: np.ndarray
    exponent: np.ndarray
    polygons: Polygons
    amplitudes: np.ndarray
    phases: np.ndarray

    @property
    def count(self) -> int:
        return self.shape_ids.shape[0]

    def radius(self, theta: np.ndarray, index: np.ndarray) -> np.ndarray:
        """R(theta) [M, ...] float32 of the shapes `index` [M] (rows of this batch), at angles
        theta [M, ...] in each shape's own frame."""
        radius = np.empty(theta.shape, dtype=np.float32)
        kinds = self.shape_ids[index]
        radius_functions = (_ellipse_radius, _superellipse_radius, _polygon_radius, _blob_radius)
        for kind, radius_function in enumerate(radius_functions):
            rows = np.nonzero(kinds == kind)[0]
            if rows.size:
                radius[rows] = radius_function(self, theta[rows].astype(np.float32), index[rows])
        return radius


def _ellipse_axes_terms(parameters, angle, which):
    """|cos t| / a and |sin t| * a for semi-axes a, 1/a."""
    a = _per_row(np.sqrt(parameters.aspect[which]), angle)
    return np.abs(np.cos(angle)) / a, np.abs(np.sin(angle)) * a


def _ellipse_radius(parameters, angle, which):
    cos_t, sin_t = _ellipse_axes_terms(parameters, angle, which)
    return 1.0 / np.sqrt(cos_t**2 + sin_t**2)


def _superellipse_radius(parameters, angle, which):
    cos_t, sin_t = _ellipse_axes_terms(parameters, angle, which)
    p = _per_row(parameters.exponent[which], angle)
    return (cos_t**p + sin_t**p + 1e-12) ** (-1.0 / p)


def _polygon_radius(parameters, angle, which):
    """The distance to the edge whose angular sector holds the ray."""
    polygons = parameters.polygons
    polygon_radius = np.zeros(angle.shape, dtype=np.float32)
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    for side in range(_MAX_POLYGON_SIDES):
        start = _per_row(polygons.vertex_angles[which, side], angle)
        width = _per_row(polygons.sector_widths[which, side], angle)
        in_sector = np.mod(angle - start, 2.0 * np.pi) < width + 1e-5
        edge_x = _per_row(polygons.edges[which, side, 0], angle)
        edge_y = _per_row(polygons.edges[which, side, 1], angle)
        denominator = cos_a * edge_y - sin_a * edge_x
        moment = _per_row(polygons.edge_moments[which, side], angle)
        distance = moment / np.where(np.abs(denominator) > 1e-9, denominator, 1e-9)
        polygon_radius = np.where(in_sector, distance, polygon_radius)
    return polygon_radius


def _blob_radius(parameters, angle, which):
    """1 + a small sum of harmonics 2..4 (small amplitudes keep R(theta) positive)."""
    wobble = np.zeros(angle.shape, dtype=np.float32)
    for h, harmonic in enumerate(np.arange(2, 5)):
        wobble += _per_row(parameters.amplitudes[which, h], angle) * np.cos(
            harmonic * angle + _per_row(parameters.phases[which, h], angle)
        )
    return 1.0 + wobble


def draw_shape_parameters(rng: np.random.Generator, shape_ids: np.ndarray) -> ShapeParameters:
    """Draws one unit-scale shape per entry of `shape_ids` ([N] int, index into SHAPE_TYPES)."""
    count = shape_ids.shape[0]
    aspect = np.exp(uniform(rng, -0.45, 0.45, count))
    exponent = np.exp(uniform(rng, np.log(0.8), np.log(4.0), count))
    polygons = _draw_polygons(rng, count)
    amplitudes = uniform(rng, 0.0, 0.18, (count, 3))
    phases = uniform(rng, 0.0, 2.0 * np.pi, (count, 3))
    return ShapeParameters(shape_ids, aspect, exponent, polygons, amplitudes, phases)


def unit_boundary(parameters: ShapeParameters) -> tuple[np.ndarray, np.ndarray]:
    """256 boundary samples per shape: (theta [N, 256] float32, R(theta) [N, 256] float32)."""
    count = parameters.count
    theta = np.broadcast_to(
        np.linspace(0.0, 2.0 * np.pi, _NUM_BOUNDARY_ANGLES, endpoint=False, dtype=np.float32),
        (count, _NUM_BOUNDARY_ANGLES),
    )
    return theta, parameters.radius(theta, np.arange(count))


def unit_area(unit_radius: np.ndarray) -> np.ndarray:
    """[N] area of the unit shapes from their boundary radii [N, A] (polar integral)."""
    return 0.5 * np.mean(unit_radius**2, axis=1) * 2.0 * np.pi


@dataclasses.dataclass(frozen=True)
class PlacedShapes:
    """Shapes in an image: scale (unit shape -> image units, [0, 1] = the image side), rotation
    (radians) and centre_x, centre_y (image units), each [N] float32."""

    parameters: ShapeParameters
    scale: np.ndarray
    rotation: np.ndarray
    centre_x: np.ndarray
    centre_y: np.ndarray


def shape_frames(shapes: PlacedShapes, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel centre in each shape's own frame: (local_u, local_v), each [N, R, R] float32
    (unit-scale coordinates: the shape is `|(u, v)| < R(atan2(v, u))`)."""
    y, x = pixel_grid(resolution)
    dx = x[None] - shapes.centre_x[:, None, None]
    dy = y[None] - shapes.centre_y[:, None, None]
    cos_r = np.cos(shapes.rotation)[:, None, None]
    sin_r = np.sin(shapes.rotation)[:, None, None]
    scale = shapes.scale[:, None, None]
    return (cos_r * dx + sin_r * dy) / scale, (-sin_r * dx + cos_r * dy) / scale


def shape_coverage(
    parameters: ShapeParameters, local_u: np.ndarray, local_v: np.ndarray
) -> np.ndarray:
    """Anti-aliased coverage [N, R, R] float32 in [0, 1] of shape n over image n, from the pixel
    frames of `shape_frames`; `coverage > 0.5` iff the pixel centre is inside the shape."""
    rho = np.sqrt(local_u**2 + local_v**2)
    theta = np.arctan2(local_v, local_u)
    level = rho / parameters.radius(theta, np.arange(parameters.count)) - 1.0
    # |grad level| per pixel from central differences (one-sided at the border).
    grad_y, grad_x = np.gradient(level, axis=(1, 2))
    grad_norm = np.maximum(np.sqrt(grad_x**2 + grad_y**2), 1e-6)
    return np.clip(0.5 - level / grad_norm, 0.0, 1.0).astype(np.float32)


def line_distance(
    angle: np.ndarray, point_x: np.ndarray, point_y: np.ndarray, resolution: int
) -> np.ndarray:
    """Signed distance in pixels [N, R, R] float32 of each pixel centre to the line through
    (point_x, point_y) (image units, [N]) whose normal points at `angle` ([N] radians)."""
    y, x = pixel_grid(resolution)
    normal_x = np.cos(angle).astype(np.float32)[:, None, None]
    normal_y = np.sin(angle).astype(np.float32)[:, None, None]
    along_normal = (x[None] - point_x[:, None, None]) * normal_x
    along_normal = along_normal + (y[None] - point_y[:, None, None]) * normal_y
    return (along_normal * np.float32(resolution)).astype(np.float32)


def distance_coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of the region `signed_distance < 0` (distance in pixels)."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0).astype(np.float32)
