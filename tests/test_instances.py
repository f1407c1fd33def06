"""K-instance layered generator, back-to-front composition and the per-instance losses."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import independence_prior
from ilsgan_jax.models.instances import (
    PRESENCE_LOGIT_OFFSET,
    InstanceLayeredGenerator,
    instance_generator_from_config,
)
from ilsgan_jax.models.layered import LayeredGenerator, StyleGenerator
from ilsgan_jax.nn.composite import composite
from ilsgan_jax.nn.layers_k import composite_back_to_front, composite_without, union_mask
from ilsgan_jax.objectives import ils, instance_losses, mask_losses
from ilsgan_jax.systems import base
from ilsgan_jax.systems.independence_prior import SYSTEM

RES = 16
TINY = dict(w_dim=16, mapping_layers=2, channel_base=128, channel_max=8, conv_clamp=256.0)
BOUNDS = dict(max_rotation=0.4, scale_range=(0.8, 1.25), max_translation=0.2)
Z_DIM = 16


def random_layers(seed, n=3, k=3, size=8):
    rng = np.random.default_rng(seed)
    bg = rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
    fgs = rng.uniform(-1, 1, (n, k, size, size, 3)).astype(np.float32)
    masks = rng.uniform(0, 1, (n, k, size, size, 1)).astype(np.float32)
    return bg, fgs, masks


def numpy_back_to_front(bg, fgs, masks):
    """Reference: per pixel, paint instance 0 first; 'over' each earlier result."""
    out = bg.astype(np.float64).copy()
    for index in range(fgs.shape[1]):
        out = masks[:, index] * fgs[:, index] + (1 - masks[:, index]) * out
    return out


def numpy_closed_form(bg, fgs, masks):
    """The same composite as a weighted sum: instance k's weight is m_k prod_{j>k} (1 - m_j)."""
    k = fgs.shape[1]
    result = bg * np.prod(1 - masks, axis=1)
    for index in range(k):
        weight = masks[:, index] * np.prod(1 - masks[:, index + 1 :], axis=1)
        result = result + weight * fgs[:, index]
    return result


# ------------------------------------------------------------------------------ composition


def test_composite_back_to_front_matches_numpy():
    bg, fgs, masks = random_layers(0)
    result = np.asarray(composite_back_to_front(bg, fgs, masks))
    np.testing.assert_allclose(result, numpy_back_to_front(bg, fgs, masks), atol=1e-6)
    np.testing.assert_allclose(result, numpy_closed_form(bg, fgs, masks), atol=1e-5)


def test_last_instance_is_on_top():
    bg, fgs, masks = random_layers(1, k=2)
    masks[:, 1] = 1.0  # an opaque top instance hides everything below it
    np.testing.assert_allclose(np.asarray(composite_back_to_front(bg, fgs, masks)), fgs[:, 1])


def test_union_mask_and_composite_without():
    bg, fgs, masks = random_layers(2)
    np.testing.assert_allclose(
        np.asarray(union_mask(masks)), 1 - np.prod(1 - masks, axis=1), atol=1e-6
    )
    for instance in range(3):
        others = [i for i in range(3) if i != instance]
        expected = numpy_back_to_front(bg, fgs[:, others], masks[:, others])
        np.testing.assert_allclose(
            np.asarray(composite_without(bg, fgs, masks, instance)), expected, atol=1e-6
        )
    # One instance: the union is its mask and the composite is ILSGAN's two-layer composite.
    np.testing.assert_array_equal(np.asarray(union_mask(masks[:, :1])), masks[:, 0])
    np.testing.assert_array_equal(
        np.asarray(composite_back_to_front(bg, fgs[:, :1], masks[:, :1])),
        np.asarray(composite(fgs[:, 0], masks[:, 0], bg)),
    )


# ------------------------------------------------------------------------------ generator


def init_generator(generator, z, seed=0):
    init = jax.jit(functools.partial(generator.init, noise_mode="const"))
    return init({"params": jax.random.key(seed), "noise": jax.random.key(seed + 1)}, z)


def apply_generator(generator, variables, z):
    return jax.jit(functools.partial(generator.apply, noise_mode="const"))(variables, z)


@functools.cache
def k2_model(share_providers):
    generator = InstanceLayeredGenerator(
        RES, num_instances=2, share_providers=share_providers, **TINY, **BOUNDS
    )
    z = jax.random.normal(jax.random.key(3), (2, 3, Z_DIM))
    return generator, z, init_generator(generator, z)


