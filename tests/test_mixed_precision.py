"""Mixed precision (`config.model.compute_dtype`, `ilsgan_jax/nn/precision.py`).

bfloat16 against float32 on the SAME float32 weights, tiny 16-px networks on the CPU:

- G's layers (fg_rgb, mask, bg_rgb, composite) and D's logits agree with float32 within a
  relative RMS error of `LAYER_RTOL` (see there for the measured error and what it catches);
- the convolutions of G, D, the learned estimator and the U-Net run in bfloat16, and every
  statistic (the demodulation norm, minibatch-std, the normalisation moments) in float32;
- the train step in bfloat16 stays finite, leaves the parameters, optimiser states and the EMA
  float32, and its losses follow float32's; D trained on a fixed real/fake batch lowers its loss
  in both dtypes;
- the learned estimator and the U-Net segmenter agree with float32;
- an unknown dtype fails naming its config field.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh
from tiny_configs import TINY_NETWORK_KWARGS, make_tiny_config

from configs import ilsgan, independence_prior, labels4free, perturbgan, stylegan2
from ilsgan_jax import parallel
from ilsgan_jax.evaluate import segmenter
from ilsgan_jax.models.alpha_network import Labels4FreeGenerator
from ilsgan_jax.models.discriminator import Discriminator
from ilsgan_jax.models.layered import LayeredGenerator
from ilsgan_jax.models.mi_estimator import RegionMIEstimator
from ilsgan_jax.models.unet import UNet
from ilsgan_jax.nn.layers import minibatch_std, modulated_conv2d
from ilsgan_jax.nn.precision import COMPUTE_DTYPES
from ilsgan_jax.objectives import gan_losses
from ilsgan_jax.train.builders import build_networks, validate_config
from ilsgan_jax.train.state import create_train_state
from ilsgan_jax.train.step import PhasedTrainStep, make_trainer

RESOLUTION, BATCH = 16, 8
TINY = TINY_NETWORK_KWARGS
# Tolerances on the relative RMS error `rms(bf16 - f32) / rms(f32)` of each output, the weights
# perturbed so that every bias and noise strength is non-zero. bfloat16 keeps 8 significant bits
# (rounding: 2^-9 = 0.2% relative), compounded over the ~10 layers of each network. Measured at
# 16 px over 12 seeds: G's layers 0.25-1.3% (mask 0.25-0.75%, the RGB layers 0.6-1.3%). Bugs
# injected into the bfloat16 path to size the tolerance: a conv bias dropped errs by 30-48%, the
# noise dropped by 12-37%, a 1% gain error in every layer by ~3%, the demodulation skipped by
# ~30000%. Precision-only bugs (a demodulation norm or the skip image in bfloat16) add < 0.1% and
# are caught by the dtype tests below instead.
LAYER_RTOL = 0.03
# D's logits (0.2-2.7% over the same 12 seeds: the error is relative to logits near 0 at
# initialisation), the learned estimator's outputs (0.9-1.8%) and the U-Net's logits (1.4-1.6%).
OUTPUT_RTOL = 0.06


def relative_rms(reference: jnp.ndarray, value: jnp.ndarray) -> float:
    reference = np.asarray(reference, np.float64)
    value = np.asarray(value, np.float64)
    return float(np.sqrt(np.mean((value - reference) ** 2)) / np.sqrt(np.mean(reference**2)))


def perturbed(params, key, scale: float = 0.2):
    """`params` + N(0, scale^2) on every leaf, so that zero-initialised biases and noise strengths
    take part in the comparison."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            leaf + scale * jax.random.normal(k, leaf.shape)
            for leaf, k in zip(leaves, keys, strict=True)
        ],
    )


def tiny_config(variant: str = "runlocal,res=16", compute_dtype: str = "float32"):
    """configs/ilsgan.py at 16 px with the tiny networks, no ADA."""
    overrides = {
        "model.compute_dtype": compute_dtype,
        "train.batch_size": BATCH,
        "ada.mode": "noaug",
    }
    return make_tiny_config("ilsgan", variant, overrides)


