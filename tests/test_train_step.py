"""Tests of the ILSGAN train step (ilsgan_jax/train/phases.py, step.py) at 16 px with tiny networks.

Compiled steps are shared through module-scoped fixtures (one per config and mesh); the state is
kept on the host between calls because the step donates it (see tests/train_fixtures.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import train_fixtures as fx

from configs import ilsgan as ilsgan_config
from ilsgan_jax.systems.layered_terms import mask_metrics
from ilsgan_jax.train import builders
from ilsgan_jax.train.phases import sanitize_gradients

BATCH = fx.BATCH
ADA_STEP_SIZE = BATCH * 4 / (500 * 1000)  # batch * interval / (speed_kimg * 1000)


# ------------------------------------------------------------------------------------------------
# Fixtures: one compiled step per (config, mesh), shared by the tests below.


@pytest.fixture(scope="module")
def mesh1():
    return fx.one_device_mesh()


@pytest.fixture(scope="module")
def mesh8():
    mesh = fx.all_devices_mesh()
    assert mesh.size == 8, "tests/conftest.py should provide 8 CPU devices"
    return mesh


@pytest.fixture(scope="module")
def reals():
    return fx.synthetic_reals(BATCH, seed=1)


@pytest.fixture(scope="module")
def ada_step():
    """ADA 'ada' mode ('bgc' pipeline), lazy R1 with the heuristic gamma, laplace ILS."""
    return fx.StepUnderTest(fx.tiny_config(ada_mode="ada"))


@pytest.fixture(scope="module")
def r1_step():
    """No augmentation, lazy R1 with the heuristic gamma (0.0002 * 16^2 / 16), laplace ILS."""
    return fx.StepUnderTest(fx.tiny_config())


@pytest.fixture(scope="module")
def no_r1_step():
    """As `r1_step` but r1_gamma = 0 (the R1 phase is not built)."""
    return fx.StepUnderTest(fx.tiny_config(r1_gamma=0.0))


@pytest.fixture(scope="module")
def neural_mixing_step():
    """Learned 'neural_laplace' conditional and StyleGAN2's style mixing probability 0.9."""
    return fx.StepUnderTest(fx.tiny_config(estimator="neural_laplace", style_mixing_prob=0.9))