@pytest.mark.parametrize("share_providers", [False, True])
def test_output_shapes_ranges_and_consistency(share_providers):
    generator, z, variables = k2_model(share_providers)
    layers = apply_generator(generator, variables, z)
    n, k = 2, 2
    expected_shapes = {
        "bg_rgb": (n, RES, RES, 3),
        "provider_rgb": (n, k, RES, RES, 3),
        "provider_mask": (n, k, RES, RES, 1),
        "layout_params": (n, k, 4),
        "layout_theta": (n, k, 2, 3),
        "presence": (n, k),
        "fg_rgb": (n, k, RES, RES, 3),
        "mask": (n, k, RES, RES, 1),
        "union_mask": (n, RES, RES, 1),
        "composite": (n, RES, RES, 3),
    }
    assert {name: value.shape for name, value in layers.items()} == expected_shapes
    mask = np.asarray(layers["mask"])
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    np.testing.assert_allclose(
        np.asarray(layers["composite"]),
        numpy_back_to_front(np.asarray(layers["bg_rgb"]), np.asarray(layers["fg_rgb"]), mask),
        atol=1e-5,
    )
    # A fresh layout network predicts the identity: layout changes nothing at initialisation.
    np.testing.assert_array_equal(np.asarray(layers["layout_params"]), 0.0)
    np.testing.assert_array_equal(mask, np.asarray(layers["provider_mask"]))
    np.testing.assert_array_equal(np.asarray(layers["presence"]), 1.0)  # no presence gate
    # Instances get their own latents: the two instances differ.
    provider_rgb = np.asarray(layers["provider_rgb"])
    assert np.abs(provider_rgb[:, 0] - provider_rgb[:, 1]).max() > 1e-3
    params = variables["params"]
    if share_providers:
        assert set(params) == {"background", "provider", "provider_embedding", "layout"}
        assert params["provider_embedding"].shape == (k, Z_DIM)
    else:
        assert set(params) == {"background", "provider0", "provider1", "layout"}


def test_k1_identity_layout_is_the_ilsgan_generator():
    """K = 1, the same z for both layers, ILSGAN's parameters copied in: every output equals
    LayeredGenerator's (composite(fg, mask, bg)), whatever the layout bounds."""
    instance_generator = InstanceLayeredGenerator(RES, num_instances=1, **TINY, **BOUNDS)
    layered = LayeredGenerator(RES, **TINY)
    z = jax.random.normal(jax.random.key(4), (3, Z_DIM))
    z_instances = jnp.stack([z, z], axis=1)
    variables = init_generator(instance_generator, z_instances)
    ilsgan_variables = init_generator(layered, z, seed=7)
    for collection in ("params", "buffers"):
        variables[collection]["background"] = ilsgan_variables[collection]["background"]
        variables[collection]["provider0"] = ilsgan_variables[collection]["foreground"]
    layers = apply_generator(instance_generator, variables, z_instances)
    expected = apply_generator(layered, ilsgan_variables, z)
    np.testing.assert_array_equal(np.asarray(layers["bg_rgb"]), np.asarray(expected["bg_rgb"]))
    np.testing.assert_array_equal(
        np.asarray(layers["fg_rgb"][:, 0]), np.asarray(expected["fg_rgb"])
    )
    np.testing.assert_array_equal(np.asarray(layers["mask"][:, 0]), np.asarray(expected["mask"]))
    np.testing.assert_array_equal(np.asarray(layers["union_mask"]), np.asarray(expected["mask"]))
    np.testing.assert_allclose(
        np.asarray(layers["composite"]),
        np.asarray(composite(expected["fg_rgb"], expected["mask"], expected["bg_rgb"])),
        atol=1e-6,
    )


def test_low_resolution_background_is_its_own_generator_upsampled():
    """background_resolution = 4 at R = 16: the background parameters are a 4 px StyleGAN2's,
    bg_rgb is that generator's output resized bilinearly to 16 px, and the composite is built
    on it."""
    generator = InstanceLayeredGenerator(
        RES, num_instances=2, background_resolution=4, **TINY, **BOUNDS
    )
    z = jax.random.normal(jax.random.key(5), (2, 3, Z_DIM))
    variables = init_generator(generator, z)
    layers = apply_generator(generator, variables, z)
    small = StyleGenerator(4, 3, **TINY)
    small_variables = {
        collection: variables[collection]["background"] for collection in ("params", "buffers")
    }
    bg_small = np.asarray(small.apply(small_variables, z[:, 0], noise_mode="const"))
    assert bg_small.shape == (2, 4, 4, 3)
    expected = jax.image.resize(bg_small, (2, RES, RES, 3), method="bilinear")
    np.testing.assert_allclose(np.asarray(layers["bg_rgb"]), np.asarray(expected), atol=1e-5)
    # Smooth by construction: neighbouring pixels differ far less than the 4 px pixels do.
    bg = np.asarray(layers["bg_rgb"])
    assert np.abs(np.diff(bg, axis=1)).max() < np.abs(np.diff(bg_small, axis=1)).max()
    np.testing.assert_allclose(
        np.asarray(layers["composite"]),
        numpy_back_to_front(bg, np.asarray(layers["fg_rgb"]), np.asarray(layers["mask"])),
        atol=1e-5,
    )


