"""Labels4Free: alpha network, frozen generator, background path, gradients, two-stage run.

- The bicubic 2x upsampling (align_corners) equals TF1's `resize_bicubic(align_corners=True)`
  (the same Keys a = -0.75 kernel as PyTorch's), and the alpha network equals a NumPy + TF
  re-computation of the reference's `bg_extractor` wiring; masks lie in (0, 1).
- The background pass (4x4 features zeroed) is deterministic under constant noise, differs from
  the foreground, does not depend on the 4x4 constant at all, and equals the frozen generator
  called with `zero_const_features=True`; truncation applies to the foreground only.
- Gradients: exactly zero for every frozen weight, finite and matching central differences for
  the alpha network.
- Two stages through `train_and_evaluate` (tiny stylegan2 -> labels4free on synthetic data): the
  frozen generator in the final state equals the stylegan2 EMA generator bit for bit, the alpha
  network moved, its EMA follows 0.5 ** (32 / 10000) per step, the G optimiser holds the alpha
  network only, the logged G loss includes the background-area term, and the sample grid in
  workdir/samples has a (grey) mask row.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from configs import labels4free as labels4free_config
from configs import stylegan2 as stylegan2_config
from ilsgan_jax.models.alpha_network import (
    AlphaNetwork,
    Labels4FreeGenerator,
    bicubic_matrix,
    upsample_bicubic_2x,
)
from ilsgan_jax.systems import labels4free
from ilsgan_jax.train import builders, loop
from ilsgan_jax.train.restore import restore_train_state
from ilsgan_jax.train.state import create_train_state

pytestmark = pytest.mark.timeout(900)

RES = 16
Z_DIM = 16
TINY = dict(w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)


def shrink(config, data_dir: str, num_steps: int):
    config.model.channel_base = TINY["channel_base"]
    config.model.channel_max = TINY["channel_max"]
    config.model.z_dim = Z_DIM
    config.model.w_dim = TINY["w_dim"]
    config.model.mapping_layers = TINY["mapping_layers"]
    config.model.mbstd_group_size = 1  # batch 8 = one image per simulated device
    config.train.batch_size = 8
    config.train.total_kimg = num_steps * 8 / 1000.0
    config.train.log_every_steps = num_steps
    config.train.checkpoint_every_steps = num_steps
    config.train.sample_every_steps = 0
    config.train.eval_every_kimg = 0.0
    config.train.progress_bar = False
    config.train.time_budget_minutes = 0.0
    config.train.num_sample_images = 4
    config.data.data_dir = data_dir
    config.data.synthetic_train_size = 200
    config.data.synthetic_test_size = 50
    config.loss.r1_interval = 2  # the short runs cross a lazy-R1 step
    return config


# ---------------------------------------------------------------------------------------------
# Alpha network
# ---------------------------------------------------------------------------------------------
def _keys(distance, a=-0.75):
    d = abs(distance)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a if d < 2 else 0.0


def _numpy_bicubic_2x(images):
    """Direct 2-D evaluation, pixel by pixel: 4x4 clamped taps, aligned corners, a = -0.75."""
    n, h, w, c = images.shape
    out = np.zeros((n, 2 * h, 2 * w, c), np.float64)
    for i in range(2 * h):
        y = i * (h - 1) / (2 * h - 1)
        for j in range(2 * w):
            x = j * (w - 1) / (2 * w - 1)
            for dy in range(-1, 3):
                for dx in range(-1, 3):
                    weight = _keys(dy - (y - np.floor(y))) * _keys(dx - (x - np.floor(x)))
                    row = min(max(int(np.floor(y)) + dy, 0), h - 1)
                    col = min(max(int(np.floor(x)) + dx, 0), w - 1)
                    out[:, i, j] += weight * images[:, row, col]
    return out


def test_bicubic_upsampling_matches_direct_evaluation_and_tf1():
    images = np.random.default_rng(0).normal(size=(2, 4, 5, 3)).astype(np.float32)
    ours = np.asarray(upsample_bicubic_2x(jnp.asarray(images)))
    np.testing.assert_allclose(ours, _numpy_bicubic_2x(images), atol=1e-5)
    # TF1's legacy kernel (PyTorch's convention: align_corners, a = -0.75) tabulates its weights
    # at 1/1024 steps, hence the looser tolerance; a = -0.5 or half-pixel centres are ~1e-2 off.
    reference = tf.compat.v1.image.resize_bicubic(images, [8, 10], align_corners=True).numpy()
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    corners = (slice(None), [0, -1])
    np.testing.assert_allclose(
        ours[corners][:, :, [0, -1]], images[corners][:, :, [0, -1]], atol=1e-6
    )
    np.testing.assert_allclose(bicubic_matrix(7, 14).sum(1), 1.0, atol=1e-6)


def _numpy_alpha(params, features):
    """The reference bg_extractor wiring in NumPy (direct bicubic evaluation)."""

    def conv(name, x):
        return x @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])

    up = _numpy_bicubic_2x

    def project(level):
        r = features[level][0].shape[1]
        return np.concatenate([conv(f"project{r}_conv{i}", features[level][i]) for i in (0, 1)], -1)

    running = up(project(0))
    for level in range(1, len(features) - 1):
        r = features[level][0].shape[1]
        merged = conv(f"merge{r}", np.concatenate([project(level), running], -1))
        running = up(np.where(merged > 0, merged, 0.2 * merged))
    logits = conv("to_mask", project(len(features) - 1) + running)
    return 1.0 / (1.0 + np.exp(-logits))


def test_alpha_network_matches_numpy_reference_and_range():
    rng = np.random.default_rng(1)
    widths = {8: 16, 16: 12, 32: 8}
    features = [
        tuple(rng.normal(size=(3, r, r, c)).astype(np.float32) for _ in range(2))
        for r, c in widths.items()
    ]
    network = AlphaNetwork()
    params = jax.jit(network.init)(jax.random.key(0), features)["params"]
    assert sorted(params) == sorted(
        [f"project{r}_conv{i}" for r in widths for i in (0, 1)] + ["merge16", "to_mask"]
    )
    assert params["merge16"]["kernel"].shape == (12, 6)
    assert params["to_mask"]["kernel"].shape == (6, 1)
    for name, leaf in params.items():  # PyTorch's default init: U(+-1/sqrt(fan_in))
        bound = 1.0 / np.sqrt(leaf["kernel"].shape[0])
        assert np.abs(leaf["kernel"]).max() <= bound and np.abs(leaf["bias"]).max() <= bound, name
    mask = np.asarray(jax.jit(network.apply)({"params": params}, features))
    assert mask.shape == (3, 32, 32, 1)
    assert (mask > 0).all() and (mask < 1).all() and mask.std() > 1e-3
    np.testing.assert_allclose(mask, _numpy_alpha(params, features), atol=2e-5)


def test_alpha_network_rejects_bad_features():
    features = [(jnp.zeros((1, 8, 8, 4)),) * 2, (jnp.zeros((1, 8, 8, 4)),) * 2]
    with pytest.raises(ValueError, match=r"features\[1\]"):
        AlphaNetwork().init(jax.random.key(0), features)
    with pytest.raises(ValueError, match="min_feature_resolution"):
        Labels4FreeGenerator(RES, min_feature_resolution=16, **TINY).feature_resolutions()


# ---------------------------------------------------------------------------------------------
# The generator: background path, truncation, gradients
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_generator():
    generator = Labels4FreeGenerator(RES, truncation_psi=0.6, **TINY)
    z = jax.random.normal(jax.random.key(3), (4, Z_DIM))
    keys = {"params": jax.random.key(1), "noise": jax.random.key(2)}
    variables = jax.jit(generator.init)(keys, z)
    # A w_avg away from zero so that truncation is visible.
    frozen = variables["frozen"]["generator"]
    w_avg = frozen["buffers"]["mapping"]["w_avg"]
    frozen["buffers"]["mapping"]["w_avg"] = jax.random.normal(jax.random.key(4), w_avg.shape)
    apply = jax.jit(lambda v, z: generator.apply(v, z, noise_mode="const"))
    return generator, variables, z, apply


def test_background_is_deterministic_differs_and_ignores_the_4x4_const(tiny_generator):
    generator, variables, z, apply = tiny_generator
    first, second = apply(variables, z), apply(variables, z)
    np.testing.assert_array_equal(first["bg_rgb"], second["bg_rgb"])
    np.testing.assert_array_equal(first["mask"], second["mask"])
    assert float(jnp.mean(jnp.abs(first["bg_rgb"] - first["fg_rgb"]))) > 0.05
    # Changing the 4x4 constant changes the foreground but not the background at all.
    shifted = jax.tree.map(lambda x: x, variables)
    synthesis = shifted["frozen"]["generator"]["params"]["synthesis"]
    synthesis["b4"]["const"] = synthesis["b4"]["const"] + 1.0
    moved = apply(shifted, z)
    np.testing.assert_array_equal(moved["bg_rgb"], first["bg_rgb"])
    assert float(jnp.max(jnp.abs(moved["fg_rgb"] - first["fg_rgb"]))) > 1e-3
    # Foreground = G(z; psi = 0.6), background = G_bg(z; psi = 1); composite = m f + (1 - m) b.
    style = generator.frozen_generator()
    frozen = variables["frozen"]["generator"]
    fg = jax.jit(lambda v: style.apply(v, z, truncation_psi=0.6, noise_mode="const"))(frozen)
    bg = jax.jit(lambda v: style.apply(v, z, noise_mode="const", zero_const_features=True))(frozen)
    np.testing.assert_allclose(first["fg_rgb"], fg, atol=2e-5)
    np.testing.assert_allclose(first["bg_rgb"], bg, atol=2e-5)
    untruncated = jax.jit(lambda v: style.apply(v, z, noise_mode="const"))(frozen)
    assert float(jnp.max(jnp.abs(untruncated - fg))) > 1e-3
    m, f, b = (np.asarray(first[k]) for k in ("mask", "fg_rgb", "bg_rgb"))
    np.testing.assert_allclose(first["composite"], m * f + (1 - m) * b, atol=1e-6)
    assert first["mask"].shape == (4, RES, RES, 1)


def test_random_noise_is_reproducible_per_key_and_reaches_both_passes(tiny_generator):
    generator, variables, z, _ = tiny_generator
    # Fresh noise strengths are 0; switch them on so that the noise is visible.
    noisy = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.ones_like(x) if "noise_strength" in jax.tree_util.keystr(path) else x,
        variables,
    )
    run = jax.jit(lambda v, key: generator.apply(v, z, rngs={"noise": key}))
    a, b = run(noisy, jax.random.key(5)), run(noisy, jax.random.key(5))
    c = run(noisy, jax.random.key(6))
    for name in ("fg_rgb", "bg_rgb", "mask"):
        np.testing.assert_array_equal(a[name], b[name])
        assert float(jnp.max(jnp.abs(a[name] - c[name]))) > 1e-4, name


def test_gradients_reach_the_alpha_network_only(tiny_generator):
    generator, variables, z, _ = tiny_generator
    weights = jax.random.normal(jax.random.key(7), (4, RES, RES, 3))

    def loss(all_variables):
        return jnp.sum(weights * generator.apply(all_variables, z, noise_mode="const")["composite"])

    grads = jax.jit(jax.grad(loss))(variables)
    frozen_grads = jax.tree.leaves(grads["frozen"])
    assert frozen_grads and all(float(jnp.max(jnp.abs(g))) == 0.0 for g in frozen_grads)
    alpha_grads = jax.tree.leaves(grads["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in alpha_grads)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in alpha_grads)
    # Directional derivative along a random direction against central differences.
    leaves, treedef = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.key(8), len(leaves))
    direction = treedef.unflatten(
        [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )

    def along(step):
        moved = jax.tree.map(lambda p, d: p + step * d, variables["params"], direction)
        return loss({**variables, "params": moved})

    eps = 1e-2
    along = jax.jit(along)
    numeric = (float(along(eps)) - float(along(-eps))) / (2 * eps)
    analytic = sum(
        float(jnp.vdot(g, d))
        for g, d in zip(jax.tree.leaves(grads["params"]), jax.tree.leaves(direction), strict=True)
    )
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


def test_loader_errors_and_hard_masks(tmp_path):
    config = labels4free_config.get_config("runlocal,res=16")
    with pytest.raises(ValueError, match="pretrained_workdir"):
        labels4free.load_pretrained_generator(config, restore_train_state)
    config.labels4free.pretrained_workdir = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="pretrained_workdir"):
        labels4free.load_pretrained_generator(config, restore_train_state)
    soft = jnp.asarray([0.0, 0.5, 0.9, 0.95, 1.0]).reshape(1, 5, 1, 1)
    np.testing.assert_array_equal(
        np.asarray(labels4free.hard_masks(soft, config)).ravel(), [False, False, False, True, True]
    )


# ---------------------------------------------------------------------------------------------
# Two stages end to end
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    workdir_a = str(tmp_path_factory.mktemp("stylegan2"))
    workdir_b = str(tmp_path_factory.mktemp("labels4free"))
    config_a = shrink(stylegan2_config.get_config("runlocal,res=16"), data_dir, num_steps=2)
    result_a = loop.train_and_evaluate(config_a, workdir_a)
    config_b = shrink(labels4free_config.get_config("runlocal,res=16"), data_dir, num_steps=3)
    config_b.labels4free.pretrained_workdir = workdir_a
    config_b.labels4free.truncation_psi = 0.7
    config_b.loss.bg_area_weight = 0.5
    config_b.loss.bg_area = 1.0  # always active: the term is 0.5 * mean coverage
    config_b.train.sample_every_steps = 3
    result_b = loop.train_and_evaluate(config_b, workdir_b)
    networks = builders.build_networks(config_b)
    optimizers = builders.build_optimizers(config_b)
    initial = jax.jit(lambda key: create_train_state(config_b, networks, optimizers, key))(
        jax.random.key(config_b.seed)
    )
    return dict(config=config_b, a=result_a, b=result_b, initial=initial, workdir=workdir_b)


@pytest.mark.slow  # two training runs (stylegan2 then labels4free) compile two systems (~3 min)
def test_frozen_generator_is_the_pretrained_one_and_never_changes(two_stage_run):
    a_state, b_state = two_stage_run["a"].state, two_stage_run["b"].state
    assert two_stage_run["b"].steps == 3
    expected = {
        "params": a_state.g_ema_params["generator"],
        "buffers": a_state.g_ema_buffers["buffers"]["generator"],
    }
    for collection in (b_state.g_buffers, b_state.g_ema_buffers):
        got = collection["frozen"]["generator"]
        assert jax.tree.structure(got) == jax.tree.structure(expected)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert sorted(b_state.g_params) == ["alpha"]
    assert set(b_state.g_buffers) == {"frozen"}


@pytest.mark.slow  # two training runs (stylegan2 then labels4free) compile two systems (~3 min)
def test_alpha_network_trains_with_its_ema_and_optimiser(two_stage_run):
    state, initial = two_stage_run["b"].state, two_stage_run["initial"]
    moved = [
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(
            jax.tree.leaves(state.g_params), jax.tree.leaves(initial.g_params), strict=True
        )
    ]
    assert max(moved) > 1e-6
    # The G optimiser state holds exactly the alpha network's leaves (Adam mu and nu).
    alpha_leaves = len(jax.tree.leaves(state.g_params))
    assert len(jax.tree.leaves(state.g_opt_state)) == 2 * alpha_leaves + 1  # + count
    # EMA without ramp-up, beta = 0.5 ** (32 / 10000) per step (the reference's `accumulate`):
    # ema_3 - p_0 = (1 - beta) sum_t beta**(3 - t) (p_t - p_0), and Adam with beta1 = 0 moves a
    # parameter by at most lr * sqrt(t) at step t, so |ema_3 - p_0| <= (1 - beta**3) * 4.2 * lr.
    beta = 0.5 ** (32 / 10000)
    np.testing.assert_allclose(two_stage_run["b"].last_metrics["ema/beta"], beta, rtol=1e-6)
    lr = 2e-4 * 4 / 5  # --lr with the g_reg_every = 4 rescaling
    ema_moved = 0.0
    for ema, start in zip(
        jax.tree.leaves(state.g_ema_params), jax.tree.leaves(initial.g_params), strict=True
    ):
        distance = np.abs(np.asarray(ema, np.float64) - np.asarray(start, np.float64))
        assert distance.max() <= (1 - beta**3) * 4.2 * lr + 1e-9
        ema_moved = max(ema_moved, distance.max())
    assert ema_moved > 0
    d_moved = [
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(
            jax.tree.leaves(state.d_params), jax.tree.leaves(initial.d_params), strict=True
        )
    ]
    assert max(d_moved) > 1e-6


@pytest.mark.slow  # two training runs (stylegan2 then labels4free) compile two systems (~3 min)
def test_logged_g_loss_includes_the_background_area_term(two_stage_run):
    metrics, config = two_stage_run["b"].last_metrics, two_stage_run["config"]
    expected = (
        metrics["g/adversarial"]
        + config.loss.bin_weight * metrics["g/binarisation"]
        + config.loss.msize_weight * metrics["g/min_size"]
        + config.loss.bg_area_weight * metrics["mask/mean"]
    )
    np.testing.assert_allclose(metrics["g/total"], expected, rtol=1e-5)
    assert 0.0 < metrics["mask/mean"] < 1.0


@pytest.mark.slow  # two training runs (stylegan2 then labels4free) compile two systems (~3 min)
def test_sample_grid_has_a_mask_row(two_stage_run):
    path = os.path.join(two_stage_run["workdir"], "samples", "step_0000003.png")
    grid = np.asarray(Image.open(path).convert("RGB")).astype(np.int32)
    rows = 6  # composite, shifted composite, fg, bg, mask, fg over white
    assert grid.shape == (rows * (RES + 1) + 1, 4 * (RES + 1) + 1, 3)

    def row(index):
        top = 1 + index * (RES + 1)
        return grid[top : top + RES, 1:-1]

    mask_row, fg_row = row(4), row(2)
    assert np.array_equal(mask_row[..., 0], mask_row[..., 1])
    assert np.array_equal(mask_row[..., 0], mask_row[..., 2])
    assert mask_row.std() > 0 and not np.array_equal(fg_row[..., 0], fg_row[..., 1])
