"""Spatial transformer (layout.py): identity, integer shifts, NumPy reference, bounds, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.models import layout

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
BOUNDS = dict(max_rotation=0.5, scale_range=(0.8, 1.25), max_translation=0.25)


def random_images(seed, shape):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)


def numpy_warp(images, theta):
    """Reference written the torch affine_grid/grid_sample way: normalised grid -> theta ->
    unnormalise (align_corners=False) -> bilinear with zero padding, pixel by pixel."""
    n, height, width, channels = images.shape
    out = np.zeros_like(images, dtype=np.float64)
    for b in range(n):
        for i in range(height):
            for j in range(width):
                x_norm = (2 * j + 1) / width - 1
                y_norm = (2 * i + 1) / height - 1
                xs, ys = theta[b] @ np.array([x_norm, y_norm, 1.0])
                x = ((xs + 1) * width - 1) / 2
                y = ((ys + 1) * height - 1) / 2
                x0, y0 = math.floor(x), math.floor(y)
                for dy in (0, 1):
                    for dx in (0, 1):
                        col, row = x0 + dx, y0 + dy
                        if 0 <= col < width and 0 <= row < height:
                            weight = (1 - abs(x - col)) * (1 - abs(y - row))
                            out[b, i, j] += weight * images[b, row, col]
    return out


def test_identity_is_exact():
    images = random_images(0, (2, 16, 16, 4))
    theta = np.broadcast_to(IDENTITY, (2, 2, 3))
    np.testing.assert_array_equal(np.asarray(layout.warp(jnp.asarray(images), theta)), images)


def test_zero_params_give_the_identity_matrix():
    theta = layout.affine_matrices(jnp.zeros((3, 2, 4)), **BOUNDS)
    np.testing.assert_array_equal(np.asarray(theta), np.broadcast_to(IDENTITY, (3, 2, 2, 3)))


@pytest.mark.parametrize("shift_x, shift_y", [(3, 0), (0, -2), (-5, 4)])
def test_integer_translation_is_an_integer_shift_with_zero_fill(shift_x, shift_y):
    images = random_images(1, (1, 16, 16, 3))
    theta = layout.translation_matrix(jnp.array([shift_x]), jnp.array([shift_y]), 16, 16)
    warped = np.asarray(layout.warp(jnp.asarray(images), theta))
    expected = np.zeros_like(images)
    rows, cols = np.arange(16), np.arange(16)
    src_rows, src_cols = rows - shift_y, cols - shift_x
    valid_rows = (src_rows >= 0) & (src_rows < 16)
    valid_cols = (src_cols >= 0) & (src_cols < 16)
    expected[0][np.ix_(valid_rows, valid_cols)] = images[0][
        np.ix_(src_rows[valid_rows], src_cols[valid_cols])
    ]
    np.testing.assert_allclose(warped, expected, atol=1e-6)
    # Content moved right/down by the shift: the newly uncovered border is exactly zero.
    assert np.all(warped[0][~valid_rows] == 0.0) and np.all(warped[0][:, ~valid_cols] == 0.0)


def test_translation_through_bounded_params_shifts_by_whole_pixels():
    """tx = 4 / 16 of the width through the tanh bound equals the 4-pixel integer shift."""
    images = random_images(2, (1, 16, 16, 2))
    max_translation = 0.5
    params = jnp.array([[[0.0, 0.0, math.atanh(0.25 / max_translation), 0.0]]])
    theta = layout.affine_matrices(
        params, max_rotation=0.3, scale_range=(0.5, 2.0), max_translation=max_translation
    )[:, 0]
    warped = np.asarray(layout.warp(jnp.asarray(images), theta))
    expected = np.zeros_like(images)
    expected[:, :, 4:] = images[:, :, :-4]
    np.testing.assert_allclose(warped, expected, atol=1e-5)


def test_general_affine_matches_numpy_reference():
    images = random_images(3, (2, 8, 12, 3))
    params = np.random.default_rng(4).normal(size=(2, 4)).astype(np.float32)
    theta = np.asarray(layout.affine_matrices(jnp.asarray(params), **BOUNDS))
    warped = np.asarray(layout.warp(jnp.asarray(images), jnp.asarray(theta)))
    np.testing.assert_allclose(warped, numpy_warp(images, theta.astype(np.float64)), atol=1e-5)


@pytest.mark.parametrize("frame_scale", [1.0, 0.5])
def test_affine_matrices_match_the_documented_formula(frame_scale):
    params = np.random.default_rng(5).normal(size=(6, 4))
    theta = np.asarray(
        layout.affine_matrices(
            jnp.asarray(params, jnp.float32), **BOUNDS, frame_scale=frame_scale
        )
    )
    low, high = BOUNDS["scale_range"]
    for p, matrix in zip(params, theta, strict=True):
        angle = BOUNDS["max_rotation"] * np.tanh(p[0])
        a, b = (np.log(high) + np.log(low)) / 2, (np.log(high) - np.log(low)) / 2
        scale = np.exp(a + b * np.tanh(p[1] + np.arctanh(-a / b)))
        shift = 2 * BOUNDS["max_translation"] * np.tanh(p[2:])
        forward = np.eye(3)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        forward[:2, :2] = frame_scale * scale * rotation
        forward[:2, 2] = shift
        np.testing.assert_allclose(matrix, np.linalg.inv(forward)[:2], atol=1e-5)
        assert low < scale < high and abs(angle) <= BOUNDS["max_rotation"]


def test_half_frame_scale_puts_the_frame_in_the_central_half():
    # Zero params, frame_scale 1/2: a 16 px all-ones frame lands on the central 8 x 8 pixels,
    # full inside, zero outside, and moves by max_translation * 16 px at tanh(p) = 1.
    frame = jnp.ones((1, 16, 16, 1))
    centred = layout.affine_matrices(
        jnp.zeros((1, 4)), max_rotation=0.0, scale_range=(1, 1), max_translation=0.25,
        frame_scale=0.5,
    )
    warped = np.asarray(layout.warp(frame, centred))[0, ..., 0]
    expected = np.zeros((16, 16), np.float32)
    expected[4:12, 4:12] = 1.0
    # Output pixel 4 samples source position 0.5 (between pixels 0 and 1, both inside) and
    # output pixel 3 position -1.5 (both neighbours outside): the block's edge is exact.
    np.testing.assert_allclose(warped, expected, atol=1e-6)
    moved = layout.affine_matrices(
        jnp.array([[0.0, 0.0, 50.0, 0.0]]), max_rotation=0.0, scale_range=(1, 1),
        max_translation=0.25, frame_scale=0.5,
    )
    shifted = np.asarray(layout.warp(frame, moved))[0, ..., 0]
    np.testing.assert_allclose(shifted, np.roll(warped, 4, axis=1), atol=1e-5)


def test_bounds_hold_for_extreme_params():
    params = jnp.array([[50.0, 50.0, 50.0, -50.0], [-50.0, -50.0, -50.0, 50.0]])
    scale = np.asarray(layout.bounded_scale(params[:, 1], (0.8, 1.25)))
    np.testing.assert_allclose(scale, [1.25, 0.8], rtol=1e-5)
    theta = np.asarray(layout.affine_matrices(params, **BOUNDS))
    # The inverse map's linear part is R(-angle) / scale: its determinant is 1 / scale^2.
    np.testing.assert_allclose(np.linalg.det(theta[:, :, :2]), 1 / scale**2, rtol=1e-5)


def test_warp_gradient_wrt_theta_matches_finite_differences():
    images = jnp.asarray(random_images(6, (1, 8, 8, 2)))
    theta = jnp.array([[[0.931, 0.0713, 0.0611], [-0.0671, 1.087, -0.1213]]])
    weights = jnp.asarray(random_images(7, (1, 8, 8, 2)))
    # Bilinear sampling has kinks at whole pixels: keep every position away from them so the
    # central differences (positions move <= 0.0008 px) see a linear function.
    positions = np.stack(layout.sample_positions(theta, 8, 8))
    assert np.abs(positions - np.round(positions)).min() > 0.001

    @jax.jit
    def objective(matrix):
        return jnp.sum(layout.warp(images, matrix) * weights)

    grad = np.asarray(jax.grad(objective)(theta))
    step = 2e-4
    numeric = np.zeros((2, 3))
    for r in range(2):
        for c in range(3):
            delta = np.zeros((1, 2, 3), np.float32)
            delta[0, r, c] = step
            numeric[r, c] = (objective(theta + delta) - objective(theta - delta)) / (2 * step)
    assert np.abs(grad[0]).min() > 1e-3
    np.testing.assert_allclose(grad[0], numeric, rtol=2e-2, atol=2e-3)


def test_warp_gradient_wrt_images_is_the_transpose():
    """warp is linear in the images: <warp(x), y> == <x, warp^T(y)> with the VJP as warp^T."""
    images = jnp.asarray(random_images(8, (2, 8, 8, 3)))
    cotangent = jnp.asarray(random_images(9, (2, 8, 8, 3)))
    theta = layout.affine_matrices(jnp.asarray(random_images(10, (2, 4))), **BOUNDS)
    warped, vjp = jax.vjp(lambda x: layout.warp(x, theta), images)
    (transposed,) = vjp(cotangent)
    np.testing.assert_allclose(
        float(jnp.sum(warped * cotangent)), float(jnp.sum(images * transposed)), rtol=1e-5
    )


def test_layout_network_starts_at_identity_and_is_trainable():
    network = layout.LayoutNetwork(hidden_features=8, num_hidden_layers=1)
    latents = jnp.asarray(random_images(11, (3, 2, 5)))
    params = network.init(jax.random.key(0), latents)["params"]
    np.testing.assert_array_equal(np.asarray(network.apply({"params": params}, latents)), 0.0)
    weights = jnp.asarray(random_images(12, (3, 2, 4)))
    grads = jax.grad(lambda p: jnp.sum(network.apply({"params": p}, latents) * weights))(params)
    # d/d(output kernel) = sum over samples of hidden activation x weight: nonzero at the start.
    assert np.abs(np.asarray(grads["output"]["kernel"])).max() > 1e-3
    assert np.abs(np.asarray(grads["output"]["bias"])).max() > 1e-3


@pytest.mark.parametrize(
    "bounds, field",
    [
        (dict(max_rotation=-0.1, scale_range=(1, 1), max_translation=0), "max_rotation"),
        (dict(max_rotation=0, scale_range=(1.1, 2.0), max_translation=0), "scale_range"),
        (dict(max_rotation=0, scale_range=(0.5, 1.0), max_translation=0), "scale_range"),
        (dict(max_rotation=0, scale_range=(1, 1), max_translation=-1), "max_translation"),
        (dict(BOUNDS, frame_scale=0.0), "frame_scale"),
        (dict(BOUNDS, frame_scale=1.5), "frame_scale"),
    ],
)
def test_bad_bounds_raise(bounds, field):
    with pytest.raises(ValueError, match=field):
        layout.affine_matrices(jnp.zeros((1, 4)), **bounds)


def test_bad_theta_shape_raises():
    with pytest.raises(ValueError, match="theta"):
        layout.warp(jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 3, 3)))


def test_frame_window_matches_numpy_and_hides_the_warped_frame_edge():
    size, taper = 16, 0.25
    window = np.asarray(layout.frame_window(size, taper))
    centres = (np.arange(size) + 0.5) / size
    profile = np.clip(np.minimum(centres, 1 - centres) / taper, 0, 1)
    np.testing.assert_allclose(window[..., 0], np.outer(profile, profile), atol=1e-7)
    assert window[0, 0, 0] < 0.02 and window[size // 2, size // 2, 0] == 1.0
    np.testing.assert_array_equal(np.asarray(layout.frame_window(size, 0.0)), 1.0)
    # A uniform soft mask rotated and shrunk: without the window its frame's edge is a jump of
    # about the mask's value between neighbouring pixels; with it, at most a window step.
    theta = layout.affine_matrices(
        jnp.array([[1.0, -1.0, 0.3, 0.0]]), max_rotation=0.5, scale_range=(0.7, 1.3),
        max_translation=0.2,
    )
    mask = np.full((1, size, size, 1), 0.5, np.float32)

    def largest_step(image):
        image = np.asarray(image)[0, ..., 0]
        return max(np.abs(np.diff(image, axis=0)).max(), np.abs(np.diff(image, axis=1)).max())

    hard = largest_step(layout.warp(jnp.asarray(mask), theta))
    soft = largest_step(layout.warp(jnp.asarray(mask * window[None]), theta))
    assert hard > 0.3
    assert soft < 0.5 / (taper * size) * 1.5
    with pytest.raises(ValueError, match="mask_border_taper"):
        layout.frame_window(size, 0.6)