@pytest.mark.parametrize("size", [1, 2])
def test_one_or_two_pixel_background_is_a_4px_generator_averaged_down(size):
    """background_resolution = 1 or 2 at R = 16: a 4 px StyleGAN2 (its parameters) whose output
    is averaged over 4 / size blocks, then resized bilinearly: 1 px is one colour per sample, 2 px
    a bilinear patch (its rows and columns change monotonically), neither can draw a blob."""
    generator = InstanceLayeredGenerator(
        RES, num_instances=1, background_resolution=size, **TINY, **BOUNDS
    )
    z = jax.random.normal(jax.random.key(6), (3, 2, Z_DIM))
    variables = init_generator(generator, z)
    bg = np.asarray(apply_generator(generator, variables, z)["bg_rgb"])
    small = StyleGenerator(4, 3, **TINY)
    small_variables = {
        collection: variables[collection]["background"] for collection in ("params", "buffers")
    }
    bg4 = np.asarray(small.apply(small_variables, z[:, 0], noise_mode="const"))
    factor = 4 // size
    blocks = np.array(
        [
            [
                bg4[:, i * factor : (i + 1) * factor, j * factor : (j + 1) * factor].mean(
                    axis=(1, 2)
                )
                for j in range(size)
            ]
            for i in range(size)
        ]
    ).transpose(2, 0, 1, 3)  # [size, size, N, 3] -> [N, size, size, 3], no reshape
    expected = jax.image.resize(blocks, (3, RES, RES, 3), method="bilinear")
    np.testing.assert_allclose(bg, np.asarray(expected), atol=1e-5)
    if size == 1:
        np.testing.assert_allclose(
            bg, np.broadcast_to(bg4.mean(axis=(1, 2), keepdims=True), bg.shape), atol=1e-5
        )
    else:
        steps = np.diff(bg, axis=1)  # down the rows: one sign per (sample, column, channel)
        assert np.all((steps >= -1e-6).all(axis=1) | (steps <= 1e-6).all(axis=1))
        assert np.abs(bg[:, 0] - bg[:, -1]).max() > 1e-4  # but not constant


@pytest.mark.parametrize("size", [0, 3, 6, 32])
def test_bad_background_resolution_names_the_field(size):
    generator = InstanceLayeredGenerator(
        RES, num_instances=1, background_resolution=size, **TINY, **BOUNDS
    )
    with pytest.raises(ValueError, match="model.background_resolution"):
        init_generator(generator, jnp.zeros((1, 2, Z_DIM)))


def test_gradients_reach_the_layout_network():
    """Through warp + composition: d(loss)/d(layout params) is nonzero for the output layer and
    matches a central difference along the gradient of its kernel.

    The output bias is moved off zero first: at the identity every sample sits exactly on a
    pixel, where bilinear sampling has a kink (its gradient there is the one-sided difference
    towards the next pixel), so a central difference would not be its derivative."""
    generator, z, variables = k2_model(False)
    target = jax.random.normal(jax.random.key(5), (2, RES, RES, 3))

    @jax.jit
    def loss(layout_params):
        params = dict(variables["params"], layout=layout_params)
        layers = generator.apply(dict(variables, params=params), z, noise_mode="const")
        return jnp.mean(jnp.square(layers["composite"] - target))

    layout_params = jax.tree.map(lambda p: p, variables["params"]["layout"])
    layout_params["output"] = dict(
        layout_params["output"], bias=jnp.array([0.131, -0.087, 0.113, -0.071])
    )
    grads = jax.jit(jax.grad(loss))(layout_params)
    kernel_grad = np.asarray(grads["output"]["kernel"])
    assert np.abs(kernel_grad).max() > 1e-5
    assert np.abs(np.asarray(grads["output"]["bias"])).max() > 1e-5
    # Directional derivative along the kernel gradient vs a central difference.
    step = 1e-2 / np.linalg.norm(kernel_grad)
    direction = jax.tree.map(jnp.zeros_like, layout_params)
    direction["output"]["kernel"] = jnp.asarray(kernel_grad)

    def shifted(sign):
        return jax.tree.map(lambda p, d: p + sign * step * d, layout_params, direction)

    numeric = (loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * step)
    np.testing.assert_allclose(float(numeric), float(np.sum(kernel_grad**2)), rtol=0.1)


@pytest.mark.parametrize("share_providers", [False, True])
def test_constant_provider_style_draws_one_appearance_and_z_moves_only_the_layout(
    share_providers,
):
    """With provider_style='constant' the providers' drawings do not depend on the instance
    latents z[:, 1:] (only on learned latents of their own), while the layout does; with the
    paper's 'latent' style the same change of z changes the drawings."""
    z = jax.random.normal(jax.random.key(8), (2, 3, Z_DIM))
    other_z = z.at[:, 1:].set(jax.random.normal(jax.random.key(9), (2, 2, Z_DIM)))
    for style in ("constant", "latent"):
        generator = InstanceLayeredGenerator(
            RES,
            num_instances=2,
            share_providers=share_providers,
            provider_style=style,
            **TINY,
            **BOUNDS,
        )
        variables = init_generator(generator, z)
        params = variables["params"]
        # A trained layout: the output layer off its zero initialisation.
        output = params["layout"]["output"]
        params["layout"]["output"] = dict(
            output, kernel=jax.random.normal(jax.random.key(10), output["kernel"].shape)
        )
        first = apply_generator(generator, variables, z)
        second = apply_generator(generator, variables, other_z)
        drawn_changes = float(jnp.abs(first["provider_rgb"] - second["provider_rgb"]).max())
        np.testing.assert_array_equal(np.asarray(first["bg_rgb"]), np.asarray(second["bg_rgb"]))
        assert float(jnp.abs(first["layout_params"] - second["layout_params"]).max()) > 1e-2
        if style == "latent":
            assert drawn_changes > 1e-3
            continue
        assert drawn_changes == 0.0
        np.testing.assert_array_equal(
            np.asarray(first["provider_mask"]), np.asarray(second["provider_mask"])
        )
        # Each provider still draws its own instance (their learned latents differ).
        drawn = np.asarray(first["provider_rgb"])
        assert np.abs(drawn[:, 0] - drawn[:, 1]).max() > 1e-3
        latent_name = "provider_embedding" if share_providers else "provider_latents"
        assert params[latent_name].shape == (2, Z_DIM)