# ------------------------------------------------------------------------------------------------
# The networks on the same float32 weights.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_generator_layers_and_discriminator_logits_agree_with_float32(seed):
    z = jax.random.normal(jax.random.key(100 + seed), (BATCH, TINY["w_dim"]))
    generators = {
        dtype: LayeredGenerator(RESOLUTION, compute_dtype=dtype, **TINY) for dtype in COMPUTE_DTYPES
    }
    variables = generators["float32"].init(jax.random.key(seed), z)
    variables = {**variables, "params": perturbed(variables["params"], jax.random.key(7))}
    layers = {
        dtype: jax.jit(lambda v, z, g=g: g.apply(v, z, noise_mode="const"))(variables, z)
        for dtype, g in generators.items()
    }
    for name, reference in layers["float32"].items():
        value = layers["bfloat16"][name]
        assert value.dtype == jnp.float32, name  # outputs are cast back
        error = relative_rms(reference, value)
        print(f"G {name}: relative RMS error {error:.4f}")
        assert error < LAYER_RTOL, (name, error)

    images = layers["float32"]["composite"]
    discriminators = {
        dtype: Discriminator(
            RESOLUTION,
            3,
            channel_base=TINY["channel_base"],
            channel_max=TINY["channel_max"],
            mbstd_group_size=2,
            compute_dtype=dtype,
        )
        for dtype in COMPUTE_DTYPES
    }
    d_params = discriminators["float32"].init(jax.random.key(seed), images)["params"]
    d_params = perturbed(d_params, jax.random.key(8))
    logits = {
        dtype: jax.jit(d.apply)({"params": d_params}, images) for dtype, d in discriminators.items()
    }
    assert logits["bfloat16"].dtype == jnp.float32
    error = relative_rms(logits["float32"], logits["bfloat16"])
    print(f"D logits: relative RMS error {error:.4f}")
    assert error < OUTPUT_RTOL, error


def test_learned_estimator_agrees_with_float32():
    conditions = [
        jax.random.normal(jax.random.key(i), (4, RESOLUTION, RESOLUTION, 3)) for i in range(2)
    ]
    estimators = {
        dtype: RegionMIEstimator(RESOLUTION, (4, 8, 8), compute_dtype=dtype)
        for dtype in COMPUTE_DTYPES
    }
    params = estimators["float32"].init(jax.random.key(0), conditions)["params"]
    params = perturbed(params, jax.random.key(1))
    outputs = {
        dtype: jax.jit(e.apply)({"params": params}, conditions) for dtype, e in estimators.items()
    }
    for reference, value in zip(
        jax.tree.leaves(outputs["float32"]), jax.tree.leaves(outputs["bfloat16"]), strict=True
    ):
        assert value.dtype == jnp.float32
        error = relative_rms(reference, value)
        print(f"estimator: relative RMS error {error:.4f}")
        assert error < OUTPUT_RTOL, error


@pytest.mark.parametrize("train", [False, True])
def test_unet_agrees_with_float32(train):
    images = jnp.tanh(jax.random.normal(jax.random.key(0), (4, RESOLUTION, RESOLUTION, 3)))
    models = {dtype: UNet(widths=(4, 8, 8), compute_dtype=dtype) for dtype in COMPUTE_DTYPES}
    variables = models["float32"].init(jax.random.key(1), images)
    variables = {**variables, "params": perturbed(variables["params"], jax.random.key(2))}
    logits = {}
    for dtype, model in models.items():
        apply = jax.jit(lambda v, x, m=model: m.apply(v, x, train=train, mutable=["batch_stats"]))
        logits[dtype], updates = apply(variables, images)
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(updates))
    assert logits["bfloat16"].dtype == jnp.float32
    error = relative_rms(logits["float32"], logits["bfloat16"])
    print(f"U-Net (train={train}): relative RMS error {error:.4f}")
    assert error < OUTPUT_RTOL, error


# ------------------------------------------------------------------------------------------------
# What runs in which dtype.
# ------------------------------------------------------------------------------------------------


def primitives(jaxpr) -> list:
    """Every equation of a closed jaxpr, sub-jaxprs (jit, custom_jvp, ...) included."""
    found = []
    for eqn in jaxpr.eqns:
        found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found.extend(primitives(sub))
    return found


def input_dtypes(eqns, name: str) -> list[set]:
    return [{str(v.aval.dtype) for v in eqn.invars} for eqn in eqns if eqn.primitive.name == name]


