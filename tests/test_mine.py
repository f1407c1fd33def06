"""MINE: DV bound formula, and estimates on Gaussians with known mutual information."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.evaluate import mine


def _small_config(**overrides):
    config = mine.default_mine_config()
    config.hidden_sizes = (64,)
    config.learning_rate = 1e-3
    config.batch_size = 256
    config.num_steps = 1500
    for name, value in overrides.items():
        config[name] = value
    return config


def _correlated_gaussians(seed, rho, count=4000, dim=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, dim))
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=(count, dim))
    true_mi = -0.5 * np.log(1 - rho**2) * dim
    return x.astype(np.float32), y.astype(np.float32), true_mi


def test_dv_bound_matches_numpy():
    joint = np.array([1.0, 2.0, 0.5], np.float32)
    marginal = np.array([0.1, -0.3, 2.0, 0.7], np.float32)
    expected = joint.mean() - np.log(np.exp(marginal).mean())
    np.testing.assert_allclose(mine.donsker_varadhan_bound(jnp.asarray(joint),
                                                           jnp.asarray(marginal)), expected,
                               rtol=1e-6)


@pytest.mark.parametrize("ema_decay", [None, 0.99])
def test_estimate_approaches_true_mi_of_correlated_gaussians(ema_decay):
    x, y, true_mi = _correlated_gaussians(0, rho=0.8)  # 2 dims: 1.022 nats
    result = mine.estimate_mutual_information(jax.random.key(0), x, y,
                                              _small_config(ema_decay=ema_decay))
    assert abs(result["mi"] - true_mi) < 0.2, (result, true_mi)


def test_estimate_is_near_zero_for_independent_samples():
    x, y, true_mi = _correlated_gaussians(1, rho=0.0)
    assert true_mi == 0.0
    result = mine.estimate_mutual_information(jax.random.key(1), x, y, _small_config())
    assert abs(result["mi"]) < 0.08, result


def test_unpaired_inputs_raise():
    with pytest.raises(ValueError, match="paired"):
        mine.estimate_mutual_information(jax.random.key(0), np.zeros((300, 2)),
                                         np.zeros((200, 2)), _small_config())