def test_presence_gate_multiplies_the_laid_out_mask():
    """presence = sigmoid(logit + PRESENCE_LOGIT_OFFSET) with the logit the layout network's
    fifth output: 0.88 at initialisation; a logit of -offset halves every mask, a very negative
    one removes the instance from the composite."""
    generator = InstanceLayeredGenerator(
        RES, num_instances=2, presence_gate=True, **TINY, **BOUNDS
    )
    z = jax.random.normal(jax.random.key(11), (2, 3, Z_DIM))
    variables = init_generator(generator, z)
    layers = apply_generator(generator, variables, z)
    assert variables["params"]["layout"]["output"]["bias"].shape == (5,)
    provider_mask = np.asarray(layers["provider_mask"])  # the identity layout at init
    fresh = 1.0 / (1.0 + np.exp(-PRESENCE_LOGIT_OFFSET))
    np.testing.assert_allclose(np.asarray(layers["presence"]), fresh, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(layers["mask"]), fresh * provider_mask, rtol=1e-6)

    def with_presence_logit(per_instance_bias):
        params = jax.tree.map(lambda p: p, variables["params"])
        params["layout"]["output"] = dict(
            params["layout"]["output"], bias=jnp.array([0.0, 0.0, 0.0, 0.0, per_instance_bias])
        )
        return apply_generator(generator, dict(variables, params=params), z)

    half = with_presence_logit(-PRESENCE_LOGIT_OFFSET)
    np.testing.assert_allclose(np.asarray(half["mask"]), 0.5 * provider_mask, rtol=1e-6)
    absent = with_presence_logit(-PRESENCE_LOGIT_OFFSET - 60.0)
    assert float(jnp.abs(absent["mask"]).max()) < 1e-20
    np.testing.assert_allclose(
        np.asarray(absent["composite"]), np.asarray(absent["bg_rgb"]), atol=1e-6
    )


def test_unknown_provider_style_names_the_field():
    generator = InstanceLayeredGenerator(RES, num_instances=1, provider_style="fixed", **TINY)
    with pytest.raises(ValueError, match="model.provider_style"):
        init_generator(generator, jnp.zeros((1, 2, Z_DIM)))


def test_bad_latent_shape_raises():
    generator, _, variables = k2_model(False)
    with pytest.raises(ValueError, match="z must be"):
        apply_generator(generator, variables, jnp.zeros((2, 2, Z_DIM)))


# ------------------------------------------------------------------------------ losses


def test_area_penalty_and_binarisation_match_numpy():
    _, _, masks = random_layers(6, n=4, k=3)
    weight = 0.3
    np.testing.assert_allclose(
        np.asarray(instance_losses.area_penalty(masks, weight=weight)),
        weight * masks.mean(axis=(2, 3, 4)).sum(axis=1),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(instance_losses.instance_areas(masks)), masks.mean(axis=(2, 3, 4)), rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(instance_losses.instance_binarisation(masks)),
        np.minimum(masks, 1 - masks).mean(axis=(2, 3, 4)).sum(axis=1),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="masks"):
        instance_losses.area_penalty(masks[:, 0], weight=1.0)


def test_min_area_penalty_lifts_only_instances_below_the_floor():
    """sum_k relu(floor - batch-mean area of k): a numpy reference, and a gradient that is
    negative (raises the mask) on every pixel of an instance below the floor and 0 on one above."""
    rng = np.random.default_rng(3)
    masks = rng.uniform(0, 1, (4, 3, 8, 8, 1)).astype(np.float32)
    masks[:, 0] *= 0.02  # instance 0: mean area ~0.01, below the floor
    masks[:, 1] *= 0.04  # instance 1: ~0.02, below the floor
    floor = 0.2
    expected = np.maximum(floor - masks.mean(axis=(0, 2, 3, 4)), 0.0).sum()
    got = instance_losses.min_area_penalty(masks, min_area=floor)
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    assert masks[:, 2].mean() > floor

    def penalty(m):
        return instance_losses.min_area_penalty(m, min_area=floor)

    grad = np.asarray(jax.grad(penalty)(masks))
    np.testing.assert_allclose(grad[:, :2], -1.0 / (4 * 8 * 8), rtol=1e-6)
    np.testing.assert_array_equal(grad[:, 2], 0.0)
    with pytest.raises(ValueError, match="loss.instance_min_area"):
        instance_losses.min_area_penalty(masks, min_area=1.5)


