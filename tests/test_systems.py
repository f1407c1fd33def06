"""The systems as plug-ins of one trainer (ilsgan_jax/systems, ilsgan_jax/train/phases.py).

- Golden outputs: every system's phased step (main + R1, then main) on a fixed batch gives the
  metrics and parameter sums recorded in `tests/data/step_golden.npz` to float32 rounding. The
  file was written by the train step before the systems became plug-ins; rewrite it
  (`python tests/test_systems.py`) only for an intended change of the numbers, and say so.
- A toy system added with one module (`tests/toy_system.py`) and one registry entry trains.
- The Independence-prior system's step: finite, per-instance areas logged, G and D move.
"""

import os
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from ilsgan_jax import parallel, systems
from ilsgan_jax.data.synthetic_render import render_synthetic_objects
from ilsgan_jax.train.state import create_train_state
from ilsgan_jax.train.step import PhasedTrainStep, make_trainer

GOLDEN_PATH = os.path.join(os.path.dirname(__file__), "data", "step_golden.npz")
RESOLUTION, BATCH, NUM_STEPS = 16, 8, 2
# (config module, variant, overrides); the slow ones compile steps that other slow tests cover.
CASES = {
    "ilsgan": ("ilsgan", "runlocal,res=16", {}),
    "ilsgan_neural_mixing": (
        "ilsgan",
        "runlocal,res=16,estimator=neural_laplace",
        {"loss.style_mixing_prob": 0.9},
    ),
    # ema.kimg fixed: the config derives it from the batch size (the step is what is compared).
    # G step first: the golden file predates train.d_step_first, which this config now sets.
    "perturbgan_wgan_gp": (
        "perturbgan",
        "runlocal,res=16,loss=wgan_gp,contrast=1",
        {"ema.kimg": 10.0, "train.d_step_first": False},
    ),
    "stylegan2": ("stylegan2", "runlocal,res=16", {}),
    "labels4free": ("labels4free", "runlocal,res=16", {"loss.bg_area_weight": 0.5}),
    # The golden file predates the one-image runlocal choices (R1 gamma, background, area ramp).
    "independence_prior": (
        "independence_prior",
        "runlocal,res=16,k=2,ils=pairwise",
        {"loss.r1_gamma": -1.0, "model.background_resolution": None, "loss.area_rampup_kimg": 0.0},
    ),
}
SLOW_CASES = ("ilsgan_neural_mixing", "perturbgan_wgan_gp", "labels4free")


def case_config(make_tiny_config, case: str):
    """The case's config with the tiny networks (the `tiny_config` fixture is `make_tiny_config`),
    ADA at fixed p, the seed and initialisation the golden file was written with."""
    config_name, variant, overrides = CASES[case]
    base = {
        "train.batch_size": BATCH,
        "ada.mode": "fixed",
        "ada.initial_p": 0.5,
        "seed": 1,
        # The state comes from create_train_state alone (no calibration).
        "model.initial_mask_coverage": None,
    }
    return make_tiny_config(config_name, variant, {**base, **overrides})


def fixed_reals() -> np.ndarray:
    rendered = render_synthetic_objects(np.random.default_rng(0), BATCH, RESOLUTION)
    return (rendered["image"].astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def run_steps(config, mesh, num_steps: int = NUM_STEPS):
    """`num_steps` phased iterations from the seed's initial state: (state, [metrics per step])
    on the host. The state is built with `create_train_state` alone (no system initialisation:
    Labels4Free keeps its randomly initialised frozen generator)."""
    trainer = make_trainer(config)
    state = jax.jit(
        lambda key: create_train_state(config, trainer.networks, trainer.optimizers, key),
        out_shardings=parallel.replicated_sharding(mesh),
    )(jax.random.key(config.seed))
    step_fn = PhasedTrainStep(trainer, mesh)
    reals, history = fixed_reals(), []
    for step in range(num_steps):
        state, metrics = step_fn(state, reals, step)
        history.append({name: float(value) for name, value in jax.device_get(metrics).items()})
    return jax.device_get(state), history


def compared_leaves(tree) -> list[np.ndarray]:
    """The parameters compared with the golden file. Left out: the learned estimator's conv
    biases, which feed a batch-statistics normalisation: their exact gradient is zero, so the
    computed one is float32 rounding noise that Adam's first steps (~lr * sign(g)) turn into
    lr-sized moves in either direction. They never change the estimator's output."""
    return [
        np.asarray(leaf, np.float64)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if not (
            "ConvStage" in jax.tree_util.keystr(path) and "'bias'" in jax.tree_util.keystr(path)
        )
    ]


def summary(state, history) -> dict[str, float]:
    """The values compared with the golden file: every metric of every step, the sum and the
    absolute sum of each parameter collection (`compared_leaves`), and ADA's p."""
    values = {
        f"metrics/{i}/{name}": value for i, m in enumerate(history) for name, value in m.items()
    }
    for collection in ("g_params", "d_params", "estimator_params", "g_ema_params"):
        leaves = compared_leaves(getattr(state, collection))
        values[f"{collection}/sum"] = float(sum(leaf.sum() for leaf in leaves))
        values[f"{collection}/abs_sum"] = float(sum(np.abs(leaf).sum() for leaf in leaves))
    values["ada/p"] = float(state.ada.p)
    return values


@pytest.fixture(scope="module")
def mesh1():
    return Mesh(np.array(jax.devices()[:1]), ("data",))


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN_PATH) as data:
        return {key: float(data[key]) for key in data.files}


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES],
)
def test_step_matches_the_recorded_outputs(case, mesh1, golden, tiny_config):
    expected = {key.split("/", 1)[1]: v for key, v in golden.items() if key.startswith(case + "/")}
    assert expected, f"no golden values for {case}"
    got = summary(*run_steps(case_config(tiny_config, case), mesh1))
    assert sorted(got) == sorted(expected), set(got) ^ set(expected)
    for name, value in expected.items():
        if np.isnan(value):
            assert np.isnan(got[name]), name
            continue
        np.testing.assert_allclose(got[name], value, rtol=2e-5, atol=2e-6, err_msg=f"{case} {name}")