def test_convolutions_run_in_bfloat16_and_statistics_in_float32():
    """In the bfloat16 networks every convolution reads bfloat16 operands; every square root
    (the mapping's normalisation, the demodulation norm, minibatch-std, the batch norms) reads
    float32."""
    z = jnp.zeros((BATCH, TINY["w_dim"]))
    images = jnp.zeros((BATCH, RESOLUTION, RESOLUTION, 3))
    bf16 = dict(compute_dtype="bfloat16")
    networks = [  # (network, inputs, apply's keyword arguments)
        (LayeredGenerator(RESOLUTION, **TINY, **bf16), (z,), dict(noise_mode="const")),
        (
            Labels4FreeGenerator(RESOLUTION, **TINY, **bf16),
            (z,),
            dict(noise_mode="const", mutable=["frozen"]),
        ),
        (
            Discriminator(
                RESOLUTION, 3, channel_base=128, channel_max=16, mbstd_group_size=2, **bf16
            ),
            (images,),
            {},
        ),
        (RegionMIEstimator(RESOLUTION, (4, 8), **bf16), ([images, images],), {}),
        (UNet(widths=(4, 8), **bf16), (images,), dict(train=True, mutable=["batch_stats"])),
    ]
    for network, args, kwargs in networks:
        variables = network.init(jax.random.key(0), *args)
        apply = functools.partial(network.apply, **kwargs)
        eqns = primitives(jax.make_jaxpr(apply)(variables, *args).jaxpr)
        convs = input_dtypes(eqns, "conv_general_dilated")
        assert convs and all(dtypes == {"bfloat16"} for dtypes in convs), (network, convs)
        roots = input_dtypes(eqns, "rsqrt") + input_dtypes(eqns, "sqrt")
        assert roots and all(dtypes == {"float32"} for dtypes in roots), (network, roots)


def test_modulated_conv_demodulates_with_float32_statistics():
    """Large styles in bfloat16 features: the output channels still have unit RMS over a
    white-noise input, as in float32 (the demodulation norm is computed from the float32 weight
    and styles and only then cast)."""
    key_x, key_w, key_s = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (2, 32, 32, 16))
    weight = jax.random.normal(key_w, (3, 3, 16, 8)) / 12.0
    styles = 1e3 * jnp.exp(jax.random.normal(key_s, (2, 16)))
    outputs = {
        dtype: modulated_conv2d(x.astype(dtype), weight, styles, padding=1)
        for dtype in ("float32", "bfloat16")
    }
    assert outputs["bfloat16"].dtype == jnp.bfloat16
    for dtype, y in outputs.items():
        rms = np.sqrt(np.mean(np.square(np.asarray(y, np.float32)[:, 2:-2, 2:-2]), axis=(1, 2)))
        np.testing.assert_allclose(rms, 1.0, atol=0.1, err_msg=dtype)
    assert relative_rms(outputs["float32"], outputs["bfloat16"]) < 0.01


def test_minibatch_std_statistics_are_float32():
    x = (3.0 + 1e-2 * jax.random.normal(jax.random.key(0), (4, 4, 4, 8))).astype(jnp.bfloat16)
    features = minibatch_std(x, group_size=4)
    assert features.dtype == jnp.bfloat16
    expected = minibatch_std(x.astype(jnp.float32), group_size=4)[..., -1]
    np.testing.assert_allclose(np.asarray(features[..., -1], np.float32), expected, rtol=1e-2)


# ------------------------------------------------------------------------------------------------
# Training.
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def train_run(dtype: str):
    """Three phased steps (R1 at step 0) of the tiny ILSGAN with the learned estimator on, from
    the seed's initial state on a fixed batch: (state, [metrics per step]) on the host."""
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    reals = np.tanh(np.random.default_rng(0).normal(size=(BATCH, RESOLUTION, RESOLUTION, 3)))
    config = tiny_config("runlocal,res=16,estimator=neural_laplace", dtype)
    validate_config(config, 1)
    trainer = make_trainer(config)
    state = jax.jit(
        lambda key: create_train_state(config, trainer.networks, trainer.optimizers, key),
        out_shardings=parallel.replicated_sharding(mesh),
    )(jax.random.key(config.seed))
    step_fn = PhasedTrainStep(trainer, mesh)
    history = []
    for step in range(3):
        state, metrics = step_fn(state, reals.astype(np.float32), step)
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return jax.device_get(state), history


