"""Our generator and discriminator against the official ILSGAN PyTorch networks, same weights.

Skipped unless torch is installed (the `[fid]` extra brings it) and `ILSGAN_REFERENCE_DIR` points
at a checkout of github.com/qrzou/ILSGAN (its `training/networks.py` is imported from there; no
reference code lives in this repository). The reference's weights are copied into our parameter
tree (layouts: torch conv [O, I, kh, kw] -> ours [kh, kw, I, O]; dense [O, I] -> [I, O]; the
discriminator's 4x4 FC input flattened CHW -> HWC), then the outputs and gradients are compared.

    ILSGAN_REFERENCE_DIR=/path/to/ILSGAN python -m pytest -q tests/test_reference_parity.py
"""

import importlib.util
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_fixtures as fx

from ilsgan_jax.train import builders

REFERENCE_DIR = os.environ.get("ILSGAN_REFERENCE_DIR", "")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None
    or not os.path.isfile(os.path.join(REFERENCE_DIR, "training", "networks.py")),
    reason="needs torch and ILSGAN_REFERENCE_DIR=<checkout of qrzou/ILSGAN>",
)
RESOLUTION, WIDTH, BATCH = 16, 32, 8


@pytest.fixture(scope="module")
def reference():
    import torch

    sys.path.insert(0, REFERENCE_DIR)
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))  # imported, unused
    try:
        from training.networks import DiscriminatorOpen, PerturbGenerator
    finally:
        sys.path.remove(REFERENCE_DIR)
    torch.manual_seed(0)
    common = dict(
        channel_base=RESOLUTION * WIDTH, channel_max=WIDTH, num_fp16_res=0, conv_clamp=256
    )
    generator = PerturbGenerator(
        z_dim=WIDTH,
        c_dim=0,
        w_dim=WIDTH,
        img_resolution=RESOLUTION,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        layer_t_kwargs=dict(xint_max=0.125),
        synthesis_kwargs=common,
    )
    discriminator = DiscriminatorOpen(
        c_dim=0,
        img_resolution=RESOLUTION,
        img_channels=3,
        epilogue_kwargs=dict(mbstd_group_size=4),
        **common,
    )
    with torch.no_grad():  # non-zero biases and noise strengths, so they are exercised
        for name, param in [*generator.named_parameters(), *discriminator.named_parameters()]:
            if name.endswith("bias") or name.endswith("noise_strength"):
                param.add_(0.1 * torch.randn_like(param))
    return generator, discriminator


@pytest.fixture(scope="module")
def ours():
    config = fx.tiny_config()
    assert config.data.resolution == RESOLUTION
    config.model.channel_base = RESOLUTION * WIDTH
    config.model.channel_max = WIDTH
    config.model.z_dim = config.model.w_dim = WIDTH
    config.model.mapping_layers = 2
    config.model.mbstd_group_size = 4
    return builders.build_networks(config)


def _to_ours(name: str, tensor) -> np.ndarray:
    value = tensor.detach().numpy()
    if name.endswith("noise_const"):
        return value[..., None]
    if name.endswith(".const"):
        return value.transpose(1, 2, 0)
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:
        return value.T
    return value


def _assign(tree: dict, path: list[str], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree[key]
    assert tree[path[-1]].shape == value.shape, (path, tree[path[-1]].shape, value.shape)
    tree[path[-1]] = value


def _copy_reference(init, state_dict, locate) -> dict:
    """Our variables (structure from `init(key)`) filled from a torch `state_dict`: `locate(name,
    tensor)` gives (path in our tree, value). Every one of our leaves must come from it."""
    abstract = jax.eval_shape(init, jax.random.key(0))
    variables = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract)
    assigned = 0
    for name, tensor in state_dict.items():
        if name.endswith("resample_filter"):  # fixed FIR taps, constants on our side
            continue
        _assign(variables, *locate(name, tensor))
        assigned += 1
    assert assigned == len(jax.tree.leaves(variables))
    return variables


def _generator_variables(reference_generator, generator) -> dict:
    def locate(name, tensor):
        parts = name.split(".")
        layer = "foreground" if parts[0].endswith("fg") else "background"
        network = "mapping" if parts[0].startswith("mapping") else "synthesis"
        collection = "buffers" if parts[-1] in ("w_avg", "noise_const") else "params"
        return [collection, layer, network, *parts[1:]], _to_ours(name, tensor)

    return _copy_reference(
        lambda key: generator.init({"params": key, "noise": key}, jnp.zeros((2, WIDTH))),
        reference_generator.state_dict(),
        locate,
    )


