"""`stages.ils_gradients`: the G main loss split into its parts adds up to what the train step
minimises (value and gradient), and the probe's gradient statistics are consistent."""

import jax
import numpy as np
import optax
from train_fixtures import StepUnderTest, tiny_config

from ilsgan_jax.stages import ils_gradients
from ilsgan_jax.systems.layered_terms import ils_weight
from ilsgan_jax.train import phases


def test_parts_add_up_to_the_training_loss_and_gradient():
    config = tiny_config()
    sut = StepUnderTest(config)
    state, trainer = sut.initial_state, sut.trainer
    key = jax.random.key(3)
    parts = ils_gradients.loss_parts_fn(config, trainer)
    sigma = float(ils_weight(config, state.images_seen))
    np.testing.assert_allclose(sigma, config.loss.ils.initial_sigma)

    def training_loss(g_params):
        out = parts(g_params, state.g_buffers, state.d_params, state.ada.p, key)
        return out["adversarial"] + out["mask_terms"] + sigma * out["ils"]

    total, grads = jax.jit(jax.value_and_grad(training_loss))(state.g_params)
    g_main = jax.jit(lambda state, keys: phases.g_main(trainer, state, keys)[1])
    metrics = g_main(state, tuple(jax.random.split(key, 3)))
    np.testing.assert_allclose(total, metrics["g/total"], rtol=1e-5)
    np.testing.assert_allclose(optax.global_norm(grads), metrics["grad_norm/g"], rtol=1e-4)
    out = jax.jit(parts)(state.g_params, state.g_buffers, state.d_params, state.ada.p, key)
    np.testing.assert_allclose(sigma * out["ils"], metrics["g/ils"], rtol=1e-5)
    assert out["ils"] != 0.0


def test_probe_statistics_are_consistent():
    config = tiny_config()
    sut = StepUnderTest(config)
    state = sut.initial_state
    probe = ils_gradients.probe_fn(config, sut.trainer)
    stats = jax.device_get(
        probe(state.g_params, state.g_buffers, state.d_params, state.ada.p, jax.random.key(0))
    )
    for part in ils_gradients.PARTS:
        norms = stats[f"grad_norm/{part}"]
        # every generator parameter belongs to the foreground or the background network
        np.testing.assert_allclose(
            norms["all"] ** 2, norms["foreground"] ** 2 + norms["background"] ** 2, rtol=1e-4
        )
    assert stats["grad_norm/ils"]["all"] > 0 and stats["grad_norm/adversarial"]["all"] > 0
    assert -1.0 <= stats["cosine/ils_adversarial"] <= 1.0
    np.testing.assert_allclose(np.sum(stats["ils_pairs"]), stats["ils"], rtol=1e-5)
    assert 0.0 < stats["mask_coverage"] < 1.0
    mean = ils_gradients._mean([stats, stats])
    assert mean["grad_norm/ils"]["all"] == float(stats["grad_norm/ils"]["all"])
    assert isinstance(mean["ils_pairs"], list) and len(mean["ils_pairs"]) == 2