def test_min_area_penalty_with_a_power_discounts_a_faint_veil():
    """With power 2 a veil of m = 0.1 over the whole frame reads 0.01 (below a floor of 0.03),
    while with power 1 it reads its area 0.1; a solid mask over 0.05 of the frame reads 0.05
    either way; a power below 1 is refused naming the field."""
    veil = np.full((2, 1, 10, 10, 1), 0.1, np.float32)
    solid = np.zeros((2, 1, 10, 10, 1), np.float32)
    solid[:, :, :5, :1] = 1.0  # 5 of 100 pixels
    masks = np.concatenate([veil, solid], axis=1)
    np.testing.assert_allclose(
        float(instance_losses.min_area_penalty(masks, min_area=0.03, power=2.0)), 0.02, rtol=1e-5
    )
    assert float(instance_losses.min_area_penalty(masks, min_area=0.03)) == 0.0
    np.testing.assert_allclose(
        float(instance_losses.min_area_penalty(masks, min_area=0.06, power=3.0)),
        (0.06 - 0.001) + (0.06 - 0.05),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="loss.instance_min_area_power"):
        instance_losses.min_area_penalty(masks, min_area=0.03, power=0.5)


def test_pairwise_ils_is_ilsgan_ils_per_instance():
    bg, fgs, masks = random_layers(7, n=4, k=3)
    key = jax.random.key(8)
    result = instance_losses.pairwise_ils(key, bg, fgs, masks, sigma=0.5)
    for instance, instance_key in enumerate(jax.random.split(key, 3)):
        expected = ils.ils_term(
            instance_key,
            fgs[:, instance],
            composite_without(bg, fgs, masks, instance),
            masks[:, instance],
            sigma=1.0,
        )
        np.testing.assert_allclose(
            np.asarray(result.instance_bounds[instance]),
            np.asarray(expected.pair_bounds),
            rtol=1e-6,
        )
    np.testing.assert_allclose(
        float(result.loss), 0.5 * float(np.sum(result.instance_bounds)), rtol=1e-6
    )
    # K = 1: exactly ILSGAN's term with the same key.
    single = instance_losses.pairwise_ils(key, bg, fgs[:, :1], masks[:, :1], sigma=0.5)
    ilsgan = ils.ils_term(key, fgs[:, 0], bg, masks[:, 0], sigma=0.5)
    np.testing.assert_allclose(float(single.loss), float(ilsgan.loss), rtol=1e-6)
    # The per-instance binarisation equals ILSGAN's, summed over instances.
    np.testing.assert_allclose(
        np.asarray(instance_losses.instance_binarisation(masks)),
        sum(np.asarray(mask_losses.binarisation_loss(masks[:, i])) for i in range(3)),
        rtol=1e-6,
    )


# ------------------------------------------------------------------------------ config


def test_config_builds_the_generator_it_describes():
    config = independence_prior.get_config("runlocal,k=3,share=1,ils=pairwise")
    assert config.system == "independence_prior" and config.data.name == "single_image"
    assert config.loss.ils.enabled and config.loss.xint_max == 0.0
    generator = instance_generator_from_config(config)
    assert generator.num_instances == 3 and generator.share_providers
    assert generator.resolution == config.data.resolution
    assert tuple(generator.scale_range) == tuple(config.model.layout.scale_range)
    # runlocal's one-image choice: a 2 px background (the full size keeps the paper's, None)
    assert generator.background_resolution == config.model.background_resolution == 2
    # The paper's providers by default; the options reach the generator.
    assert generator.provider_style == "latent" and not generator.presence_gate
    assert generator.frame_scale == 1.0
    config.model.provider_style, config.model.layout.presence_gate = "constant", True
    config.model.layout.frame_scale = 0.5
    generator_with_options = instance_generator_from_config(config)
    assert generator_with_options.provider_style == "constant"
    assert generator_with_options.presence_gate and generator_with_options.frame_scale == 0.5
    # Its parameter tree: background, one shared provider + a [K, z_dim] embedding, layout MLP.
    z = jax.ShapeDtypeStruct((2, 4, config.model.z_dim), jnp.float32)
    shapes = jax.eval_shape(
        functools.partial(generator.init, noise_mode="const"),
        {"params": jax.random.key(0), "noise": jax.random.key(1)},
        z,
    )["params"]
    assert set(shapes) == {"background", "provider", "provider_embedding", "layout"}
    assert shapes["provider_embedding"].shape == (3, config.model.z_dim)
    assert shapes["layout"]["hidden0"]["kernel"].shape == (
        config.model.w_dim + 3,
        config.model.layout.hidden_features,
    )


@pytest.mark.parametrize("variant", ["k=0", "ils=yes", "colour=1"])
def test_config_rejects_bad_variants(variant):
    with pytest.raises(ValueError, match="independence_prior"):
        independence_prior.get_config(variant)


