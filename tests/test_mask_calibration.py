"""Mask-coverage calibration of the layered generator: the target is hit on the calibration latents
for every seed, held on fresh latents, and only the mask bias changes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import TINY_NETWORK_KWARGS

from ilsgan_jax.models.layered import LayeredGenerator, PlainGenerator
from ilsgan_jax.models.mask_calibration import (
    MASK_CHANNEL,
    calibrate_mask_coverage,
    calibration_inputs,
    mask_bias_path,
    mask_logits,
)

RESOLUTION = 16
Z_DIM = 16
NUM_SAMPLES = 64
NUM_FRESH = 256
TARGET = 0.3
SEEDS = (0, 1, 2, 3)
# Tiny layered generator (16 px, 8-16 channels); a mask logit offset so the test covers it too.
GENERATOR = LayeredGenerator(RESOLUTION, **TINY_NETWORK_KWARGS, mask_logit_offset=-0.5)
CALIBRATION_KEY = jax.random.key(100)


@jax.jit
def init_variables(key):
    return GENERATOR.init({"params": key, "noise": key}, jnp.zeros((1, Z_DIM), jnp.float32))


@jax.jit
def calibrate(variables, key):
    return calibrate_mask_coverage(
        GENERATOR, variables, key, target=TARGET, num_samples=NUM_SAMPLES
    )


@jax.jit
def per_sample_coverage(variables, z, noise_key):
    """[N] mean mask of each sample, from the generator's own output."""
    return GENERATOR.apply(variables, z, rngs={"noise": noise_key})["mask"].mean(axis=(1, 2, 3))


@jax.jit
def logits_and_mask(variables, z, noise_key):
    """The mask logits `[N, R, R]` and the generator's mask `[N, R, R, 1]`."""
    mask = GENERATOR.apply(variables, z, rngs={"noise": noise_key})["mask"]
    return mask_logits(GENERATOR, variables, z, noise_key), mask


@pytest.fixture(scope="module")
def calibrated():
    """seed -> (initial variables, calibrated variables, info)."""
    result = {}
    for seed in SEEDS:
        variables = init_variables(jax.random.key(seed))
        result[seed] = (variables, *calibrate(variables, CALIBRATION_KEY))
    return result


def test_target_on_the_calibration_latents_for_every_seed(calibrated):
    z, noise_key = calibration_inputs(CALIBRATION_KEY, (NUM_SAMPLES, Z_DIM))
    before, after = [], []
    for variables, new_variables, info in calibrated.values():
        before.append(float(per_sample_coverage(variables, z, noise_key).mean()))
        after.append(float(per_sample_coverage(new_variables, z, noise_key).mean()))
        assert float(info["initial_coverage"]) == pytest.approx(before[-1], abs=1e-5)
        assert float(info["calibrated_coverage"]) == pytest.approx(TARGET, abs=1e-5)
    np.testing.assert_allclose(after, TARGET, atol=1e-3, err_msg=f"seeds {SEEDS}")
    # Without the calibration the seeds start far apart (0.31-0.58 here).
    assert max(before) - min(before) > 0.1, before


def test_bias_shifts_every_mask_logit_by_b(calibrated):
    variables, new_variables, info = calibrated[SEEDS[0]]
    z, noise_key = calibration_inputs(jax.random.key(7), (8, Z_DIM))
    logits, _ = logits_and_mask(variables, z, noise_key)
    shifted, mask = logits_and_mask(new_variables, z, noise_key)
    np.testing.assert_allclose(shifted - logits, float(info["mask_logit_bias"]), atol=1e-5)
    np.testing.assert_allclose(jax.nn.sigmoid(shifted)[..., None], mask, atol=1e-6)


def test_target_held_on_fresh_latents(calibrated):
    """Tolerance: 4 standard errors of the difference of two sample means, the calibration's
    (NUM_SAMPLES latents) and this one's (NUM_FRESH), from the per-sample coverage spread."""
    z, noise_key = calibration_inputs(jax.random.key(2024), (NUM_FRESH, Z_DIM))
    for seed, (_, new_variables, _) in calibrated.items():
        coverage = np.asarray(per_sample_coverage(new_variables, z, noise_key))
        tolerance = 4 * coverage.std() * math.sqrt(1 / NUM_SAMPLES + 1 / NUM_FRESH)
        assert abs(coverage.mean() - TARGET) < tolerance, (seed, coverage.mean(), tolerance)
        assert tolerance < 0.1, tolerance


def test_only_the_mask_bias_changes(calibrated):
    variables, new_variables, info = calibrated[SEEDS[0]]
    bias_path = mask_bias_path(GENERATOR)
    old_leaves = jax.tree_util.tree_leaves_with_path(variables)
    new_leaves = dict(jax.tree_util.tree_leaves_with_path(new_variables))
    assert len(old_leaves) == len(new_leaves)
    for path, old in old_leaves:
        names = tuple(entry.key for entry in path)
        new = new_leaves[path]
        if names != bias_path:
            np.testing.assert_array_equal(new, old, err_msg=str(names))
            continue
        expected = np.asarray(old).copy()
        expected[MASK_CHANNEL] += float(info["mask_logit_bias"])
        np.testing.assert_allclose(new, expected, atol=1e-6)
        assert float(info["mask_logit_bias"]) != 0.0


@pytest.mark.parametrize("target", [0.0, 1.0, -0.2, 1.5])
def test_target_outside_open_unit_interval_raises(target):
    variables = init_variables(jax.random.key(0))
    with pytest.raises(ValueError, match="config.model.initial_mask_coverage"):
        calibrate_mask_coverage(GENERATOR, variables, CALIBRATION_KEY, target=target)


def test_generator_without_mask_logit_raises():
    generator = PlainGenerator(RESOLUTION, **TINY_NETWORK_KWARGS)
    with pytest.raises(ValueError, match="config.model.initial_mask_coverage"):
        calibrate_mask_coverage(generator, {}, CALIBRATION_KEY, target=0.3)
