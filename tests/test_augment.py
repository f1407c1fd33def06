"""Tests of the ADA pipeline (ilsgan_jax.augment): values against NumPy/SciPy references."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from jax import test_util as jax_test_util

from ilsgan_jax.augment import ada, controller, matrices
from ilsgan_jax.augment.config import (
    COLOUR_FLAGS,
    AdaConfig,
    as_ada_config,
    default_ada_config,
    only,
)

SIZE = 16
BATCH = 8
GEOMETRIC_ONLY = AdaConfig(**{name: 0.0 for name in COLOUR_FLAGS})

# One compilation per (shape, config) instead of op-by-op dispatch (p and key are traced).
_augment = jax.jit(ada.augment, static_argnames="config")
_geometric_matrix = jax.jit(matrices.sample_geometric_matrix, static_argnums=(2, 3, 4, 5))
_colour_matrix = jax.jit(matrices.sample_colour_matrix, static_argnums=(2, 3, 4))


def _random_images(seed=0, batch=BATCH, size=SIZE, channels=3):
    return jax.random.uniform(
        jax.random.key(seed), (batch, size, size, channels), minval=-1.0, maxval=1.0
    )


def _smooth_images(batch=BATCH, size=SIZE):
    """Low-frequency, left-right asymmetric images: [batch, size, size, 3] in [-1, 1]."""
    coords = np.arange(size, dtype=np.float64)
    phase = np.linspace(0.0, 1.0, batch)[:, None, None, None]
    x = coords[None, None, :, None]
    y = coords[None, :, None, None]
    images = np.sin(2 * np.pi * x / size + phase) * np.cos(2 * np.pi * y / size + 0.5 * phase)
    channel_gain = np.array([1.0, 0.7, -0.5])
    return jnp.asarray(images * channel_gain, jnp.float32)


def _geometric_key(key):
    """The key `augment` hands to the geometric sampler."""
    return jax.random.split(key)[0]


def _colour_key(key):
    """The key `augment` hands to the colour sampler."""
    return jax.random.split(key)[1]


# ---------------------------------------------------------------------------------------------
# NumPy/SciPy reference of the geometric execution (reflect pad, sym6 up, bilinear, sym6 down).


def _upsample_axis(x, taps, axis):
    """Reference upsample2d along one axis: zero insertion, convolution with 2 * taps."""
    length = x.shape[axis]
    stuffed_shape = list(x.shape)
    stuffed_shape[axis] = 2 * length
    stuffed = np.zeros(stuffed_shape)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, None, 2)
    stuffed[tuple(index)] = x
    full = np.apply_along_axis(lambda v: np.convolve(v, 2 * taps), axis, stuffed)
    index[axis] = slice(taps.size // 2 - 1, taps.size // 2 - 1 + 2 * length)  # padding 6 of 12.
    return full[tuple(index)]


def _downsample_axis(x, taps, axis):
    """Reference downsample2d along one axis: crop 1, correlate with taps, keep even samples."""
    valid = np.apply_along_axis(lambda v: np.correlate(v[1:-1], taps, "valid"), axis, x)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, None, 2)
    return valid[tuple(index)]


def _numpy_geometric(images, g_inv):
    images = np.asarray(images, np.float64)
    g_inv = np.asarray(g_inv, np.float64)
    n, height, width, channels = images.shape
    taps = ada.geometric_filter()
    padded = np.pad(images, ((0, 0), (height - 1,) * 2, (width - 1,) * 2, (0, 0)), "reflect")
    upsampled = _upsample_axis(_upsample_axis(padded, taps, 1), taps, 2)
    in_height, in_width = upsampled.shape[1:3]
    out_height, out_width = 2 * (height + 6), 2 * (width + 6)
    # Output pixel centre (upsampled, centre origin) -> original units -> g_inv -> upsampled.
    out_x, out_y = np.meshgrid(
        np.arange(out_width) + 0.5 - out_width / 2, np.arange(out_height) + 0.5 - out_height / 2
    )
    warped = np.zeros((n, out_height, out_width, channels))
    for i in range(n):
        orig_x, orig_y = (out_x + 0.5) / 2, (out_y + 0.5) / 2
        src_x = g_inv[i, 0, 0] * orig_x + g_inv[i, 0, 1] * orig_y + g_inv[i, 0, 2]
        src_y = g_inv[i, 1, 0] * orig_x + g_inv[i, 1, 1] * orig_y + g_inv[i, 1, 2]
        col = 2 * src_x - 0.5 + in_width / 2 - 0.5
        row = 2 * src_y - 0.5 + in_height / 2 - 0.5
        for ch in range(channels):
            warped[i, ..., ch] = scipy.ndimage.map_coordinates(
                upsampled[i, ..., ch], [row, col], order=1, mode="grid-constant", cval=0.0
            )
    return _downsample_axis(_downsample_axis(warped, taps, 1), taps, 2)


# ---------------------------------------------------------------------------------------------
# Pipeline.


def test_identity_at_p_zero():
    images = _random_images()
    augmented = _augment(images, jax.random.key(1), 0.0, config=AdaConfig())
    np.testing.assert_allclose(augmented, images, atol=1e-6)
    grey = _random_images(channels=1)
    augmented_grey = _augment(grey, jax.random.key(2), 0.0, config=AdaConfig())
    np.testing.assert_allclose(augmented_grey, grey, atol=1e-6)


def test_matrices_identity_at_p_zero_and_not_at_p_one():
    key = jax.random.key(3)
    config = AdaConfig()
    g_inv_0 = _geometric_matrix(key, 0.0, BATCH, SIZE, SIZE, config)
    colour_0 = _colour_matrix(key, 0.0, BATCH, 3, config)
    np.testing.assert_array_equal(g_inv_0, np.broadcast_to(np.eye(3), (BATCH, 3, 3)))
    np.testing.assert_array_equal(colour_0, np.broadcast_to(np.eye(4), (BATCH, 4, 4)))
    g_inv_1 = _geometric_matrix(key, 1.0, BATCH, SIZE, SIZE, config)
    colour_1 = _colour_matrix(key, 1.0, BATCH, 3, config)
    assert np.all(np.abs(g_inv_1 - np.eye(3)).max(axis=(1, 2)) > 1e-3)
    assert np.all(np.abs(colour_1 - np.eye(4)).max(axis=(1, 2)) > 1e-3)


def test_shape_dtype_and_output_changes_at_p_one():
    images = _random_images()
    augmented = _augment(images, jax.random.key(4), 1.0, config=AdaConfig())
    assert augmented.shape == images.shape
    assert augmented.dtype == jnp.float32
    assert np.all(np.isfinite(augmented))
    per_sample_change = np.abs(np.asarray(augmented - images)).max(axis=(1, 2, 3))
    assert np.all(per_sample_change > 0.1)


@pytest.mark.parametrize(
    "config", [only("xflip"), only("rotate90"), GEOMETRIC_ONLY], ids=["xflip", "rot90", "geom"]
)
def test_geometric_matches_numpy_reference(config):
    images = _random_images(seed=5, batch=4)
    key = jax.random.key(6)
    augmented = _augment(images, key, 1.0, config=config)
    g_inv = _geometric_matrix(_geometric_key(key), 1.0, 4, SIZE, SIZE, config)
    expected = _numpy_geometric(images, g_inv)
    np.testing.assert_allclose(augmented, expected, atol=2e-5)


def test_xflip_flips_exactly_the_drawn_samples():
    images = _smooth_images()
    key = jax.random.key(7)
    config = only("xflip")
    augmented = np.asarray(_augment(images, key, 1.0, config=config))
    g_inv = _geometric_matrix(_geometric_key(key), 1.0, BATCH, SIZE, SIZE, config)
    flipped = np.asarray(g_inv[:, 0, 0]) == -1.0
    assert 0 < flipped.sum() < BATCH  # p = 1: each sample flips with probability 1/2.
    images = np.asarray(images)
    for i in range(BATCH):
        if flipped[i]:
            # The reference flips in the 2x-upsampled domain; sym6 is not exactly symmetric, so a
            # flip carries a small sub-pixel phase error (< 0.04 at this frequency).
            np.testing.assert_allclose(augmented[i], images[i, :, ::-1], atol=0.06)
            assert np.abs(augmented[i] - images[i]).max() > 0.3
        else:
            np.testing.assert_allclose(augmented[i], images[i], atol=1e-6)


def test_integer_translation_is_reflect_padded_shift():
    images = _random_images(seed=8)
    key = jax.random.key(9)
    config = only("xint")
    augmented = np.asarray(_augment(images, key, 1.0, config=config))
    g_inv = np.asarray(
        _geometric_matrix(_geometric_key(key), 1.0, BATCH, SIZE, SIZE, config)
    )
    shifts = -g_inv[:, :2, 2]
    np.testing.assert_array_equal(shifts, np.round(shifts))
    assert np.abs(shifts).max() <= round(0.125 * SIZE)
    assert np.any(shifts != 0)
    images = np.asarray(images)
    for i in range(BATCH):
        shift_x, shift_y = int(shifts[i, 0]), int(shifts[i, 1])
        padded = np.pad(images[i], ((SIZE, SIZE), (SIZE, SIZE), (0, 0)), "reflect")
        expected = padded[SIZE - shift_y : 2 * SIZE - shift_y, SIZE - shift_x : 2 * SIZE - shift_x]
        np.testing.assert_allclose(augmented[i], expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Colour.


def test_brightness_adds_the_drawn_offset():
    images = _random_images(seed=10)
    key = jax.random.key(11)
    config = only("brightness")
    augmented = np.asarray(_augment(images, key, 1.0, config=config))
    colour = np.asarray(_colour_matrix(_colour_key(key), 1.0, BATCH, 3, config))
    np.testing.assert_array_equal(colour[:, :3, :3], np.broadcast_to(np.eye(3), (BATCH, 3, 3)))
    offsets = colour[:, 0, 3]
    np.testing.assert_array_equal(colour[:, 1, 3], offsets)
    assert np.all(offsets != 0) and 0.05 < offsets.std() < 0.5  # N(0, 0.2^2) draws.
    expected = np.asarray(images) + offsets[:, None, None, None]
    np.testing.assert_allclose(augmented, expected, atol=1e-6)


def test_colour_matrix_application_matches_numpy():
    images = _random_images(seed=12)
    colour = _colour_matrix(jax.random.key(13), 1.0, BATCH, 3, AdaConfig())
    rgb1 = np.concatenate([np.asarray(images), np.ones(images.shape[:3] + (1,))], axis=-1)
    expected = np.einsum("nij,nhwj->nhwi", np.asarray(colour), rgb1)[..., :3]
    np.testing.assert_allclose(ada.apply_colour(images, colour), expected, atol=1e-5)
    grey = images[..., :1]
    expected_grey = (np.asarray(colour)[:, None, None, :3, :] @ np.concatenate(
        [np.repeat(np.asarray(grey), 3, -1), np.ones(grey.shape)], -1
    )[..., None])[..., 0].mean(-1, keepdims=True)
    np.testing.assert_allclose(ada.apply_colour(grey, colour), expected_grey, atol=1e-5)


def test_hue_saturation_lumaflip_properties():
    key = jax.random.key(14)
    luma = matrices.LUMA_AXIS
    hue = np.asarray(_colour_matrix(key, 1.0, BATCH, 3, only("hue")))
    # A rotation about the luma axis: orthogonal, keeps the axis, det 1.
    np.testing.assert_allclose(hue @ luma, np.broadcast_to(luma, (BATCH, 4)), atol=1e-6)
    np.testing.assert_allclose(
        hue[:, :3, :3] @ hue[:, :3, :3].transpose(0, 2, 1),
        np.broadcast_to(np.eye(3), (BATCH, 3, 3)),
        atol=1e-6,
    )
    saturation = np.asarray(_colour_matrix(key, 1.0, BATCH, 3, only("saturation")))
    np.testing.assert_allclose(saturation @ luma, np.broadcast_to(luma, (BATCH, 4)), atol=1e-6)
    chroma = np.array([1.0, -1.0, 0.0, 0.0]) / np.sqrt(2)  # orthogonal to luma: scaled.
    scaled = saturation @ chroma
    gains = scaled[:, 0] / chroma[0]
    np.testing.assert_allclose(scaled, gains[:, None] * chroma, atol=1e-6)
    flip = np.asarray(_colour_matrix(key, 1.0, BATCH, 3, only("lumaflip")))
    flipped = np.abs(flip[:, 0, 0] - 1) > 1e-6
    assert 0 < flipped.sum() < BATCH
    np.testing.assert_allclose(flip[flipped] @ luma, -np.broadcast_to(luma, (flipped.sum(), 4)),
                               atol=1e-6)
    np.testing.assert_allclose(flip[flipped] @ chroma, np.broadcast_to(chroma, (flipped.sum(), 4)),
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Differentiability and jit.


def test_gradients_finite_nonzero_and_consistent():
    images = _random_images(seed=15, batch=2)
    key = jax.random.key(16)
    weights = jax.random.normal(jax.random.key(17), images.shape)

    @jax.jit
    def loss(x):
        return jnp.sum(ada.augment(x, key, 1.0, config=AdaConfig()) * weights)

    grads = jax.grad(loss)(images)
    assert np.all(np.isfinite(grads))
    assert np.all(np.abs(np.asarray(grads)).sum(axis=(1, 2, 3)) > 1e-2)
    # Reverse-mode derivative equals finite differences (the map is affine in the images).
    jax_test_util.check_grads(loss, (images,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


def test_jit_compiles_once_for_varying_p():
    traces = []

    @jax.jit
    def run(images, key, p):
        traces.append(1)
        return ada.augment(images, key, p, config=AdaConfig())

    images = _random_images(seed=18, batch=2)
    key = jax.random.key(19)
    outputs = [run(images, key, jnp.float32(p)) for p in (0.0, 0.5, 1.0)]
    assert len(traces) == 1
    np.testing.assert_allclose(outputs[0], images, atol=1e-6)
    assert np.abs(np.asarray(outputs[2] - images)).max() > 0.1


# ---------------------------------------------------------------------------------------------
# Controller.


def _fed_state(p, sign, count, config):
    state = controller.init_ada_state(config).replace(p=jnp.float32(p))
    return controller.accumulate_real_signs(state, jnp.full((count, 1), sign, jnp.float32))


def test_controller_moves_p_by_the_reference_formula():
    config = AdaConfig()
    batch = 32
    step_size = batch * 4 / (500 * 1000)
    def update(state, iteration):
        return controller.update_ada_state(state, iteration, batch_size=batch, config=config)

    update = jax.jit(update)
    up = update(_fed_state(0.3, 1.0, 16, config), 8)
    np.testing.assert_allclose(up.p, 0.3 + step_size, rtol=1e-6)
    assert float(up.sign_sum) == 0 and float(up.sign_count) == 0
    down = update(_fed_state(0.3, -1.0, 16, config), 8)
    np.testing.assert_allclose(down.p, 0.3 - step_size, rtol=1e-6)
    # Between intervals nothing moves and statistics keep accumulating.
    held = update(_fed_state(0.3, 1.0, 16, config), 7)
    assert float(held.p) == pytest.approx(0.3) and float(held.sign_count) == 16
    # Clipping at both ends.
    assert float(update(_fed_state(0.0, -1.0, 16, config), 4).p) == 0.0
    assert float(update(_fed_state(1.0 - step_size / 2, 1.0, 16, config), 4).p) == 1.0


def test_controller_mean_sign_against_target():
    config = AdaConfig()
    state = controller.init_ada_state(config).replace(p=jnp.float32(0.5))
    # Mean sign 0.5 < 0.6 target over two accumulations: p goes down.
    state = controller.accumulate_real_signs(state, jnp.array([1.0, 1.0, 1.0, -1.0]))
    state = controller.accumulate_real_signs(state, jnp.array([2.5, -0.1, 0.7, 3.0]))
    np.testing.assert_allclose(controller.mean_real_sign(state), 0.5)
    state = controller.update_ada_state(state, 4, batch_size=8, config=config)
    np.testing.assert_allclose(state.p, 0.5 - 8 * 4 / 500_000, rtol=1e-6)


def test_controller_modes():
    fixed = dataclasses.replace(AdaConfig(), mode="fixed", initial_p=0.25)
    state = controller.update_ada_state(_fed_state(0.25, 1.0, 8, fixed), 4, batch_size=32,
                                        config=fixed)
    assert float(state.p) == 0.25 and float(state.sign_count) == 0
    noaug = dataclasses.replace(AdaConfig(), mode="noaug", initial_p=0.5)
    assert float(controller.init_ada_state(noaug).p) == 0.0
    images = _random_images(seed=20, batch=2)
    np.testing.assert_array_equal(ada.augment(images, jax.random.key(0), 1.0, config=noaug), images)


# ---------------------------------------------------------------------------------------------
# Config and bad input.


def test_config_round_trip_and_validation():
    config_dict = default_ada_config()
    assert as_ada_config(config_dict) == AdaConfig()
    assert config_dict.target == 0.6 and config_dict.interval == 4 and config_dict.speed_kimg == 500
    with pytest.raises(ValueError, match="mode"):
        AdaConfig(mode="sometimes")
    with pytest.raises(ValueError, match="xfilp"):
        as_ada_config({"xfilp": 1.0})
    with pytest.raises(ValueError, match="initial_p"):
        AdaConfig(initial_p=1.5)


def test_bad_images_raise():
    with pytest.raises(ValueError, match="channels"):
        ada.augment(jnp.zeros((2, 8, 8, 2)), jax.random.key(0), 0.5, config=AdaConfig())
    with pytest.raises(ValueError, match="N, H, W, C"):
        ada.augment(jnp.zeros((8, 8, 3)), jax.random.key(0), 0.5, config=AdaConfig())
    with pytest.raises(ValueError, match="scalar"):
        ada.augment(jnp.zeros((2, 8, 8, 3)), jax.random.key(0), jnp.ones(2), config=AdaConfig())
