"""Sigma schedule, EMA beta and hyperparameter rules against formulas written independently."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.objectives import schedules


def test_sigma_switches_after_400_kimg():
    values = [float(schedules.ils_sigma(n)) for n in (0, 400_000, 400_999, 401_000, 2_000_000)]
    np.testing.assert_allclose(values, [0.2, 0.2, 0.2, 1.0, 1.0], rtol=1e-7)
    learned = schedules.ILS_PRESETS["ILS_learnL"]
    for nimg in (0, 400_000, 401_000):
        value = schedules.ils_sigma(nimg, initial_sigma=learned["initial_sigma"],
                                    sigma=learned["sigma"])
        np.testing.assert_allclose(float(value), 1e-3, rtol=1e-6)
    assert float(schedules.ils_sigma(1000, initial_enabled=False)) == 0.0
    # jit-friendly: a traced images-seen counter gives the same values
    jitted = jax.jit(lambda n: schedules.ils_sigma(n))
    np.testing.assert_allclose(float(jitted(jnp.int32(401_000))), 1.0)
    np.testing.assert_allclose(float(jitted(jnp.int32(400_000))), 0.2)


def reference_late_sigma(kimg: int, strategy: str, sigma: float = 1.0) -> float:
    if strategy == "cool_down":
        return [sigma, 0, 0, 0][int((kimg - 400 - 1) / 200) % 4]
    return 0.5 * sigma * (1 + math.cos(math.pi * (kimg / 400)))


@pytest.mark.parametrize("strategy", ["cool_down", "cos"])
def test_other_sigma_strategies(strategy):
    for kimg in (401, 600, 601, 800, 1200, 1201, 1350, 1401, 3000):
        got = float(schedules.ils_sigma(kimg * 1000 + 123, strategy=strategy))
        np.testing.assert_allclose(got, reference_late_sigma(kimg, strategy), atol=1e-6)
    np.testing.assert_allclose(float(schedules.ils_sigma(5000, strategy=strategy)), 0.2)
    with pytest.raises(ValueError, match="strategy"):
        schedules.ils_sigma(0, strategy="pulse")


def test_ema_beta_matches_formula():
    batch = 32
    for cur_nimg in (0, 32, 10_000, 200_000, 5_000_000):
        half_life_images = 10 * batch / 32 * 1000
        ramped = min(half_life_images, cur_nimg * 0.05)
        expected = 0.5 ** (batch / max(ramped, 1e-8))
        got = float(schedules.ema_beta(cur_nimg, batch_size=batch))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)
    # without ramp-up and for another batch size
    np.testing.assert_allclose(float(schedules.ema_beta(0, batch_size=8, ema_rampup=None)),
                               0.5 ** (8 / 2500.0), rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(
        lambda n: schedules.ema_beta(n, batch_size=32))(jnp.int32(100_000))),
        0.5 ** (32 / 5000.0), rtol=1e-6)


def test_lazy_adam_and_gamma():
    lr, betas = schedules.lazy_regularisation_adam(0.0025, (0.0, 0.99), 16)
    np.testing.assert_allclose(lr, 0.0025 * 16 / 17)
    np.testing.assert_allclose(betas, (0.0, 0.99 ** (16 / 17)))
    lr, betas = schedules.lazy_regularisation_adam(0.0025, (0.0, 0.99), 4)
    np.testing.assert_allclose((lr, betas[1]), (0.002, 0.99**0.8))
    assert schedules.lazy_regularisation_adam(0.0025, (0.0, 0.99), None) == (0.0025, (0.0, 0.99))
    np.testing.assert_allclose(schedules.r1_gamma_heuristic(64, 32), 0.0256)
    np.testing.assert_allclose(schedules.r1_gamma_heuristic(128, 32), 0.1024)


def test_ils_warmup_end_is_configurable():
    values = [float(schedules.ils_sigma(n, warmup_kimg=4)) for n in (0, 4_999, 5_000, 80_000)]
    np.testing.assert_allclose(values, [0.2, 0.2, 1.0, 1.0])
    cool = [float(schedules.ils_sigma(k * 1000, strategy="cool_down", warmup_kimg=4))
            for k in (5, 204, 205, 805)]
    assert cool == [1.0, 1.0, 0.0, 1.0]


def test_linear_rampup_rises_from_zero_to_one():
    nimg = np.array([0, 1000, 5000, 10_000, 20_000, 10**6])
    got = np.asarray(jax.jit(lambda n: schedules.linear_rampup(n, 10.0))(nimg))
    np.testing.assert_allclose(got, [0.0, 0.1, 0.5, 1.0, 1.0, 1.0], atol=1e-7)
    # No ramp: full weight from the first image.
    assert float(schedules.linear_rampup(0, 0.0)) == 1.0
    with pytest.raises(ValueError, match="rampup_kimg"):
        schedules.linear_rampup(0, -1.0)


def test_linear_rampup_waits_for_its_start():
    nimg = np.array([0, 29_999, 30_000, 35_000, 40_000, 10**6])
    got = np.asarray(jax.jit(lambda n: schedules.linear_rampup(n, 10.0, start_kimg=30.0))(nimg))
    np.testing.assert_allclose(got, [0.0, 0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    # No ramp after the start: a step from 0 to 1.
    step = [float(schedules.linear_rampup(n, 0.0, start_kimg=30.0)) for n in (29_999, 30_000)]
    assert step == [0.0, 1.0]
    with pytest.raises(ValueError, match="start_kimg"):
        schedules.linear_rampup(0, 1.0, start_kimg=-1.0)