def test_sample_grid_shows_every_instance_row():
    """The Independence prior's grid has the composite, the background and each instance over
    white and its mask (2 + 2K rows), in that order: rows the layered order does not name are
    kept, after the named ones."""
    from ilsgan_jax.evaluate.samples import make_grid, to_uint8
    from ilsgan_jax.systems.independence_prior import sample_rows

    n, k, r = 2, 3, 8
    rng = np.random.default_rng(0)
    layers = {
        "composite": rng.uniform(-1, 1, (n, r, r, 3)).astype(np.float32),
        "bg_rgb": rng.uniform(-1, 1, (n, r, r, 3)).astype(np.float32),
        "fg_rgb": rng.uniform(-1, 1, (n, k, r, r, 3)).astype(np.float32),
        "mask": rng.uniform(0, 1, (n, k, r, r, 1)).astype(np.float32),
    }
    rows = {name: np.asarray(value) for name, value in sample_rows(None, layers, None).items()}
    grid = make_grid(rows)
    assert grid.shape == ((2 + 2 * k) * (r + 1) + 1, n * (r + 1) + 1, 3)
    last_mask_row = 1 + (2 + 2 * k - 1) * (r + 1)
    np.testing.assert_array_equal(
        grid[last_mask_row : last_mask_row + r, 1 : 1 + r], to_uint8(rows[f"mask_{k - 1}"][0])
    )
    np.testing.assert_array_equal(grid[1 : 1 + r, 1 : 1 + r], to_uint8(layers["composite"][0]))


def loss_layers(fgs: np.ndarray, masks: np.ndarray) -> dict:
    """The layers the generator loss reads: the same masks before and after layout, a black
    background and their union."""
    return {
        "provider_mask": masks,
        "mask": masks,
        "fg_rgb": fgs,
        "bg_rgb": np.zeros(fgs.shape[:1] + fgs.shape[2:], np.float32),
        "union_mask": np.asarray(union_mask(masks)),
    }


def test_area_penalty_ramps_up_over_area_rampup_kimg():
    """The generator loss's area term is area_weight * min(kimg / area_rampup_kimg, 1) times
    the summed provider areas: 0 at the start, half at half the ramp, full after it."""
    config = independence_prior.get_config("runlocal,k=2")
    config.loss.area_weight, config.loss.area_rampup_kimg = 0.5, 10.0
    _, fgs, masks = random_layers(1, n=2, k=2)
    layers = loss_layers(fgs, masks)
    full_area = 0.5 * masks.mean(axis=(2, 3, 4)).sum(axis=1).mean()
    for nimg, fraction in ((0, 0.0), (5000, 0.5), (10_000, 1.0), (40_000, 1.0)):
        inputs = base.LossInputs(layers, layers, jnp.int32(nimg), jax.random.key(0), None)
        total, metrics = SYSTEM.generator_loss(config, inputs)
        np.testing.assert_allclose(float(metrics["g/area"]), fraction * full_area, rtol=1e-5)
        np.testing.assert_allclose(float(total), fraction * full_area, rtol=1e-5)


def test_instance_binarisation_waits_for_its_start_then_ramps():
    """With the area penalty off, the generator loss is the binarisation term alone:
    0 before instance_bin_start_kimg, half its weight halfway through the ramp, then
    instance_bin_weight * sum_k mean min(m_k, 1 - m_k) (computed here with numpy)."""
    config = independence_prior.get_config("runlocal,k=2")
    config.loss.area_weight = 0.0
    config.loss.instance_bin_weight = 2.0
    config.loss.instance_bin_start_kimg, config.loss.instance_bin_rampup_kimg = 30.0, 10.0
    _, fgs, masks = random_layers(2, n=2, k=2)
    layers = loss_layers(fgs, masks)
    full = 2.0 * np.minimum(masks, 1.0 - masks).mean(axis=(2, 3, 4)).sum(axis=1).mean()
    assert full > 0.1
    for nimg, fraction in ((0, 0.0), (29_000, 0.0), (35_000, 0.5), (60_000, 1.0)):
        inputs = base.LossInputs(layers, layers, jnp.int32(nimg), jax.random.key(0), None)
        total, _ = SYSTEM.generator_loss(config, inputs)
        np.testing.assert_allclose(float(total), fraction * full, rtol=1e-5, atol=1e-7)


