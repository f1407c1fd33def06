"""configs/perturbgan.py: the values of the paper / official code, its optimisers and training
loop (D step first), and a WGAN-GP train step on tiny sizes."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from configs.perturbgan import get_config
from ilsgan_jax.data.synthetic_render import render_synthetic_objects
from ilsgan_jax.objectives import gan_losses
from ilsgan_jax.objectives.schedules import ema_beta
from ilsgan_jax.train import builders, phases
from ilsgan_jax.train.state import create_train_state
from ilsgan_jax.train.step import PhasedTrainStep, make_trainer


def test_paper_values_for_every_loss():
    for loss in ("ns_r1", "wgan_gp"):
        config = get_config(f"loss={loss}")
        assert config.system == "perturbgan"
        assert config.loss.adversarial == loss
        assert not config.loss.ils.enabled
        assert config.loss.xint_max == 0.125
        assert config.loss.min_msize == 0.25
        assert config.loss.bin_weight == 2.0 and config.loss.msize_weight == 2.0
        assert config.loss.bg_contrast == 0.0
        assert config.loss.wgan_gp_weight == 10.0
    assert get_config("contrast=1").loss.bg_contrast == 0.3
    # The drift the train step uses is the shared objective's default (--real_penalty 0.001).
    assert gan_losses.WGAN_DRIFT_WEIGHT == 0.001


def test_ns_r1_keeps_the_stylegan2_recipe():
    config = get_config("dataset=cub,res=128")
    assert (config.data.name, config.data.resolution) == ("cub", 128)
    assert config.optim.learning_rate == 0.0025
    assert config.loss.g_reg_interval == 4 and config.loss.r1_interval == 16
    assert config.ada.mode != "noaug"
    assert config.ema.rampup == 0.05
    # ILSGAN's loop: G step first, no random crops, minibatch-std groups of 4.
    assert not config.train.d_step_first
    assert config.data.random_crop_scale == 1.0 and config.model.mbstd_group_size == 4


def test_wgan_gp_uses_the_original_optimiser_and_ema():
    config = get_config("loss=wgan_gp,res=64")
    assert config.optim.learning_rate == 0.001
    assert get_config("loss=wgan_gp,res=128").optim.learning_rate == 0.0015  # its --sched
    assert get_config("loss=wgan_gp,res=256").optim.learning_rate == 0.002
    assert (config.optim.beta1, config.optim.beta2) == (0.0, 0.99)
    assert config.loss.g_reg_interval is None
    assert config.ada.mode == "noaug"
    assert config.ema.rampup is None
    # Per-step EMA decay 0.999 (perturbed-seg `accumulate`), through the framework's schedule,
    # at any point of training (no ramp-up).
    for images_seen in (0, 32_000, 5_000_000):
        beta = ema_beta(
            images_seen,
            batch_size=config.train.batch_size,
            ema_kimg=config.ema.kimg,
            ema_rampup=config.ema.rampup,
        )
        np.testing.assert_allclose(float(beta), 0.999, rtol=1e-6)


def test_wgan_gp_uses_the_original_training_loop():
    """perturbed-seg train.py: D step, then G step; `--org_to_crop 1.125`; stylegan.py's
    minibatch-std over the whole batch."""
    config = get_config("loss=wgan_gp,res=64")
    assert config.train.d_step_first
    assert config.data.random_crop_scale == 1.125
    assert config.model.mbstd_group_size == 0
    builders.validate_config(config, 1)
    builders.validate_config(config, 8)  # group 0 spans the devices: no divisibility to check


def test_variants_pass_through_and_bad_variants_fail():
    local = get_config("runlocal,loss=wgan_gp")
    assert local.data.resolution == 32 and local.model.channel_max == 64
    assert local.encoder.num_steps < get_config().encoder.num_steps
    with pytest.raises(ValueError, match="perturbgan.py: unknown variant 'ils'"):
        get_config("ils=1")
    with pytest.raises(ValueError, match=r"perturbgan\.py: loss='hinge' is not one of"):
        get_config("loss=hinge")


def _first_adam_update(optimizer, params, grads):
    state = optimizer.init(params)
    updates, _ = optimizer.update(grads, state, params)
    return updates


@pytest.mark.parametrize(
    "loss, g_lr, d_lr",
    [
        ("wgan_gp", 0.001, 0.001),  # the original: plain Adam(0.001, (0, 0.99)) for G and D
        ("ns_r1", 0.0025 * 4 / 5, 0.0025 * 16 / 17),  # StyleGAN2 lazy-regularisation rescaling
    ],
)
def test_built_optimisers_step_sizes(loss, g_lr, d_lr):
    """Adam with beta1 = 0 moves every parameter by lr * g / (|g| + eps) on its first step."""
    optimizers = builders.build_optimizers(get_config(f"loss={loss}"))
    params = {"w": jnp.zeros(5)}
    grads = {"w": jnp.asarray([0.5, -2.0, 3.0, -0.1, 1.0])}
    expected = -np.sign(np.asarray(grads["w"]))
    for optimizer, lr in ((optimizers.generator, g_lr), (optimizers.discriminator, d_lr)):
        update = np.asarray(_first_adam_update(optimizer, params, grads)["w"])
        np.testing.assert_allclose(update, lr * expected, rtol=1e-5)


def _tiny_state_and_reals(config, batch):
    trainer = make_trainer(config)
    state = jax.jit(
        lambda key: create_train_state(config, trainer.networks, trainer.optimizers, key)
    )(jax.random.key(0))
    rendered = render_synthetic_objects(np.random.default_rng(0), batch, 16)["image"]
    return trainer, state, rendered.astype(np.float32) / 127.5 - 1.0


@pytest.mark.slow  # compiles the main phase and its phases by hand (~2 min on 2 cores)
def test_d_step_first_runs_g_main_against_the_updated_d(tiny_config):
    """With train.d_step_first the main phase is the D phase (fakes of the current G) followed
    by G main against the updated D, run by hand with the same keys. G main against the old D
    gives other scores, so a main phase that kept G first fails here."""
    config = tiny_config(
        "perturbgan", "runlocal,res=16", {"train.batch_size": 4, "train.d_step_first": True}
    )
    trainer, state, reals = _tiny_state_and_reals(config, 4)

    @jax.jit
    def by_hand(state, reals):
        g_keys, d_keys = phases.phase_keys(state)
        after_d, _, d_metrics = phases.d_phase(trainer, state, reals, d_keys)
        after_g, g_metrics = phases.g_phase(trainer, after_d, g_keys)
        _, g_against_old_d = phases.g_main(trainer, state, g_keys)
        return after_g, d_metrics, g_metrics, g_against_old_d

    after_g, d_metrics, g_metrics, g_against_old_d = jax.device_get(by_hand(state, reals))
    new_state, metrics = jax.device_get(
        jax.jit(functools.partial(phases.main_phase, trainer))(state, reals)
    )
    for name in ("scores/fake_g", "g/total", "d/loss", "scores/fake", "scores/real"):
        expected = {**g_metrics, **d_metrics}[name]
        np.testing.assert_allclose(metrics[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    moved = abs(g_metrics["scores/fake_g"] - g_against_old_d["scores/fake_g"])
    assert moved > 1e-3, moved  # D's update is visible to G
    for got, want in zip(
        jax.tree.leaves((new_state.g_params, new_state.d_params)),
        jax.tree.leaves((after_g.g_params, after_g.d_params)),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # compiles a WGAN-GP train step (~2-3 min on 2 cores)
def test_wgan_gp_train_step_compiles_and_is_finite(tiny_config):
    config = tiny_config(
        "perturbgan", "loss=wgan_gp,contrast=1,runlocal,res=16", {"train.batch_size": 8}
    )
    trainer = make_trainer(config)
    state = jax.jit(
        lambda key: create_train_state(config, trainer.networks, trainer.optimizers, key)
    )(jax.random.key(0))
    step = PhasedTrainStep(trainer, Mesh(np.array(jax.devices()[:1]), ("data",)))
    rendered = render_synthetic_objects(np.random.default_rng(0), 8, 16)["image"]
    reals = rendered.astype(np.float32) / 127.5 - 1.0
    d_before = jax.device_get(state.d_params)
    for index in range(2):
        state, metrics = step(state, reals, index)
    metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert "d/r1_penalty" not in metrics  # WGAN-GP has no R1 phase
    assert metrics["g/ils"] == 0.0
    assert int(state.step) == 2
    # D loss = mean(D(f) - D(r) + 0.001 D(r)^2) + 10 GP
    #        >= mean D(f) - mean D(r) + 0.001 mean(D(r))^2
    # (Jensen and GP >= 0): fails if the penalty or the drift entered with the wrong sign.
    lower = metrics["scores/fake"] - metrics["scores/real"] + 0.001 * metrics["scores/real"] ** 2
    assert metrics["d/loss"] >= lower - 1e-5
    # G's adversarial loss is -D(fake) (not softplus), as in the original.
    np.testing.assert_allclose(metrics["g/adversarial"], -metrics["scores/fake_g"], rtol=1e-5)
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), state.d_params, d_before)
    assert max(jax.tree.leaves(moved)) > 0
