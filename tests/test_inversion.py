"""The PerturbGAN inversion encoder: shapes, losses against a direct computation, learning to invert
a tiny frozen generator, masks from G(E(x)), and the train_encoder workflow's report."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import make_tiny_config

from ilsgan_jax.evaluate import seg_metrics
from ilsgan_jax.models.encoder import Encoder, build_encoder
from ilsgan_jax.stages import inversion
from ilsgan_jax.train import builders
from ilsgan_jax.train.state import create_train_state

RESOLUTION = 16


def tiny_config():
    """runlocal at 16 px with the tiny networks, z_dim 8, and a small encoder trained by latent
    regression only."""
    overrides = {
        "model.z_dim": 8,
        "encoder.channel_base": 256,  # 16 channels at 16 px, 32 at 8 and 4 px
        "encoder.channel_max": 32,
        "encoder.batch_size": 16,
        "encoder.learning_rate": 3e-3,
        "encoder.latent_weight": 1.0,
        "encoder.reconstruction_weight": 0.0,  # latent regression only: fast (tested separately)
        "encoder.eval_batch_size": 64,
        "encoder.log_every_steps": 100,
    }
    return make_tiny_config("perturbgan", f"runlocal,res={RESOLUTION}", overrides)


@pytest.fixture(scope="module")
def frozen():
    """(config, state, networks) with a randomly initialised tiny layered generator."""
    config = tiny_config()
    networks = builders.build_networks(config)
    optimizers = builders.build_optimizers(config)
    state = jax.jit(lambda key: create_train_state(config, networks, optimizers, key))(
        jax.random.key(1)
    )
    return config, jax.device_get(state), networks


def generate(networks, state, z):
    """Layers of the frozen generator (jitted: eager applies are slow on a loaded CPU)."""
    variables = {"params": state.g_ema_params, **state.g_ema_buffers}
    apply = jax.jit(lambda v, latents: networks.generator.apply(v, latents, noise_mode="const"))
    return apply(variables, z)


def test_encoder_shapes_widths_and_bad_input():
    encoder = Encoder(RESOLUTION, 8, channel_base=256, channel_max=32)
    images = jnp.zeros((3, RESOLUTION, RESOLUTION, 3))
    variables = jax.jit(encoder.init)(jax.random.key(0), images)
    apply = jax.jit(encoder.apply)
    assert apply(variables, images).shape == (3, 8)
    params = variables["params"]
    assert params["fromrgb"]["kernel"].shape == (1, 1, 3, 16)  # 256 / 16
    assert params["block16"]["conv1"]["kernel"].shape == (3, 3, 16, 32)  # min(256 / 8, 32)
    assert params["block8"]["conv1"]["kernel"].shape == (3, 3, 32, 32)
    assert "block4" not in params
    assert params["fc"]["kernel"].shape == (4 * 4 * 32, 32)
    # Per sample: one image's code does not depend on the rest of the batch.
    noise = jax.random.uniform(jax.random.key(1), (3, RESOLUTION, RESOLUTION, 3), minval=-1)
    together = apply(variables, noise)
    alone = apply(variables, noise[1:2])
    np.testing.assert_allclose(together[1:2], alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="images must be"):
        encoder.apply(variables, jnp.zeros((2, 8, 8, 3)))
    config = tiny_config()
    del config.encoder
    with pytest.raises(ValueError, match="config.encoder"):
        build_encoder(config)


def test_inversion_losses_match_a_direct_computation(frozen):
    config, state, networks = frozen
    encoder = build_encoder(config)
    z = jax.random.normal(jax.random.key(2), (4, config.model.z_dim))
    params = jax.jit(encoder.init)(jax.random.key(3), jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))[
        "params"
    ]
    losses = inversion.make_inversion_losses(
        encoder, networks, latent_weight=0.7, reconstruction_weight=0.3
    )
    g_variables = inversion.frozen_generator_variables(state)
    total, metrics = jax.jit(losses)(params, g_variables, z)

    target = jax.device_get(generate(networks, state, z))
    z_hat = np.asarray(jax.jit(encoder.apply)({"params": params}, target["composite"]))
    recon = jax.device_get(generate(networks, state, z_hat))
    latent = np.mean((z_hat - np.asarray(z)) ** 2)
    l1 = np.mean(np.abs(recon["composite"] - target["composite"]))
    pred, true = recon["mask"][..., 0] > 0.5, target["mask"][..., 0] > 0.5
    inter, union = (pred & true).sum((1, 2)), (pred | true).sum((1, 2))
    iou = np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0))
    np.testing.assert_allclose(float(metrics["latent_mse"]), latent, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["reconstruction_l1"]), l1, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["mask_iou"]), iou, rtol=1e-6)
    np.testing.assert_allclose(float(total), 0.7 * latent + 0.3 * l1, rtol=1e-4)

    # The reconstruction term alone trains E through the frozen G.
    recon_only = inversion.make_inversion_losses(
        encoder, networks, latent_weight=0.0, reconstruction_weight=1.0
    )
    grads, _ = jax.jit(jax.grad(recon_only, has_aux=True))(params, g_variables, z)
    norms = [float(jnp.linalg.norm(leaf)) for leaf in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and max(norms) > 0


def test_encoder_learns_to_invert_a_frozen_generator(frozen):
    """300 Adam steps bring the held-out latent error below half of its initial value, and the
    generator's parameters are untouched."""
    config, state, networks = frozen
    before = jax.tree.map(np.copy, state.g_ema_params)
    variables, history = inversion.train_encoder(config, state, networks, steps=300, seed=0)
    assert [entry["step"] for entry in history] == [0, 100, 200, 300]
    initial, final = history[0]["latent_mse"], history[-1]["latent_mse"]
    assert initial > 0.5  # an untrained encoder is far from z (E[z^2] = 1 per dimension)
    assert final < 0.5 * initial, history
    jax.tree.map(np.testing.assert_array_equal, state.g_ema_params, before)

    # Masks of G(E(x)): batched with a padded last batch == one direct computation.
    z = jax.random.normal(jax.random.key(5), (5, config.model.z_dim))
    images = np.asarray(generate(networks, state, z)["composite"])
    masks = inversion.encoder_masks(config, variables, state, networks, images, batch_size=2)
    z_hat = jax.jit(build_encoder(config).apply)(variables, jnp.asarray(images))
    direct = np.asarray(generate(networks, state, z_hat)["mask"][..., 0]) > 0.5
    assert masks.shape == (5, RESOLUTION, RESOLUTION) and masks.dtype == np.bool_
    np.testing.assert_array_equal(masks, direct)
    with pytest.raises(ValueError, match="config.data.resolution"):
        inversion.encoder_masks(config, variables, state, networks, images[:, :8, :8])