def test_min_area_penalty_on_the_variance_ignores_a_shape_drawn_alike_in_every_sample():
    """'variance' reads mean_HW Var_N(m): a NumPy reference on random masks; a solid shape at
    one place in every sample reads 0 (the full floor), although its opaque area meets the
    'mean' floor; a shape of area a at N disjoint places reads a (1 - 1/N); below the floor
    the gradient pushes each pixel away from its batch mean; a power other than 1 and an
    unknown statistic are refused naming their fields."""
    rng = np.random.default_rng(11)
    soft = rng.uniform(0, 1, (5, 2, 6, 6, 1)).astype(np.float32)
    expected = np.maximum(0.4 - soft.var(axis=0).mean(axis=(1, 2, 3)), 0.0).sum()
    got = instance_losses.min_area_penalty(soft, min_area=0.4, statistic="variance")
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)

    n, side = 4, 8
    fixed = np.zeros((n, 1, side, side, 1), np.float32)
    fixed[:, :, :2, :4] = 1.0  # 8 of 64 pixels, the same place in every sample
    moving = np.zeros_like(fixed)
    for sample in range(n):
        moving[sample, :, 2 * sample : 2 * sample + 2, 4:] = 1.0  # 8 pixels, disjoint places
    masks = np.concatenate([fixed, moving], axis=1)
    area = 8 / 64
    np.testing.assert_allclose(
        float(instance_losses.min_area_penalty(masks, min_area=0.1, power=2.0)), 0.0, atol=1e-7
    )
    # Each moving pixel is on in 1 of N samples: Var = (1/N)(1 - 1/N); 4 x 8 such pixels.
    moving_variance = 4 * 8 / 64 * (1 / n) * (1 - 1 / n)
    np.testing.assert_allclose(moving_variance, area * (1 - 1 / n))
    variance_floor = instance_losses.min_area_penalty(masks, min_area=0.1, statistic="variance")
    np.testing.assert_allclose(float(variance_floor), 0.1 + max(0.1 - moving_variance, 0.0))

    grad = np.asarray(
        jax.grad(
            lambda m: instance_losses.min_area_penalty(m, min_area=0.2, statistic="variance")
        )(jnp.asarray(masks))
    )
    # Below the floor the gradient pushes each pixel away from its batch mean: on where the
    # shape is drawn, off where it is not.
    assert np.all(grad[:, 1][moving[:, 0] == 1] < 0)
    assert np.all(grad[:, 1][(moving[:, 0] == 0) & (moving.max(axis=0)[0] == 1)[None]] > 0)
    with pytest.raises(ValueError, match="loss.instance_min_area_power"):
        instance_losses.min_area_penalty(masks, min_area=0.1, power=2.0, statistic="variance")
    with pytest.raises(ValueError, match="loss.instance_min_area_statistic"):
        instance_losses.min_area_penalty(masks, min_area=0.1, statistic="median")


def test_generator_loss_floor_reads_the_statistic_its_field_names():
    """The same laid-out masks (one instance a fixed shape, one a moving one) give the floor of
    `min_area_penalty` with the configured statistic."""
    config = independence_prior.get_config("runlocal,k=2")
    config.loss.area_weight = 0.0
    config.loss.instance_min_area, config.loss.instance_min_area_weight = 0.1, 2.0
    config.loss.instance_min_area_mask = "layout"
    _, fgs, masks = random_layers(9, n=4, k=2)
    masks = np.zeros_like(masks)
    masks[:, 0, :4, :4] = 1.0  # the same shape in every sample
    for sample in range(masks.shape[0]):
        masks[sample, 1, sample : sample + 1, :] = 1.0
    layers = loss_layers(fgs, masks)
    inputs = base.LossInputs(layers, layers, jnp.int32(0), jax.random.key(0), None)
    floors = {}
    for statistic in ("mean", "variance"):
        config.loss.instance_min_area_statistic = statistic
        total, metrics = SYSTEM.generator_loss(config, inputs)
        expected = instance_losses.min_area_penalty(
            jnp.asarray(masks), min_area=0.1, statistic=statistic
        )
        np.testing.assert_allclose(float(metrics["g/min_area"]), float(expected), rtol=1e-6)
        np.testing.assert_allclose(float(total), 2.0 * float(expected), rtol=1e-6)
        floors[statistic] = float(expected)
    assert floors["variance"] > floors["mean"] + 0.09  # the fixed shape meets only 'mean'


def test_generator_loss_adds_the_weighted_min_area_floor():
    config = independence_prior.get_config("runlocal,k=2")
    config.loss.area_weight = 0.0
    config.loss.instance_min_area, config.loss.instance_min_area_weight = 0.9, 3.0
    _, fgs, masks = random_layers(4, n=2, k=2)
    layers = loss_layers(fgs, masks)
    inputs = base.LossInputs(layers, layers, jnp.int32(0), jax.random.key(0), None)
    total, metrics = SYSTEM.generator_loss(config, inputs)
    floor = np.maximum(0.9 - masks.mean(axis=(0, 2, 3, 4)), 0.0).sum()
    assert floor > 0.5
    np.testing.assert_allclose(float(metrics["g/min_area"]), floor, rtol=1e-5)
    np.testing.assert_allclose(float(total), 3.0 * floor, rtol=1e-5)


def test_colour_spread_is_the_weighted_variance_of_the_mean_colour():
    """A provider of one colour has no spread whatever its masks; one that switches between two
    colours has the weighted variance of the two; an empty sample does not count; random
    layers match a NumPy reference."""
    n, size = 4, 8
    masks = np.zeros((n, 3, size, size, 1), np.float32)
    masks[:, :, 2:6, 2:6] = 1.0
    masks[0, 0, 2:4] = 0.0  # another shape in one sample: the same colour, no spread
    rgbs = np.zeros((n, 3, size, size, 3), np.float32)
    orange, magenta = np.array([1.0, 0.5, -1.0]), np.array([1.0, -1.0, 1.0])
    rgbs[:, 0] = orange
    rgbs[:1, 1], rgbs[1:, 1] = orange, magenta  # one sample orange, three magenta
    rgbs[:, 2] = magenta
    rgbs[0, 2], masks[0, 2] = orange, 0.0  # orange only where the instance is empty
    spread = np.asarray(instance_losses.colour_spread(jnp.asarray(rgbs), jnp.asarray(masks)))
    np.testing.assert_allclose(spread[0], 0.0, atol=1e-10)
    np.testing.assert_allclose(spread[1], 0.25 * 0.75 * np.sum((orange - magenta) ** 2), rtol=1e-5)
    np.testing.assert_allclose(spread[2], 0.0, atol=1e-10)

    _, fgs, soft = random_layers(6, n=5, k=2)
    expected = []
    for k in range(2):
        area = soft[:, k].sum(axis=(1, 2, 3))
        colour = (soft[:, k] * fgs[:, k]).sum(axis=(1, 2)) / area[:, None]
        weight = area / area.sum()
        centre = (weight[:, None] * colour).sum(axis=0)
        expected.append((weight[:, None] * (colour - centre) ** 2).sum())
    np.testing.assert_allclose(
        np.asarray(instance_losses.colour_spread(jnp.asarray(fgs), jnp.asarray(soft))),
        expected,
        rtol=1e-5,
    )