def _discriminator_variables(reference_discriminator, discriminator) -> dict:
    def locate(name, tensor):
        if name == "b4.fc.weight":  # torch flattens [N, C, 4, 4] as CHW, we flatten HWC
            out = tensor.shape[0]
            value = tensor.detach().numpy().reshape(out, -1, 4, 4).transpose(2, 3, 1, 0)
            return ["params", "b4", "fc", "weight"], value.reshape(-1, out)
        return ["params", *name.split(".")], _to_ours(name, tensor)

    return _copy_reference(
        lambda key: discriminator.init(key, jnp.zeros((BATCH, RESOLUTION, RESOLUTION, 3))),
        reference_discriminator.state_dict(),
        locate,
    )


def test_generator_layers_and_gradients_equal_the_reference(reference, ours):
    import torch

    reference_generator, _ = reference
    variables = _generator_variables(reference_generator, ours.generator)
    z = torch.randn(BATCH, WIDTH)
    weights = torch.linspace(-1, 1, 3 * RESOLUTION**2).reshape(1, 3, RESOLUTION, RESOLUTION)
    reference_generator.requires_grad_(True)
    bg = reference_generator.synthesis_bg(
        reference_generator.mapping_bg(z, None), noise_mode="const"
    )
    fg_rgba = reference_generator.synthesis_fg(
        reference_generator.mapping_fg(z, None), noise_mode="const"
    )
    mask = fg_rgba[:, 3:].sigmoid()
    composite = mask * fg_rgba[:, :3] + (1 - mask) * bg
    (composite * weights).sum().backward()

    def nhwc(tensor):
        return tensor.detach().permute(0, 2, 3, 1).numpy()

    def weighted_composite(params):
        layers = ours.generator.apply(
            {**variables, "params": params}, jnp.asarray(z.numpy()), noise_mode="const"
        )
        return (layers["composite"] * jnp.asarray(nhwc(weights))).sum(), layers

    grads, layers = jax.grad(weighted_composite, has_aux=True)(variables["params"])
    np.testing.assert_allclose(layers["bg_rgb"], nhwc(bg), atol=1e-4)
    np.testing.assert_allclose(layers["fg_rgb"], nhwc(fg_rgba[:, :3]), atol=1e-4)
    np.testing.assert_allclose(layers["mask"], nhwc(mask), atol=1e-5)
    fg_synthesis = reference_generator.synthesis_fg
    pairs = [
        (grads["foreground"]["synthesis"]["b8"]["conv0"]["weight"], fg_synthesis.b8.conv0.weight),
        (
            grads["foreground"]["synthesis"]["b16"]["torgb"]["affine"]["weight"],
            fg_synthesis.b16.torgb.affine.weight,
        ),
        (
            grads["foreground"]["mapping"]["fc0"]["weight"],
            reference_generator.mapping_fg.fc0.weight,
        ),
        (
            grads["background"]["synthesis"]["b4"]["const"],
            reference_generator.synthesis_bg.b4.const,
        ),
    ]
    for ours_grad, torch_param in pairs:
        expected = _to_ours("grad" if torch_param.ndim != 3 else ".const", torch_param.grad)
        scale = np.abs(expected).max()
        assert scale > 0
        np.testing.assert_allclose(ours_grad, expected, atol=1e-5 * scale)


def test_discriminator_logits_and_input_gradients_equal_the_reference(reference, ours):
    import torch

    _, reference_discriminator = reference
    variables = _discriminator_variables(reference_discriminator, ours.discriminator)
    images = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION, requires_grad=True)
    logit_weights = torch.randn(BATCH)
    logits = reference_discriminator(images, None)[:, 0]
    (image_grads,) = torch.autograd.grad((logits * logit_weights).sum(), images)
    # The reference groups minibatch-std samples strided (i, i + N/G, ...), we group contiguous
    # runs: feed our network the batch reordered so that both see the same groups.
    groups = BATCH // 4
    order = np.arange(BATCH).reshape(4, groups).T.ravel()  # [0, 2, 4, 6, 1, 3, 5, 7]
    ours_images = jnp.asarray(images.detach().permute(0, 2, 3, 1).numpy()[order])
    ours_weights = jnp.asarray(logit_weights.numpy()[order])

    def weighted_logits(x):
        out = ours.discriminator.apply(variables, x)
        return (out * ours_weights).sum(), out

    ours_grads, ours_logits = jax.grad(weighted_logits, has_aux=True)(ours_images)
    inverse = np.argsort(order)
    np.testing.assert_allclose(np.asarray(ours_logits)[inverse], logits.detach().numpy(), atol=1e-5)
    expected = image_grads.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(
        np.asarray(ours_grads)[inverse], expected, atol=1e-5 * np.abs(expected).max()
    )