def test_bfloat16_step_is_finite_and_keeps_float32_state():
    state, history = train_run("bfloat16")
    for step, metrics in enumerate(history):
        for name, value in metrics.items():
            if name == "d/r1_penalty" and step > 0:  # R1 only at step 0
                continue
            assert np.isfinite(value), (step, name, value)
    for field in (
        "g_params",
        "g_buffers",
        "g_ema_params",
        "g_ema_buffers",
        "d_params",
        "estimator_params",
        "g_opt_state",
        "d_opt_state",
        "estimator_opt_state",
    ):
        for leaf in jax.tree.leaves(getattr(state, field)):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32, (field, leaf.dtype)
    assert int(state.step) == 3


@pytest.mark.slow
def test_bfloat16_losses_follow_float32():
    """Three steps from the same state in each dtype: G's and D's losses, the scores and the
    mask coverage within 0.05 of float32 (measured: <= 0.004; the losses are 0.5-1.8, so a wrong
    sign, scale or dropped term is far outside), the estimator's NLL (~60) within 1% (measured
    0.25%) and the R1 penalty, a gradient norm through D's bfloat16 backward pass, within 10%
    (measured 3%)."""
    _, reference = train_run("float32")
    _, history = train_run("bfloat16")
    names = ("g/adversarial", "g/total", "d/loss", "scores/fake", "scores/real", "mask/mean")
    for step, (expected, got) in enumerate(zip(reference, history, strict=True)):
        for name in (*names, "estimator/nll"):
            print(f"step {step} {name}: float32 {expected[name]:.4f} bfloat16 {got[name]:.4f}")
        for name in names:
            assert abs(got[name] - expected[name]) < 0.05, (step, name)
        np.testing.assert_allclose(got["estimator/nll"], expected["estimator/nll"], rtol=0.01)
    r1 = history[0]["d/r1_penalty"], reference[0]["d/r1_penalty"]
    print(f"R1 penalty: float32 {r1[1]:.5f} bfloat16 {r1[0]:.5f}")
    np.testing.assert_allclose(*r1, rtol=0.1)


def test_discriminator_lowers_its_loss_on_a_fixed_batch_in_both_dtypes():
    """Five Adam steps of D's logistic loss on fixed reals and G's fixed fakes."""
    config = tiny_config()
    generator = build_networks(config).generator
    z = jax.random.normal(jax.random.key(0), (BATCH, config.model.z_dim))
    variables = generator.init(jax.random.key(1), z)
    fakes = generator.apply(variables, z, noise_mode="const")["composite"]
    reals = jnp.tanh(3.0 * jax.random.normal(jax.random.key(2), fakes.shape))
    optimizer = optax.adam(config.optim.learning_rate, b1=0.0, b2=0.99)
    losses = {}
    d_params = None
    for dtype in COMPUTE_DTYPES:
        config.model.compute_dtype = dtype
        discriminator = build_networks(config).discriminator
        if d_params is None:
            d_params = discriminator.init(jax.random.key(3), reals)["params"]

        def loss_fn(params, discriminator=discriminator):
            real_logits = discriminator.apply({"params": params}, reals)
            fake_logits = discriminator.apply({"params": params}, fakes)
            return jnp.mean(gan_losses.discriminator_adversarial_loss(real_logits, fake_logits))

        @jax.jit
        def step(params, opt_state, loss_fn=loss_fn):
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        params, opt_state, trajectory = d_params, optimizer.init(d_params), []
        for _ in range(6):
            params, opt_state, loss = step(params, opt_state)
            trajectory.append(float(loss))
        losses[dtype] = trajectory
        print(f"D loss, {dtype}: {np.round(trajectory, 4)}")
    for dtype, trajectory in losses.items():
        assert trajectory[-1] < trajectory[0] - 0.05, (dtype, trajectory)
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], atol=0.05)


# ------------------------------------------------------------------------------------------------
# Configuration.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [ilsgan, perturbgan, stylegan2, labels4free, independence_prior])
def test_every_config_defines_float32_by_default(module):
    for variant in (None, "runlocal"):
        config = module.get_config(variant)
        assert config.model.compute_dtype == "float32"
        assert config.segmenter.compute_dtype == "float32"


def test_an_unknown_dtype_names_the_field_and_the_choices():
    config = tiny_config(compute_dtype="float16")
    with pytest.raises(ValueError, match=r"config\.model\.compute_dtype.*float32.*bfloat16"):
        validate_config(config, 1)
    config = segmenter.default_segmenter_config()
    config.compute_dtype = "bf16"
    with pytest.raises(ValueError, match=r"config\.segmenter\.compute_dtype.*float32.*bfloat16"):
        segmenter.create_state(jax.random.key(0), config, (16, 16, 3))
