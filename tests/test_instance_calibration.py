"""Union-coverage calibration of the independence-prior generator: the union of the instance
masks, as the generator itself draws it, starts at the target with every instance the same
share, only the providers' mask biases change, and bad settings are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import TINY_NETWORK_KWARGS

from ilsgan_jax.models.instance_calibration import (
    calibrate_union_coverage,
    provider_bias_paths,
    union_coverage_biases,
)
from ilsgan_jax.models.instances import InstanceLayeredGenerator
from ilsgan_jax.models.mask_calibration import MASK_CHANNEL, calibration_inputs

RESOLUTION = 16
Z_DIM = 16
NUM_INSTANCES = 3
NUM_SAMPLES = 16
TARGET = 0.3
GENERATOR = InstanceLayeredGenerator(
    RESOLUTION,
    num_instances=NUM_INSTANCES,
    **TINY_NETWORK_KWARGS,
    max_rotation=0.5,
    scale_range=(0.75, 1.25),
    max_translation=0.25,
    background_resolution=2,
)
CALIBRATION_KEY = jax.random.key(100)
LATENT_SHAPE = (NUM_SAMPLES, NUM_INSTANCES + 1, Z_DIM)


@jax.jit
def init_variables(key):
    return GENERATOR.init(
        {"params": key, "noise": key}, jnp.zeros((1, NUM_INSTANCES + 1, Z_DIM), jnp.float32)
    )


@jax.jit
def calibrate(variables):
    return calibrate_union_coverage(
        GENERATOR, variables, CALIBRATION_KEY, target=TARGET, num_samples=NUM_SAMPLES
    )


@jax.jit
def drawn_masks(variables, z, noise_key):
    """The generator's own laid-out instance masks [N, K] (means) and union mask mean []."""
    layers = GENERATOR.apply(variables, z, rngs={"noise": noise_key})
    return layers["mask"].mean(axis=(0, 2, 3, 4)), layers["union_mask"].mean()


@pytest.fixture(scope="module")
def calibrated():
    variables = init_variables(jax.random.key(0))
    return (variables, *calibrate(variables))


def test_union_and_instances_hit_the_target_as_the_generator_draws_them(calibrated):
    variables, new_variables, info = calibrated
    z, noise_key = calibration_inputs(CALIBRATION_KEY, LATENT_SHAPE)
    instances_before, union_before = drawn_masks(variables, z, noise_key)
    instances, union = drawn_masks(new_variables, z, noise_key)
    # The reference initialisation covers far more than the target (~0.9 here).
    assert float(union_before) > TARGET + 0.3, float(union_before)
    assert float(info["initial_coverage"]) == pytest.approx(float(union_before), abs=1e-5)
    # At initialisation the layout is the identity: what the calibration read is what is drawn.
    assert float(union) == pytest.approx(TARGET, abs=1e-4)
    assert float(info["calibrated_coverage"]) == pytest.approx(TARGET, abs=1e-5)
    np.testing.assert_allclose(instances, info["instance_coverage"], atol=1e-4)
    np.testing.assert_allclose(instances, instances[0], atol=1e-4)  # equal shares
    # Independent instances would each need 1 - 0.7^(1/3) = 0.112; overlap makes it a bit more.
    assert TARGET / NUM_INSTANCES < float(instances[0]) < TARGET, instances
    assert np.ptp(np.asarray(instances_before)) > 0.05, instances_before  # unequal before


def test_only_the_providers_mask_biases_change(calibrated):
    variables, new_variables, info = calibrated
    paths = provider_bias_paths(GENERATOR)
    assert len(paths) == NUM_INSTANCES
    new_leaves = dict(jax.tree_util.tree_leaves_with_path(new_variables))
    changed = 0
    for path, old in jax.tree_util.tree_leaves_with_path(variables):
        names = tuple(entry.key for entry in path)
        new = new_leaves[path]
        if names not in paths:
            np.testing.assert_array_equal(new, old, err_msg=str(names))
            continue
        expected = np.asarray(old).copy()
        expected[MASK_CHANNEL] += float(info["mask_logit_bias"][paths.index(names)])
        np.testing.assert_allclose(new, expected, atol=1e-6)
        changed += 1
    assert changed == NUM_INSTANCES


def test_biases_against_a_numpy_reference():
    """Random logits with different offsets per instance: the union of sigmoid(logit + bias),
    computed in NumPy, is the target, and every instance has the same mean."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, NUM_INSTANCES, 6, 6)) * 2.0 + np.array([2.0, -1.0, 0.5])[
        None, :, None, None
    ]
    biases = np.asarray(union_coverage_biases(jnp.asarray(logits, jnp.float32), 0.4))
    masks = 1.0 / (1.0 + np.exp(-(logits + biases[None, :, None, None])))
    assert (1.0 - np.prod(1.0 - masks, axis=1)).mean() == pytest.approx(0.4, abs=1e-5)
    np.testing.assert_allclose(masks.mean(axis=(0, 2, 3)), masks.mean(), atol=1e-5)
    assert biases[0] < biases[2] < biases[1]  # the instance drawn most opaque is shifted most


def test_shared_provider_and_bad_targets_are_refused():
    shared = InstanceLayeredGenerator(
        RESOLUTION, num_instances=NUM_INSTANCES, share_providers=True, **TINY_NETWORK_KWARGS
    )
    with pytest.raises(ValueError, match="config.model.share_providers"):
        calibrate_union_coverage(shared, {}, CALIBRATION_KEY, target=TARGET)
    for target in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="config.model.initial_mask_coverage"):
            calibrate_union_coverage(GENERATOR, {}, CALIBRATION_KEY, target=target)