def test_score_encoder_writes_the_report_and_reloads(frozen, tmp_path, monkeypatch):
    config, state, networks = frozen
    config = config.copy_and_resolve_references()
    config.encoder.num_steps = 3
    rng = np.random.default_rng(0)
    test_images = rng.uniform(-1, 1, (6, RESOLUTION, RESOLUTION, 3)).astype(np.float32)
    test_masks = (rng.uniform(size=(6, RESOLUTION, RESOLUTION)) > 0.5).astype(np.float32)
    monkeypatch.setattr(inversion, "restore_train_state", lambda c, w: (state, 7, networks))
    monkeypatch.setattr(inversion, "load_eval_split", lambda c: (test_images, test_masks))

    report = inversion.score_encoder(config, str(tmp_path))
    with open(tmp_path / "encoder" / "report.json") as file:
        written = json.load(file)
    assert written["test"] == pytest.approx(report["test"])
    assert written["gan_step"] == 7 and written["encoder_steps"] == 3
    assert (tmp_path / "encoder" / "previews.png").exists()

    variables = inversion.load_encoder(config, str(tmp_path))
    masks = inversion.encoder_masks(config, variables, state, networks, test_images)
    expected = seg_metrics.segmentation_metrics(masks, test_masks)
    assert report["test"] == pytest.approx(expected)
    assert report["all_foreground_iou"] == pytest.approx(test_masks.mean(axis=(1, 2)).mean())

    # A second run loads the saved encoder instead of training: same metrics, no history.
    again = inversion.score_encoder(config, str(tmp_path))
    assert again["encoder_steps"] is None and again["test"] == pytest.approx(report["test"])
