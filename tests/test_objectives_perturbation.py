"""Composite, layer shift and contrast jitter against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.nn import composite as composite_lib
from ilsgan_jax.objectives import perturbation


def numpy_blit(image: np.ndarray, tx: int, ty: int) -> np.ndarray:
    """The reference pixel_blit slice assignment for one NHWC sample, written as loops of slices."""
    height, width = image.shape[:2]
    out = np.zeros_like(image)
    if abs(tx) >= width or abs(ty) >= height:  # nothing left (the reference never shifts this far)
        return out
    out[max(0, ty) : min(height, ty + height), max(0, tx) : min(width, tx + width)] = image[
        max(0, -ty) : min(height, -ty + height), max(0, -tx) : min(width, -tx + width)
    ]
    return out


def test_composite_matches_numpy():
    rng = np.random.default_rng(0)
    fg = rng.uniform(-1, 1, (2, 5, 6, 3)).astype(np.float32)
    bg = rng.uniform(-1, 1, (2, 5, 6, 3)).astype(np.float32)
    mask = rng.uniform(0, 1, (2, 5, 6, 1)).astype(np.float32)
    expected = mask * fg + (1 - mask) * bg
    got = composite_lib.composite(jnp.asarray(fg), jnp.asarray(mask), jnp.asarray(bg))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        composite_lib.composite(jnp.asarray(fg), jnp.asarray(mask[:, :4]), jnp.asarray(bg))


@pytest.mark.parametrize("height,width", [(12, 20), (16, 16), (9, 7)])
def test_shift_matches_numpy_loop_with_extremes(height, width):
    rng = np.random.default_rng(height * 100 + width)
    xint_max = 0.125
    max_shift = int(round(xint_max * width))
    extremes = [(max_shift, -max_shift), (-max_shift, max_shift), (0, 0), (max_shift, max_shift),
                (-max_shift, -max_shift)]
    random_offsets = [tuple(rng.integers(-max_shift, max_shift + 1, 2)) for _ in range(5)]
    offsets = np.array(extremes + random_offsets + [(width, 0), (0, -height - 3)], np.int32)
    batch = len(offsets)
    rgb = rng.normal(size=(batch, height, width, 3)).astype(np.float32)
    mask = rng.uniform(size=(batch, height, width, 1)).astype(np.float32)

    shifted_rgb, shifted_mask = jax.jit(perturbation.shift_layers)([rgb, mask], offsets)
    for n, (tx, ty) in enumerate(offsets):
        np.testing.assert_array_equal(np.asarray(shifted_rgb[n]), numpy_blit(rgb[n], tx, ty))
        np.testing.assert_array_equal(np.asarray(shifted_mask[n]), numpy_blit(mask[n], tx, ty))
    # positive tx moves content right: column 0 of the input lands at column tx.
    n = 3  # offset (+max, +max)
    tx, ty = offsets[n]
    np.testing.assert_array_equal(np.asarray(shifted_rgb[n, ty, tx]), rgb[n, 0, 0])


def test_shift_offsets_from_eps_round_like_torch():
    eps = np.array([[1.0, -1.0], [0.0, 0.0], [0.2, -0.2], [-1.0, 1.0], [0.5, 0.3]], np.float32)
    width = 20  # 0.125 * 20 * 0.2 = 0.5 exactly: half-to-even rounds to 0
    got = np.asarray(
        perturbation.shift_offsets(jnp.asarray(eps), xint_max=0.125, bg_contrast=0.0, width=width)
    )
    expected = np.round(eps * np.float32(0.125) * np.float32(width)).astype(np.int32)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[0], [2, -2])  # 2.5 -> 2 and -2.5 -> -2 (half to even)
    np.testing.assert_array_equal(got[2], [0, 0])
    # with the contrast entry first, the shift entries are columns 1 and 2
    eps3 = np.concatenate([np.full((5, 1), 0.7, np.float32), eps], axis=1)
    got3 = perturbation.shift_offsets(jnp.asarray(eps3), xint_max=0.125, bg_contrast=0.3, width=20)
    np.testing.assert_array_equal(np.asarray(got3), expected)


def test_shift_gradient_is_the_inverse_shift():
    rng = np.random.default_rng(3)
    images = jnp.asarray(rng.normal(size=(3, 8, 10, 2)).astype(np.float32))
    weights = rng.normal(size=(3, 8, 10, 2)).astype(np.float32)
    offsets = jnp.asarray([[2, -1], [-3, 3], [0, 0]], jnp.int32)

    def weighted_sum(x):
        return jnp.sum(perturbation.shift_layers([x], offsets)[0] * weights)

    gradient = np.asarray(jax.grad(weighted_sum)(images))
    for n, (tx, ty) in enumerate(np.asarray(offsets)):
        np.testing.assert_allclose(gradient[n], numpy_blit(weights[n], -tx, -ty), atol=1e-6)


def test_sample_perturbation_layout():
    key = jax.random.key(0)
    eps = perturbation.sample_perturbation(key, 64, xint_max=0.125, bg_contrast=0.3)
    assert eps.shape == (64, 3) and eps.dtype == jnp.float32
    assert float(eps.min()) >= -1.0 and float(eps.max()) < 1.0 and float(eps.min()) < -0.5
    assert perturbation.sample_perturbation(key, 4, xint_max=0.125, bg_contrast=0.0).shape == (4, 2)
    assert perturbation.sample_perturbation(key, 4, xint_max=0.0, bg_contrast=0.0).shape == (4, 0)


def test_contrast_jitter_matches_numpy():
    rng = np.random.default_rng(5)
    bg = rng.uniform(-1, 1, (3, 6, 7, 3)).astype(np.float32)
    eps = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
    got = perturbation.contrast_jitter(jnp.asarray(bg), jnp.asarray(eps), xint_max=0.125,
                                       bg_contrast=0.3)
    mean = bg.mean(axis=(1, 2), keepdims=True)
    low = bg.min(axis=(1, 2), keepdims=True)
    high = bg.max(axis=(1, 2), keepdims=True)
    factor = 1 + eps[:, 0, None, None, None] * 0.3
    expected = np.clip((bg - mean) * factor + mean, low, high)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, bg)


def test_perturb_layers_shifts_fg_and_mask_only():
    rng = np.random.default_rng(7)
    layers = {
        "fg_rgb": jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)),
        "mask": jnp.asarray(rng.uniform(0, 1, (4, 16, 16, 1)).astype(np.float32)),
        "bg_rgb": jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)),
    }
    eps = perturbation.sample_perturbation(jax.random.key(1), 4, xint_max=0.125, bg_contrast=0.0)
    out = jax.jit(lambda l, e: perturbation.perturb_layers(l, e, xint_max=0.125, bg_contrast=0.0))(
        layers, eps
    )
    offsets = np.round(np.asarray(eps) * np.float32(0.125) * 16).astype(int)
    for n, (tx, ty) in enumerate(offsets):
        fg = numpy_blit(np.asarray(layers["fg_rgb"][n]), tx, ty)
        mask = numpy_blit(np.asarray(layers["mask"][n]), tx, ty)
        np.testing.assert_array_equal(np.asarray(out["fg_rgb"][n]), fg)
        np.testing.assert_array_equal(np.asarray(out["mask"][n]), mask)
        bg = np.asarray(layers["bg_rgb"][n])
        np.testing.assert_allclose(np.asarray(out["composite"][n]), mask * fg + (1 - mask) * bg,
                                   rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out["bg_rgb"]), np.asarray(layers["bg_rgb"]))
    with pytest.raises(ValueError, match="eps"):
        perturbation.perturb_layers(layers, eps, xint_max=0.125, bg_contrast=0.3)