def assert_trees_close(actual, expected, *, rtol, atol, what):
    actual_leaves, expected_leaves = fx.leaves_with_paths(actual), fx.leaves_with_paths(expected)
    assert [path for path, _ in actual_leaves] == [path for path, _ in expected_leaves]
    for (path, a), (_, e) in zip(actual_leaves, expected_leaves, strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype, f"{what}{path}"
        np.testing.assert_allclose(
            a, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{what}{path}"
        )


def all_finite(tree) -> bool:
    return all(
        bool(np.all(np.isfinite(leaf)))
        for _, leaf in fx.leaves_with_paths(tree)
        if np.issubdtype(leaf.dtype, np.inexact)
    )


# ------------------------------------------------------------------------------------------------
# Sharding invariance.


def test_step_on_8_devices_equals_step_on_1_device(ada_step, mesh1, mesh8, reals):
    # Step 0 runs the lazy R1 phase; p > 0 makes the ADA pipeline transform what D sees.
    state = fx.with_p(ada_step.initial_state, 0.5)
    state8, metrics8 = ada_step.run(mesh8, state, reals)
    state1, metrics1 = ada_step.run(mesh1, state, reals)

    assert np.isfinite(metrics1["d/r1_penalty"]) and metrics1["d/r1_penalty"] > 0
    assert int(state1.step) == 1 and int(state8.step) == 1
    # Both runs moved every trained network away from the initial state.
    for name in ("g_params", "d_params"):
        before = fx.leaves_with_paths(getattr(state, name))
        after = fx.leaves_with_paths(getattr(state1, name))
        changes = [np.max(np.abs(a - b)) for (_, a), (_, b) in zip(after, before, strict=True)]
        assert max(changes) > 1e-3
    # Adam's first step moves a parameter by +-lr * g / (|g| + eps): the update is a sign, so
    # float noise cannot flip it unless |g| is at rounding level; 1e-4 absolute covers the rest.
    assert_trees_close(state8, state1, rtol=1e-4, atol=1e-4, what="state")
    assert sorted(metrics8) == sorted(metrics1)
    for name in metrics1:
        np.testing.assert_allclose(
            metrics8[name], metrics1[name], rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=name
        )


# ------------------------------------------------------------------------------------------------
# Generator EMA.


def reference_ema_beta(cur_nimg: int, batch: int, ema_kimg: float, rampup: float) -> float:
    return 0.5 ** (batch / max(min(ema_kimg * 1000, cur_nimg * rampup), 1e-8))


@pytest.mark.parametrize("cur_nimg", [0, 1_000, 40_000, 1_000_000])
def test_ema_update_matches_the_ramped_half_life(r1_step, mesh1, reals, cur_nimg):
    config = r1_step.config
    assert config.ema.kimg < 0  # default half-life: 10 * batch / 32 kimg
    expected_beta = reference_ema_beta(cur_nimg, BATCH, 10.0 * BATCH / 32.0, config.ema.rampup)
    rng = np.random.default_rng(cur_nimg)
    initial = r1_step.initial_state
    # An old EMA that differs from G, so the test sees which side beta weights.
    old_ema = jax.tree.map(
        lambda p: (p + rng.normal(0.0, 0.1, p.shape)).astype(p.dtype), initial.g_params
    )
    state = initial.replace(images_seen=np.int32(cur_nimg), g_ema_params=old_ema)
    new_state, metrics = r1_step.run(mesh1, state, reals)

    np.testing.assert_allclose(metrics["ema/beta"], expected_beta, rtol=1e-5, atol=1e-30)
    assert int(new_state.images_seen) == cur_nimg + BATCH
    for (path, ema), (_, g_new), (_, g_old_ema) in zip(
        fx.leaves_with_paths(new_state.g_ema_params),
        fx.leaves_with_paths(new_state.g_params),
        fx.leaves_with_paths(old_ema), strict=True,
    ):
        g64 = g_new.astype(np.float64)
        expected = g64 + expected_beta * (g_old_ema.astype(np.float64) - g64)
        np.testing.assert_allclose(ema, expected, rtol=1e-5, atol=1e-6, err_msg=path)
        if cur_nimg == 0:  # beta = 0: the EMA is exactly the new generator
            np.testing.assert_array_equal(ema, g_new, err_msg=path)
    # Buffers (w_avg, constant noise) are copied from G.
    assert_trees_close(new_state.g_ema_buffers, new_state.g_buffers, rtol=0, atol=0, what="buf")
    assert 0.0 <= expected_beta < 1.0
    if cur_nimg >= 100_000:  # ramp-up over: the plain 5 kimg half-life
        assert expected_beta == pytest.approx(0.5 ** (BATCH / 5000.0))


# ------------------------------------------------------------------------------------------------
# ADA p inside the step.


def with_output_bias(state, bias: float):
    """D's final bias set to `bias`: D(x) ~ bias for every input (features are O(1))."""
    d_params = jax.tree.map(np.array, state.d_params)
    d_params["b4"]["out"]["bias"] = np.full_like(d_params["b4"]["out"]["bias"], bias)
    return state.replace(d_params=d_params)


@pytest.mark.parametrize("bias, direction", [(100.0, 1.0), (-100.0, -1.0)])
def test_ada_p_moves_every_4_steps_by_the_sign_of_real_logits(
    ada_step, mesh1, reals, bias, direction
):
    p0 = 0.25
    state = with_output_bias(fx.with_p(ada_step.initial_state, p0), bias)
    seen = []
    for _ in range(4):
        state, metrics = ada_step.run(mesh1, state, reals)
        assert np.sign(metrics["scores/real"]) == direction and abs(metrics["scores/real"]) > 50
        seen.append((float(state.ada.p), float(state.ada.sign_sum), float(state.ada.sign_count)))
    # Step 0 evaluates D(real) twice (D main and R1), steps 1 and 2 once; after step 3
    # ((step + 1) % 4 == 0) p moves by batch * 4 / 500k towards the sign and the sums reset.
    expected_counts = [2 * BATCH, 3 * BATCH, 4 * BATCH]
    for (p, sign_sum, sign_count), count in zip(seen[:3], expected_counts, strict=True):
        assert p == np.float32(p0)
        assert sign_count == count and sign_sum == direction * count
    p, sign_sum, sign_count = seen[3]
    assert sign_sum == 0.0 and sign_count == 0.0
    np.testing.assert_allclose(p, p0 + direction * ADA_STEP_SIZE, rtol=1e-6)


def test_ada_p_is_clipped_at_zero(ada_step, mesh1, reals):
    # At step 3 with a negative sign history and p below one adjustment, p lands exactly on 0.
    state = with_output_bias(fx.with_p(ada_step.initial_state, 0.25 * ADA_STEP_SIZE), -100.0)
    ada = state.ada.replace(sign_sum=np.float32(-3 * BATCH), sign_count=np.float32(3 * BATCH))
    state = state.replace(step=np.int32(3), ada=ada)
    new_state, metrics = ada_step.run(mesh1, state, reals)
    assert float(new_state.ada.p) == 0.0 and metrics["ada/p"] == 0.0
    assert np.isnan(metrics["d/r1_penalty"])  # step 3: no R1


# ------------------------------------------------------------------------------------------------
# Lazy R1.


def test_r1_runs_only_every_16_steps(r1_step, mesh1, reals):
    state = r1_step.initial_state
    r1_values = []
    for _ in range(18):
        state, metrics = r1_step.run(mesh1, state, reals)
        r1_values.append(metrics["d/r1_penalty"])
    for step, value in enumerate(r1_values):
        if step % 16 == 0:
            assert np.isfinite(value) and value > 0, step
        else:
            assert np.isnan(value), step
    assert int(state.step) == 18 and int(state.nonfinite_step) == -1


def r1_reference_update(r1_step, d_params, d_opt_state, reals):
    """D after the R1 phase computed independently: Adam on the gradient of
    mean(gamma/2 * 16 * |dD/dx|^2)."""
    gamma = 0.0002 * fx.RESOLUTION**2 / BATCH
    discriminator = r1_step.networks.discriminator

    def r1_loss(params):
        def summed_logits(images):
            return jnp.sum(discriminator.apply({"params": params}, images))

        input_grads = jax.grad(summed_logits)(jnp.asarray(reals))
        penalty = jnp.sum(jnp.square(input_grads), axis=(1, 2, 3))
        return jnp.mean(penalty * (gamma / 2) * 16)

    grads = jax.jit(jax.grad(r1_loss))(d_params)
    updates, _ = r1_step.optimizers.discriminator.update(
        sanitize_gradients(grads), d_opt_state, d_params
    )
    return jax.device_get(optax.apply_updates(d_params, updates))


def test_r1_phase_changes_d_by_the_r1_update(r1_step, no_r1_step, mesh1, reals):
    assert builders.r1_gamma(r1_step.config) == pytest.approx(0.0032)
    assert builders.r1_gamma(no_r1_step.config) == 0.0
    initial = r1_step.initial_state
    assert_trees_close(no_r1_step.initial_state, initial, rtol=0, atol=0, what="initial")

    with_r1, metrics_r1 = r1_step.run(mesh1, initial, reals)
    without_r1, metrics_no_r1 = no_r1_step.run(mesh1, initial, reals)
    assert np.isfinite(metrics_r1["d/r1_penalty"]) and "d/r1_penalty" not in metrics_no_r1
    # G and D main are the same computation in both configs.
    assert_trees_close(with_r1.g_params, without_r1.g_params, rtol=1e-5, atol=1e-6, what="g")
    np.testing.assert_allclose(metrics_r1["d/loss"], metrics_no_r1["d/loss"], rtol=1e-5)
    # R1's D(real) signs count towards ADA's statistics (the reference reports them in Dreg).
    assert float(with_r1.ada.sign_count) == 2 * BATCH
    assert float(without_r1.ada.sign_count) == BATCH

    differences = [
        np.max(np.abs(a - b))
        for (_, a), (_, b) in zip(
            fx.leaves_with_paths(with_r1.d_params),
            fx.leaves_with_paths(without_r1.d_params),
            strict=True,
        )
    ]
    assert max(differences) > 1e-4
    expected = r1_reference_update(r1_step, without_r1.d_params, without_r1.d_opt_state, reals)
    assert_trees_close(with_r1.d_params, expected, rtol=1e-4, atol=2e-6, what="d_params")


# ------------------------------------------------------------------------------------------------
# Non-finite losses.


def test_nan_batch_records_the_step_and_keeps_params_finite(r1_step, mesh1, reals):
    bad = reals.copy()
    bad[0, 3, 5, 1] = np.nan
    initial = r1_step.initial_state
    clean_state, clean_metrics = r1_step.run(mesh1, initial, reals)
    assert int(clean_state.nonfinite_step) == -1

    # Step 0 (with R1, whose gradients are NaN as well).
    nan_state, metrics = r1_step.run(mesh1, initial, bad)
    assert np.isnan(metrics["d/loss"])
    assert int(nan_state.nonfinite_step) == 0
    for name in ("g_params", "g_ema_params", "d_params", "g_opt_state", "d_opt_state"):
        assert all_finite(getattr(nan_state, name)), name
    assert metrics["grad_norm/d"] == pytest.approx(0.0)  # every D gradient was NaN -> 0
    # G's phase never sees the reals: its update is that of the clean batch.
    assert_trees_close(nan_state.g_params, clean_state.g_params, rtol=0, atol=0, what="g")

    # A later step records its own index; the first bad step is kept afterwards.
    later, _ = r1_step.run(mesh1, initial.replace(step=np.int32(5)), bad)
    assert int(later.nonfinite_step) == 5 and all_finite(later.d_params)
    kept, _ = r1_step.run(mesh1, nan_state, bad)
    assert int(kept.nonfinite_step) == 0
    recovered, recovered_metrics = r1_step.run(mesh1, kept, reals)
    assert int(recovered.nonfinite_step) == 0
    assert np.isfinite(recovered_metrics["d/loss"]) and np.isfinite(recovered_metrics["g/total"])


# ------------------------------------------------------------------------------------------------
# Learned estimator and style mixing.


def test_learned_estimator_is_trained_and_style_mixing_step_is_finite(
    neural_mixing_step, r1_step, mesh1, reals
):
    # The fixed 'laplace' conditional has no parameters and no NLL.
    assert r1_step.networks.estimator is None and r1_step.initial_state.estimator_params == {}
    _, laplace_metrics = r1_step.run(mesh1, r1_step.initial_state, reals)
    assert "estimator/nll" not in laplace_metrics

    initial = neural_mixing_step.initial_state
    assert neural_mixing_step.config.loss.style_mixing_prob == 0.9
    state = initial
    for _ in range(2):
        state, metrics = neural_mixing_step.run(mesh1, state, reals)
        assert np.isfinite(metrics["estimator/nll"])
        assert all(np.isfinite(value) for name, value in metrics.items() if name != "d/r1_penalty")
    assert int(state.nonfinite_step) == -1
    np.testing.assert_allclose(metrics["ils/sigma"], 1e-3)  # learned estimators' ILS weight
    for name in ("g_params", "d_params", "estimator_params"):
        assert all_finite(getattr(state, name)), name
    changed = [
        np.max(np.abs(a - b)) > 1e-5
        for (_, a), (_, b) in zip(
            fx.leaves_with_paths(state.estimator_params),
            fx.leaves_with_paths(initial.estimator_params), strict=True,
        )
    ]
    # Conv biases in front of batch-statistics normalisation get no gradient; all else moves.
    assert sum(changed) >= len(changed) // 2, changed
    assert int(jax.tree.leaves(state.estimator_opt_state)[0]) == 2  # Adam count: 2 updates


# ------------------------------------------------------------------------------------------------
# Learning on synthetic data.


def run_training(step_under_test, mesh, pool: np.ndarray, num_steps: int, seed: int = 0):
    """`num_steps` steps on random batches from `pool`; returns the host metrics per step."""
    rng = np.random.default_rng(seed)
    step = step_under_test.jitted(mesh)
    state, _ = fx.on_mesh(mesh, step_under_test.initial_state, pool[:BATCH])
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    history = []
    for index in range(num_steps):
        batch = pool[rng.choice(len(pool), BATCH, replace=False)]
        state, metrics = step(state, jax.device_put(batch, batch_sharding), index)
        history.append(metrics)
    history = jax.device_get(history)
    return {name: np.array([m[name] for m in history]) for name in history[0]}, state


def test_discriminator_learns_to_tell_real_from_fake(r1_step, mesh1):
    pool = fx.synthetic_reals(256, seed=2)
    metrics, state = run_training(r1_step, mesh1, pool, num_steps=150)
    assert np.all(np.isfinite(metrics["g/total"])) and np.all(np.isfinite(metrics["d/loss"]))
    assert int(jax.device_get(state.nonfinite_step)) == -1
    early = metrics["d/accuracy"][:5].mean()
    late = metrics["d/accuracy"][-50:].mean()
    # D's loss need not fall (G improves too), but D tells reals from fakes above chance.
    assert late > 0.6 and late > early, (early, late)


# ------------------------------------------------------------------------------------------------
# Bad config: clear errors before anything is compiled.


@pytest.fixture
def compile_events():
    events = []

    def listener(name, *args, **kwargs):
        events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


def test_validate_config_accepts_the_test_configs(compile_events):
    for devices in (1, 8):
        builders.validate_config(fx.tiny_config(), devices)
    assert compile_events == []
    jax.jit(lambda x: x * 3.0 - 1.0)(jnp.ones((3,)))  # the listener does see compilation
    assert any("compile" in name for name in compile_events)


@pytest.mark.parametrize(
    "field, change, devices",
    [
        ("config.data.resolution", dict(resolution=48), 8),
        ("config.data.resolution", dict(resolution=8), 1),
        ("config.train.batch_size", dict(batch=12), 8),
        ("config.train.batch_size", dict(batch=0), 1),
        ("config.model.mbstd_group_size", dict(group=4), 8),  # per-device batch 2 < 4
        ("config.model.mbstd_group_size", dict(group=3, batch=64), 8),  # 3 does not divide 8
        ("config.model.mbstd_group_size", dict(group=-1), 1),  # 0 is the whole batch
        ("config.loss.background_min_size", dict(background="yes"), 1),
    ],
)
def test_validate_config_names_the_bad_field(compile_events, field, change, devices):
    config = fx.tiny_config(batch=change.get("batch", BATCH))
    config.data.resolution = change.get("resolution", config.data.resolution)
    config.model.mbstd_group_size = change.get("group", config.model.mbstd_group_size)
    config.loss.background_min_size = change.get("background", "auto")
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        builders.validate_config(config, devices)
    assert compile_events == []


def test_ilsgan_mask_regularisers_do_not_push_a_small_mask_to_empty():
    """DESIGN.md's G loss has 2 * bin + 2 * msize (the official training loop weighs the size
    term by msize_weight for an unconditional G). Below the minimum size the two then cancel on
    a mask pixel under 0.5, so only D decides whether a small mask grows or shrinks; with a
    lighter size term the binarisation alone would drive small masks to empty."""
    from ilsgan_jax.objectives import mask_losses

    for variant in ("dataset=cub", "dataset=synthetic,runlocal"):
        loss_cfg = ilsgan_config.get_config(variant).loss
        assert loss_cfg.bin_weight == 2.0 and loss_cfg.msize_weight == 2.0, variant

        def regularisers(mask, loss_cfg=loss_cfg):
            size = mask_losses.min_size_loss(mask, min_size=loss_cfg.min_msize)
            binary = mask_losses.binarisation_loss(mask)
            return jnp.sum(loss_cfg.bin_weight * binary + loss_cfg.msize_weight * size)

        rng = np.random.default_rng(0)
        small = jnp.asarray(rng.uniform(0.0, 0.4, (2, 8, 8, 1)), jnp.float32)  # mean ~0.2 < 0.25
        np.testing.assert_allclose(jax.grad(regularisers)(small), 0.0, atol=1e-7, err_msg=variant)
        # Above the minimum size only the binarisation acts: +bin_weight / HW below 0.5.
        large = jnp.full((2, 8, 8, 1), 0.3, jnp.float32)
        np.testing.assert_allclose(jax.grad(regularisers)(large), 2.0 / 64, rtol=1e-6)


def test_mask_metrics_name_the_collapse_modes():
    """Coverage, binariness and the empty/full fractions of a batch with one empty, one full,
    one half-covered binary mask and one constant 0.5 mask, computed by hand."""
    half = np.zeros((8, 8, 1), np.float32)
    half[:, :4] = 1.0
    masks = np.stack([np.zeros((8, 8, 1)), np.ones((8, 8, 1)), half, np.full((8, 8, 1), 0.5)])
    metrics = {k: float(v) for k, v in mask_metrics(jnp.asarray(masks, jnp.float32)).items()}
    assert metrics["mask/mean"] == pytest.approx((0 + 1 + 0.5 + 0.5) / 4)
    assert metrics["mask/binariness"] == pytest.approx(0.5 / 4)
    assert metrics["mask/empty_fraction"] == pytest.approx(0.25)
    assert metrics["mask/full_fraction"] == pytest.approx(0.25)
