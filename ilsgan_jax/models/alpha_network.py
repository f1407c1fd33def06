"""Labels4Free (Abdal et al. 2021): an alpha network on a frozen, pretrained StyleGAN2 generator.

`z: [N, z_dim] -> {'fg_rgb', 'mask', 'bg_rgb', 'composite'}` like the layered generators, so the
shared train step trains it unchanged. The only trainable parameters ('params') are the alpha
network's; the pretrained generator's variables live in the 'frozen' collection (the train state
keeps them in `g_buffers`, so the G optimiser and the G EMA see the alpha network only).

- foreground `fg_rgb = G(z; psi)` (truncation on the foreground only),
- background `bg_rgb = G_bg(z)`: the same generator with its 4x4 block's features zeroed,
- `mask = alpha(features of the foreground pass)`: per resolution from `min_feature_resolution`
  up, both conv outputs of the block go through a 1x1 conv to 3 channels and are concatenated
  (6 channels); coarse to fine, the running map is upsampled 2x (bicubic, align_corners), merged
  with the next resolution's 6 channels by a 1x1 conv (12 -> 6) + LeakyReLU 0.2, and at full
  resolution added to that resolution's 6 channels and mapped to one sigmoid channel,
- `composite = mask * fg_rgb + (1 - mask) * bg_rgb`.

With `compute_dtype='bfloat16'` the frozen generator computes in bfloat16 (its variables stay
float32); the alpha network (1x1 convs to a few channels) reads its features as float32 and runs
in float32, like the mask and the compositing.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ilsgan_jax.models.layered import StyleGenerator
from ilsgan_jax.models.synthesis import SynthesisLayer, block_resolutions, check_resolution
from ilsgan_jax.nn.composite import composite

FROZEN_COLLECTION = "frozen"  # where the pretrained generator's variables live
PROJECTED_CHANNELS = 3  # channels of each feature map's 1x1 projection (reference: 3)
MERGE_SLOPE = 0.2  # LeakyReLU slope after each merge conv


def cubic_weight(distance: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel (PyTorch / TF1 bicubic use a = -0.75)."""
    d = np.abs(distance)
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return np.where(d <= 1.0, near, np.where(d < 2.0, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """`[out_size, in_size]` float32 matrix of 1-D bicubic resampling with aligned corners
    (`torch.nn.Upsample(mode='bicubic', align_corners=True)`): output `i` samples input position
    `i * (in_size - 1) / (out_size - 1)`; taps outside the input are clamped to the border."""
    if in_size < 1 or out_size < 2:
        raise ValueError(
            f"bicubic_matrix needs in_size >= 1 and out_size >= 2, got {in_size}, {out_size}"
        )
    matrix = np.zeros((out_size, in_size), np.float64)
    scale = (in_size - 1) / (out_size - 1)
    for i in range(out_size):
        position = i * scale
        left = math.floor(position)
        fraction = position - left
        for tap in range(-1, 3):
            index = min(max(left + tap, 0), in_size - 1)
            matrix[i, index] += cubic_weight(np.float64(tap - fraction))
    return matrix.astype(np.float32)


def upsample_bicubic_2x(images: jnp.ndarray) -> jnp.ndarray:
    """`[N, H, W, C] -> [N, 2H, 2W, C]`, separable bicubic with aligned corners."""
    _, height, width, _ = images.shape
    rows = jnp.asarray(bicubic_matrix(height, 2 * height))
    cols = jnp.asarray(bicubic_matrix(width, 2 * width))
    images = jnp.einsum("oh,nhwc->nowc", rows, images, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("pw,nowc->nopc", cols, images, precision=jax.lax.Precision.HIGHEST)


def _torch_uniform(fan_in: int):
    """PyTorch's default Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv1x1(nn.Module):
    """A plain (not equalised) 1x1 convolution with bias, PyTorch's default initialisation.
    `[N, H, W, C_in] -> [N, H, W, features]`."""

    features: int  # output channels

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", _torch_uniform(fan_in), (fan_in, self.features))
        bias = self.param("bias", _torch_uniform(fan_in), (self.features,))
        return jnp.einsum("nhwc,cd->nhwd", x, kernel, precision=jax.lax.Precision.HIGHEST) + bias


class AlphaNetwork(nn.Module):
    """Soft foreground mask from the synthesis network's feature maps (the reference's
    `bg_extractor`).

    Input: `features`, coarse to fine, one pair per resolution `min_resolution * 2**k` up to the
    image resolution: `(conv0 output, conv1 output)`, each `[N, r, r, C_r]` (float32 or bfloat16;
    computed in float32).
    Output: `[N, R, R, 1]` float32 in (0, 1).
    """

    @nn.compact
    def __call__(self, features: Sequence[tuple[jnp.ndarray, jnp.ndarray]]) -> jnp.ndarray:
        if len(features) < 2:
            raise ValueError(
                f"AlphaNetwork needs feature pairs at >= 2 resolutions, got {len(features)}"
            )
        for level, pair in enumerate(features):
            expected = features[0][0].shape[1] * 2**level
            shape_ok = all(f.ndim == 4 and f.shape[1:3] == (expected, expected) for f in pair)
            if len(pair) != 2 or not shape_ok:
                raise ValueError(
                    f"features[{level}] must be two [N, {expected}, {expected}, C] maps, got "
                    f"{[getattr(f, 'shape', None) for f in pair]}"
                )

        def project(level: int) -> jnp.ndarray:
            resolution = features[level][0].shape[1]
            return jnp.concatenate(
                [
                    Conv1x1(PROJECTED_CHANNELS, name=f"project{resolution}_conv{i}")(
                        feature.astype(jnp.float32)
                    )
                    for i, feature in enumerate(features[level])
                ],
                axis=-1,
            )

        running = upsample_bicubic_2x(project(0))
        for level in range(1, len(features) - 1):
            resolution = features[level][0].shape[1]
            merged = Conv1x1(2 * PROJECTED_CHANNELS, name=f"merge{resolution}")(
                jnp.concatenate([project(level), running], axis=-1)
            )
            running = upsample_bicubic_2x(nn.leaky_relu(merged, MERGE_SLOPE))
        logits = Conv1x1(1, name="to_mask")(project(len(features) - 1) + running)
        return jax.nn.sigmoid(logits)


def _is_synthesis_layer(module: nn.Module, method_name: str) -> bool:
    return isinstance(module, SynthesisLayer) and method_name == "__call__"


def feature_pairs(intermediates: dict, resolutions: Sequence[int]) -> list[tuple]:
    """`(conv0, conv1)` outputs per resolution from a StyleGenerator's captured intermediates."""
    synthesis = intermediates["synthesis"]
    return [
        tuple(synthesis[f"b{r}"][name]["__call__"][0] for name in ("conv0", "conv1"))
        for r in resolutions
    ]


class Labels4FreeGenerator(nn.Module):
    """Frozen pretrained StyleGAN2 + trainable alpha network, with the layered generators' call
    signature. The architecture fields must match the pretrained `stylegan2` generator's."""

    resolution: int  # output resolution R
    w_dim: int = 512  # W dimensionality of the pretrained generator
    mapping_layers: int = 8  # depth of its mapping network
    channel_base: int = 16384  # its synthesis width rule numerator
    channel_max: int = 256  # its synthesis width cap
    conv_clamp: float | None = 256.0  # its activation clamp
    truncation_psi: float = 1.0  # truncation of the foreground pass (reference --trunc)
    min_feature_resolution: int = 8  # coarsest feature maps the alpha network reads
    compute_dtype: str = "float32"  # the frozen generator's convs: 'float32' | 'bfloat16'

    def frozen_generator(self) -> StyleGenerator:
        """The pretrained generator, unbound (its variables: the 'frozen' collection)."""
        return StyleGenerator(
            self.resolution,
            3,
            w_dim=self.w_dim,
            mapping_layers=self.mapping_layers,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            conv_clamp=self.conv_clamp,
            compute_dtype=self.compute_dtype,
            parent=None,
        )

    def feature_resolutions(self) -> list[int]:
        check_resolution(self.min_feature_resolution, "min_feature_resolution")
        resolutions = [
            r for r in block_resolutions(self.resolution) if r >= self.min_feature_resolution
        ]
        if self.min_feature_resolution < 8 or len(resolutions) < 2:
            raise ValueError(
                f"min_feature_resolution must be in 8..{self.resolution // 2} (the alpha network "
                f"reads conv0 and conv1 of >= 2 blocks), got {self.min_feature_resolution}"
            )
        return resolutions

    @nn.compact
    def __call__(
        self,
        z: jnp.ndarray,
        *,
        mixing_z=None,
        mixing_cutoff=None,
        truncation_psi=1.0,
        noise_mode: str = "random",
        update_w_avg: bool = False,
    ) -> dict[str, jnp.ndarray]:
        """z: [N, z_dim]. Returns `fg_rgb`, `bg_rgb`, `composite` ([N, R, R, 3], roughly in
        [-1, 1]) and `mask` ([N, R, R, 1] in (0, 1)).

        `truncation_psi` (sampling) truncates both passes, on top of the foreground's configured
        `self.truncation_psi`. `update_w_avg` is ignored: the pretrained `w_avg` stays frozen.
        With `noise_mode='random'` the two passes draw independent noise (the reference calls the
        generator twice with random noise)."""
        del update_w_avg
        resolutions = self.feature_resolutions()
        generator = self.frozen_generator()
        frozen = self.variable(
            FROZEN_COLLECTION,
            "generator",
            lambda: generator.init(self.make_rng("params"), z, noise_mode="const"),
        )
        # Constants for autodiff: no gradient ever reaches the pretrained weights.
        variables = jax.tree.map(jax.lax.stop_gradient, frozen.value)
        fg_rngs = bg_rngs = {}
        if noise_mode == "random":
            fg_key, bg_key = jax.random.split(self.make_rng("noise"))
            fg_rngs, bg_rngs = {"noise": fg_key}, {"noise": bg_key}
        common = dict(mixing_z=mixing_z, mixing_cutoff=mixing_cutoff, noise_mode=noise_mode)
        fg_rgb, captured = generator.apply(
            variables,
            z,
            truncation_psi=self.truncation_psi * truncation_psi,
            capture_intermediates=_is_synthesis_layer,
            mutable=["intermediates"],
            rngs=fg_rngs,
            **common,
        )
        bg_rgb = generator.apply(
            variables,
            z,
            truncation_psi=truncation_psi,
            zero_const_features=True,
            rngs=bg_rngs,
            **common,
        )
        features = feature_pairs(captured["intermediates"], resolutions)
        mask = AlphaNetwork(name="alpha")(features)
        return {
            "fg_rgb": fg_rgb,
            "mask": mask,
            "bg_rgb": bg_rgb,
            "composite": composite(fg_rgb, mask, bg_rgb),
        }
