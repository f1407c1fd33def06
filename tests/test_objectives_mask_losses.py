"""Mask regularisers against NumPy."""

import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.objectives import mask_losses


def test_binarisation_and_min_size_match_numpy():
    rng = np.random.default_rng(0)
    mask = rng.uniform(size=(4, 6, 5, 1)).astype(np.float32)
    mask[1] *= 0.2  # mean coverage below 0.25: the min-size term is active
    mask[2] = 0.9 + 0.1 * mask[2]  # nearly full: the symmetric term is active
    coverage = mask.mean(axis=(1, 2, 3))

    np.testing.assert_allclose(np.asarray(mask_losses.binarisation_loss(jnp.asarray(mask))),
                               np.minimum(mask, 1 - mask).mean(axis=(1, 2, 3)), rtol=1e-6)
    plain = np.maximum(0.25 - coverage, 0)
    symmetric = plain + np.maximum(0.25 - (1 - coverage), 0)
    got_plain = np.asarray(mask_losses.min_size_loss(jnp.asarray(mask), min_size=0.25))
    got_symmetric = np.asarray(mask_losses.min_size_loss(jnp.asarray(mask), symmetric=True))
    np.testing.assert_allclose(got_plain, plain, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_symmetric, symmetric, rtol=1e-6, atol=1e-7)
    assert got_plain[1] > 0 and got_plain[2] == 0 and got_symmetric[2] > 0


def test_mask_shape_is_checked():
    with pytest.raises(ValueError, match="mask"):
        mask_losses.binarisation_loss(jnp.zeros((2, 4, 4, 3)))