def test_generator_loss_adds_the_weighted_colour_spread_of_the_providers():
    config = independence_prior.get_config("runlocal,k=2")
    config.loss.area_weight, config.loss.instance_colour_weight = 0.0, 2.5
    _, fgs, masks = random_layers(7, n=3, k=2)
    # The providers' frames hold other colours than the instances as laid out in the image.
    _, frame_fgs, frame_masks = random_layers(8, n=3, k=2)
    layers = dict(loss_layers(fgs, masks), provider_rgb=frame_fgs, provider_mask=frame_masks)
    inputs = base.LossInputs(layers, layers, jnp.int32(0), jax.random.key(0), None)
    spreads = {}
    for choice, (rgbs, source_masks) in {
        "layout": (fgs, masks),
        "provider": (frame_fgs, frame_masks),
    }.items():
        config.loss.instance_colour_mask = choice
        total, metrics = SYSTEM.generator_loss(config, inputs)
        spread = float(
            np.sum(instance_losses.colour_spread(jnp.asarray(rgbs), jnp.asarray(source_masks)))
        )
        assert spread > 1e-3
        np.testing.assert_allclose(float(metrics["g/colour_spread"]), spread, rtol=1e-6)
        np.testing.assert_allclose(float(total), 2.5 * spread, rtol=1e-5)
        spreads[choice] = spread
    assert abs(spreads["layout"] - spreads["provider"]) > 1e-3
    config.loss.instance_colour_mask = "layout"
    spread = spreads["layout"]
    # With a start and a ramp: nothing before the start, half the weight half-way up the ramp.
    config.loss.instance_colour_start_kimg, config.loss.instance_colour_rampup_kimg = 10.0, 4.0
    for nimg, fraction in ((9_999, 0.0), (12_000, 0.5), (20_000, 1.0)):
        inputs_at = base.LossInputs(layers, layers, jnp.int32(nimg), jax.random.key(0), None)
        total_at, _ = SYSTEM.generator_loss(config, inputs_at)
        np.testing.assert_allclose(float(total_at), fraction * 2.5 * spread, rtol=1e-5, atol=1e-7)
    config.loss.instance_colour_weight = 0.0  # off: the term is not computed
    total_off, metrics_off = SYSTEM.generator_loss(config, inputs)
    assert float(total_off) == 0.0 and "g/colour_spread" not in metrics_off


@pytest.mark.parametrize("choice, source", [("provider", "provider_mask"), ("layout", "mask")])
def test_min_area_floor_reads_the_masks_its_field_names(choice, source):
    """With the provider's masks full and the laid-out ones moved out of the image (zero), the
    floor is 0 on the provider's masks and K * min_area on the laid-out ones."""
    config = independence_prior.get_config("runlocal,k=2")
    config.loss.area_weight = 0.0
    config.loss.instance_min_area, config.loss.instance_min_area_weight = 0.05, 2.0
    config.loss.instance_min_area_mask = choice
    _, fgs, masks = random_layers(5, n=2, k=2)
    layers = loss_layers(fgs, masks)
    layers["provider_mask"] = np.ones_like(masks)
    layers["mask"] = np.zeros_like(masks)
    inputs = base.LossInputs(layers, layers, jnp.int32(0), jax.random.key(0), None)
    total, metrics = SYSTEM.generator_loss(config, inputs)
    expected = 2 * 0.05 if source == "mask" else 0.0
    np.testing.assert_allclose(float(metrics["g/min_area"]), expected, atol=1e-7)
    np.testing.assert_allclose(float(total), 2.0 * expected, atol=1e-7)


@pytest.mark.parametrize("key", ["area_mask", "instance_min_area_mask"])
def test_unknown_area_mask_choice_names_the_field(key):
    config = independence_prior.get_config("runlocal,k=2")
    config.loss.instance_min_area_weight = 1.0
    config.loss[key] = "warped"
    _, fgs, masks = random_layers(6, n=2, k=2)
    layers = loss_layers(fgs, masks)
    inputs = base.LossInputs(layers, layers, jnp.int32(0), jax.random.key(0), None)
    with pytest.raises(ValueError, match=f"loss.{key} must be one of"):
        SYSTEM.generator_loss(config, inputs)
