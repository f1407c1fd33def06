"""Mapping, synthesis and discriminator: shapes, parameter counts, gradients, truncation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.models.discriminator import Discriminator
from ilsgan_jax.models.mapping import MappingNetwork
from ilsgan_jax.models.synthesis import SynthesisNetwork, check_resolution, num_ws

TINY = dict(channel_base=256, channel_max=16)


def count_params(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def expected_mapping_params(z_dim, w_dim, layers):
    """Independent count: layer 0 maps z_dim -> w_dim, the rest w_dim -> w_dim, each with bias."""
    return z_dim * w_dim + w_dim + (layers - 1) * (w_dim * w_dim + w_dim)


def expected_synthesis_params(resolution, img_channels, w_dim, base, cmax):
    """Independent count from the StyleGAN2 skip architecture: per modulated 3x3 layer an affine
    (w_dim -> Cin, bias), the weight 9*Cin*Cout, a noise strength and a bias; per ToRGB an affine,
    a 1x1 weight and a bias; the 4x4 block has a constant input and a single conv."""
    channel = lambda r: min(base // r, cmax)  # noqa: E731
    total = 0
    r = 4
    c = channel(4)
    total += 16 * c  # const
    total += (w_dim * c + c) + 9 * c * c + 1 + c  # conv1
    total += (w_dim * c + c) + c * img_channels + img_channels  # torgb
    while r < resolution:
        r *= 2
        cin, c = c, channel(r)
        total += (w_dim * cin + cin) + 9 * cin * c + 1 + c  # conv0 (up)
        total += (w_dim * c + c) + 9 * c * c + 1 + c  # conv1
        total += (w_dim * c + c) + c * img_channels + img_channels  # torgb
    return total


def expected_discriminator_params(resolution, img_channels, base, cmax):
    """fromrgb 1x1 (+bias); per block: 1x1 skip (no bias), conv0 3x3, conv1 3x3 down; epilogue:
    3x3 conv over C+1 channels (mbstd), FC 16*C -> C, FC C -> 1."""
    channel = lambda r: min(base // r, cmax)  # noqa: E731
    total = img_channels * channel(resolution) + channel(resolution)
    r = resolution
    while r > 4:
        tmp, out = channel(r), channel(r // 2)
        total += tmp * out + (9 * tmp * tmp + tmp) + (9 * tmp * out + out)
        r //= 2
    c4 = channel(4)
    total += 9 * (c4 + 1) * c4 + c4 + 16 * c4 * c4 + c4 + c4 + 1
    return total


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_shapes_and_parameter_counts(resolution):
    key = jax.random.key(resolution)
    w_dim = 8
    synthesis = SynthesisNetwork(resolution, 4, **TINY)
    ws = jax.random.normal(key, (2, num_ws(resolution), w_dim))
    variables = jax.jit(synthesis.init)({"params": key, "noise": key}, ws)
    images, features = jax.jit(
        lambda v, w: synthesis.apply(v, w, rngs={"noise": key}, return_features=True)
    )(variables, ws)
    assert images.shape == (2, resolution, resolution, 4)
    assert sorted(features) == [2**i for i in range(2, resolution.bit_length())]
    assert features[resolution].shape == (2, resolution, resolution, min(256 // resolution, 16))
    assert count_params(variables["params"]) == expected_synthesis_params(
        resolution, 4, w_dim, **{"base": 256, "cmax": 16}
    )

    disc = Discriminator(resolution, 3, **TINY)
    d_vars = jax.jit(disc.init)(key, images[..., :3])
    logits = jax.jit(disc.apply)(d_vars, images[..., :3])
    assert logits.shape == (2,)
    assert count_params(d_vars["params"]) == expected_discriminator_params(resolution, 3, 256, 16)

    mapping = MappingNetwork(w_dim, num_ws(resolution), num_layers=3)
    m_vars = mapping.init(key, jnp.ones((2, 6)))
    assert mapping.apply(m_vars, jnp.ones((2, 6))).shape == (2, num_ws(resolution), w_dim)
    assert count_params(m_vars["params"]) == expected_mapping_params(6, w_dim, 3)


def test_ilsgan_paper_parameter_counts():
    """The ILSGAN 64 px config: channel_base 16384, channel_max 256, z = w = 512, 8 mapping layers,
    foreground synthesis 4 channels, background 3. Counted from abstract shapes (no compute).

    The reference implementation (qrzou/ILSGAN PerturbGenerator / DiscriminatorOpen, counted with
    PyTorch on this machine) reports the same totals: see REFERENCE_COUNTS_64.
    """
    z = jnp.zeros((1, 512))
    counts = {}
    for name, module, args in [
        ("mapping", MappingNetwork(512, num_ws(64)), (z,)),
        ("synthesis_fg", SynthesisNetwork(64, 4), (jnp.zeros((1, num_ws(64), 512)),)),
        ("synthesis_bg", SynthesisNetwork(64, 3), (jnp.zeros((1, num_ws(64), 512)),)),
        ("discriminator", Discriminator(64, 3), (jnp.zeros((1, 64, 64, 3)),)),
    ]:
        shapes = jax.eval_shape(
            lambda m=module, a=args: m.init(
                {"params": jax.random.key(0), "noise": jax.random.key(0)}, *a
            )
        )
        counts[name] = count_params(shapes["params"])
    assert counts["mapping"] == expected_mapping_params(512, 512, 8)
    assert counts["synthesis_fg"] == expected_synthesis_params(64, 4, 512, 16384, 256)
    assert counts["synthesis_bg"] == expected_synthesis_params(64, 3, 512, 16384, 256)
    assert counts["discriminator"] == expected_discriminator_params(64, 3, 16384, 256)
    generator_total = 2 * counts["mapping"] + counts["synthesis_fg"] + counts["synthesis_bg"]
    assert generator_total == REFERENCE_COUNTS_64["generator"]
    assert counts["discriminator"] == REFERENCE_COUNTS_64["discriminator"]


# Parameter totals the PyTorch reference reports for the ILSGAN 64 px config (see the test above).
REFERENCE_COUNTS_64 = {"generator": 18_518_325, "discriminator": 6_625_281}
# At 128 px the reference reports G 19,929,792 and D 7,100,289 (mapping 2,101,248 each).


def test_gradients_are_finite_for_every_parameter():
    key = jax.random.key(3)
    synthesis = SynthesisNetwork(16, 4, **TINY)
    disc = Discriminator(16, 3, **TINY)
    ws = jax.random.normal(key, (4, num_ws(16), 8))
    s_vars = jax.jit(synthesis.init)({"params": key, "noise": key}, ws)
    d_vars = jax.jit(disc.init)(key, jnp.zeros((4, 16, 16, 3)))

    def loss(s_params, d_params):
        images = synthesis.apply(
            {"params": s_params, "buffers": s_vars["buffers"]}, ws, rngs={"noise": key}
        )
        return jnp.mean(disc.apply({"params": d_params}, images[..., :3]) ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(s_vars["params"], d_vars["params"])
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(leaf)), jax.tree_util.keystr(path)
    # Every conv/affine weight receives signal (noise strengths start at 0 but still get grads).
    nonzero = [float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads)]
    assert np.mean(nonzero) > 0.95


def test_truncation_and_w_avg_tracking():
    mapping = MappingNetwork(8, 4, num_layers=2)
    z = jax.random.normal(jax.random.key(0), (5, 8))
    variables = mapping.init(jax.random.key(1), z)
    ws, updated = mapping.apply(variables, z, update_w_avg=True, mutable=["buffers"])
    w_mean = np.asarray(ws[:, 0]).mean(axis=0)
    # w_avg starts at 0: after one update it is (1 - beta) * batch mean.
    np.testing.assert_allclose(np.asarray(updated["buffers"]["w_avg"]), 0.005 * w_mean, rtol=1e-5)
    variables = {"params": variables["params"], "buffers": updated["buffers"]}
    truncated = mapping.apply(variables, z, truncation_psi=0.0)
    np.testing.assert_array_equal(
        np.asarray(truncated), np.broadcast_to(np.asarray(updated["buffers"]["w_avg"]), (5, 4, 8))
    )
    half = mapping.apply(variables, z, truncation_psi=0.5, truncation_cutoff=2)
    w_avg = np.asarray(updated["buffers"]["w_avg"])
    np.testing.assert_allclose(
        np.asarray(half[:, :2]), w_avg + 0.5 * (np.asarray(ws[:, :2]) - w_avg), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(half[:, 2:]), np.asarray(ws[:, 2:]), rtol=1e-6)


def test_noise_modes_and_bad_resolution():
    key = jax.random.key(0)
    synthesis = SynthesisNetwork(16, 3, **TINY)
    ws = jax.random.normal(key, (2, num_ws(16), 8))
    variables = jax.jit(synthesis.init)({"params": key, "noise": key}, ws)
    # Give the noise a visible strength, then const mode is deterministic and random mode is not.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 1.0 if "noise_strength" in jax.tree_util.keystr(p) else x,
        variables["params"],
    )
    variables = {"params": params, "buffers": variables["buffers"]}
    const = jax.jit(lambda v, w: synthesis.apply(v, w, noise_mode="const"))
    random = jax.jit(lambda v, w, k: synthesis.apply(v, w, rngs={"noise": k}))
    const_a, const_b = const(variables, ws), const(variables, ws)
    random_a = random(variables, ws, jax.random.key(1))
    random_b = random(variables, ws, jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(const_a), np.asarray(const_b))
    assert float(jnp.abs(random_a - random_b).max()) > 1e-3
    with pytest.raises(ValueError, match="power of two"):
        check_resolution(48, "config.data.resolution")


def test_mask_logit_offset_shifts_the_mask_logit_only():
    """Same parameters, offset -2: logit(m) moves by exactly -2; fg, bg unchanged; the
    composite follows the new mask."""
    from ilsgan_jax.models.layered import LayeredGenerator

    z = jax.random.normal(jax.random.key(1), (3, 8))
    plain = LayeredGenerator(16, w_dim=8, mapping_layers=1, **TINY)
    shifted = LayeredGenerator(16, w_dim=8, mapping_layers=1, mask_logit_offset=-2.0, **TINY)
    variables = plain.init({"params": jax.random.key(0), "noise": jax.random.key(0)}, z)
    a = plain.apply(variables, z, noise_mode="const")
    b = shifted.apply(variables, z, noise_mode="const")
    logit = lambda m: np.log(m) - np.log1p(-m)  # noqa: E731
    np.testing.assert_allclose(logit(np.float64(b["mask"])), logit(np.float64(a["mask"])) - 2.0,
                               atol=1e-3)
    np.testing.assert_array_equal(a["fg_rgb"], b["fg_rgb"])
    np.testing.assert_array_equal(a["bg_rgb"], b["bg_rgb"])
    expected = b["mask"] * b["fg_rgb"] + (1 - b["mask"]) * b["bg_rgb"]
    np.testing.assert_allclose(b["composite"], expected, atol=1e-6)