def test_unknown_system_lists_the_known_ones(tiny_config):
    config = case_config(tiny_config, "ilsgan")
    config.system = "ilsgn"
    with pytest.raises(ValueError, match=r"'ilsgn'.*independence_prior.*labels4free"):
        make_trainer(config)


def test_independence_prior_step_trains_every_part(mesh1, tiny_config):
    """Two K = 2 steps: finite metrics, per-instance areas in (0, 1), the union mask's statistics,
    and every parameter group of G (background, providers, layout) and D moved."""
    config = case_config(tiny_config, "independence_prior")
    trainer = make_trainer(config)
    initial = jax.device_get(
        jax.jit(lambda key: create_train_state(config, trainer.networks, trainer.optimizers, key))(
            jax.random.key(config.seed)
        )
    )
    state, history = run_steps(config, mesh1)
    for metrics in history:
        finite = {k: v for k, v in metrics.items() if k != "d/r1_penalty"}
        assert all(np.isfinite(v) for v in finite.values()), metrics
        for k in range(2):
            assert 0.0 < metrics[f"mask/area_instance{k}"] < 1.0
        assert 0.0 < metrics["mask/mean"] < 1.0
    assert np.isfinite(history[0]["d/r1_penalty"]) and np.isnan(history[1]["d/r1_penalty"])
    for group in state.g_params:
        moved = jax.tree.map(
            lambda a, b: float(np.abs(np.asarray(a) - b).max()),
            state.g_params[group],
            initial.g_params[group],
        )
        assert max(jax.tree.leaves(moved)) > 0, group
    assert int(state.step) == NUM_STEPS


def test_a_toy_system_is_one_module_and_one_registry_entry(mesh1, monkeypatch, tiny_config):
    """`tests/toy_system.py` (a plain generator whose only extra term pulls the mean image
    towards a config value) trains one step through the unchanged trainer."""
    sys.path.insert(0, os.path.dirname(__file__))
    import toy_system

    monkeypatch.setitem(systems.REGISTRY, "toy", toy_system.SYSTEM)
    config = toy_system.configure(case_config(tiny_config, "stylegan2"))
    state, history = run_steps(config, mesh1, num_steps=1)
    metrics = history[0]
    assert metrics["toy/brightness_gap"] > 0
    # G's loss is the adversarial loss plus the toy term, nothing else.
    np.testing.assert_allclose(
        metrics["g/total"],
        metrics["g/adversarial"] + config.toy.weight * metrics["toy/brightness_gap"],
        rtol=1e-5,
    )
    assert int(state.step) == 1


@pytest.mark.parametrize(
    "case, layer, target", [("ilsgan", "mask", 0.7), ("independence_prior", "union_mask", 0.2)]
)
def test_systems_calibrate_the_initial_mask_coverage(tiny_config, case, layer, target):
    """`config.model.initial_mask_coverage` (the state initialisation of the systems that draw
    masks): the initial EMA and trained generators both draw masks (ILSGAN's one mask, the
    union of the independence prior's instances) of that mean coverage on fresh latents; None
    leaves the reference initialisation untouched."""
    config = case_config(tiny_config, case)
    trainer = make_trainer(config)
    initial = jax.jit(
        lambda key: create_train_state(config, trainer.networks, trainer.optimizers, key)
    )(jax.random.key(config.seed))
    assert trainer.system.initialize_state(config, initial, None) is initial  # None: untouched
    config.model.initial_mask_coverage = target  # far from this tiny generator's own
    calibrated = trainer.system.initialize_state(config, initial, None)
    z = jax.random.normal(jax.random.key(123), trainer.system.latent_shape(config, 256))

    def coverage(params, buffers):
        layers = trainer.networks.generator.apply(
            {"params": params, **buffers}, z, noise_mode="const"
        )
        return float(layers[layer].mean())

    before = coverage(initial.g_params, initial.g_buffers)
    after = coverage(calibrated.g_params, calibrated.g_buffers)
    after_ema = coverage(calibrated.g_ema_params, calibrated.g_ema_buffers)
    assert abs(before - target) > 0.2, before  # the seed's own coverage is elsewhere
    assert after == pytest.approx(target, abs=0.05) and after_ema == pytest.approx(after, abs=1e-6)


if __name__ == "__main__":  # rewrites the golden file from the current step
    import tiny_configs

    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    values = {}
    for name in CASES:
        config = case_config(tiny_configs.make_tiny_config, name)
        values.update({f"{name}/{k}": v for k, v in summary(*run_steps(config, mesh)).items()})
    np.savez(GOLDEN_PATH, **values)
    print(f"wrote {len(values)} values to {GOLDEN_PATH}")
