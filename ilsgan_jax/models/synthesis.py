"""StyleGAN2 synthesis network, 'skip' architecture, NHWC.

`ws: [N, num_ws, w_dim] -> images: [N, R, R, img_channels]` float32 (unbounded; data lives in
[-1, 1]).

Mixed precision (`compute_dtype='bfloat16'`, every resolution): each layer casts its input
features and its weight to bfloat16; the styles (affine layers), the demodulation coefficients,
the noise and the running skip image (ToRGB outputs, their upsampling and sum) stay float32.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ilsgan_jax.nn import upfirdn2d as fir
from ilsgan_jax.nn.bias_act import bias_act, default_gain
from ilsgan_jax.nn.layers import EqualizedDense, modulated_conv2d
from ilsgan_jax.nn.precision import compute_dtype

NOISE_MODES = ("random", "const", "none")


def block_resolutions(resolution: int) -> list[int]:
    """`[4, 8, ..., resolution]`; `resolution` must be a power of two >= 4."""
    check_resolution(resolution, "resolution")
    return [2**i for i in range(2, int(math.log2(resolution)) + 1)]


def check_resolution(resolution: int, field: str) -> None:
    """Raises ValueError naming `field` unless `resolution` is a power of two >= 4."""
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"{field} must be a power of two >= 4, got {resolution!r}")


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """StyleGAN2 width rule: `min(channel_base // resolution, channel_max)`."""
    return min(channel_base // resolution, channel_max)


def num_ws(resolution: int) -> int:
    """Number of w vectors the skip synthesis network consumes: 2 per block, 1 at 4x4, +1 ToRGB."""
    return 2 * len(block_resolutions(resolution))


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ optional 2x FIR upsampling), noise, bias, lrelu; in and out
    `[N, r, r, C]` in `compute_dtype`."""

    features: int  # output channels
    resolution: int  # output resolution
    up: int = 1  # 1 or 2
    kernel_size: int = 3  # conv kernel width
    conv_clamp: float | None = None  # clamp of the output (None = off)
    resample_filter: Sequence[float] = (1, 3, 3, 1)  # FIR taps
    compute_dtype: str = "float32"  # dtype of the conv and its output: 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, x: jnp.ndarray, w: jnp.ndarray, noise_mode: str = "random", gain=1.0):
        in_channels = x.shape[-1]
        x = x.astype(compute_dtype(self.compute_dtype))
        styles = EqualizedDense(
            in_channels, bias_init=1.0, compute_dtype=self.compute_dtype, name="affine"
        )(w)
        weight = self.param(
            "weight",
            nn.initializers.normal(1.0),
            (self.kernel_size, self.kernel_size, in_channels, self.features),
        )
        noise_strength = self.param("noise_strength", nn.initializers.zeros, ())
        noise_const = self.variable(
            "buffers",
            "noise_const",
            lambda: jax.random.normal(
                self.make_rng("params"), (self.resolution, self.resolution, 1), jnp.float32
            ),
        )
        noise = None
        if noise_mode == "random":
            noise = (
                jax.random.normal(
                    self.make_rng("noise"), (x.shape[0], self.resolution, self.resolution, 1)
                )
                * noise_strength
            )
        elif noise_mode == "const":
            noise = noise_const.value[None] * noise_strength
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        x = modulated_conv2d(
            x,
            weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.kernel_size // 2,
            resample_filter=fir.setup_filter(self.resample_filter),
            flip_weight=(self.up == 1),
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, bias, "lrelu", gain=default_gain("lrelu") * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation to `features` output channels: the conv in
    `compute_dtype`, bias and clamp in float32; returns `[N, r, r, features]` float32."""

    features: int  # output (image) channels
    conv_clamp: float | None = None  # clamp of the output (None = off)
    compute_dtype: str = "float32"  # dtype of the conv: 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
        in_channels = x.shape[-1]
        x = x.astype(compute_dtype(self.compute_dtype))
        styles = EqualizedDense(
            in_channels, bias_init=1.0, compute_dtype=self.compute_dtype, name="affine"
        )(w)
        styles = styles * (1.0 / math.sqrt(in_channels))
        weight = self.param(
            "weight", nn.initializers.normal(1.0), (1, 1, in_channels, self.features)
        )
        x = modulated_conv2d(x, weight, styles, demodulate=False).astype(jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return bias_act(x, bias, "linear", clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | up-conv), conv, ToRGB added to the
    upsampled running image."""

    in_channels: int  # 0 for the first (4x4, constant input) block
    out_channels: int  # feature channels of this block
    resolution: int  # output resolution of this block
    img_channels: int  # channels of the image output
    conv_clamp: float | None = None  # activation clamp
    resample_filter: Sequence[float] = (1, 3, 3, 1)  # FIR taps
    compute_dtype: str = "float32"  # dtype of the features: 'float32' | 'bfloat16'

    @property
    def num_conv(self) -> int:
        return 1 if self.in_channels == 0 else 2

    @nn.compact
    def __call__(self, x, img, ws: jnp.ndarray, noise_mode: str = "random", zero_features=False):
        """ws: `[N, num_conv + 1, w_dim]`. Returns `(features, img)`: features in `compute_dtype`,
        img float32. `zero_features` replaces this block's features by zeros before its ToRGB and
        the next block (Labels4Free background)."""
        w_index = 0
        if self.in_channels == 0:
            const = self.param(
                "const",
                nn.initializers.normal(1.0),
                (self.resolution, self.resolution, self.out_channels),
            )
            x = jnp.broadcast_to(const[None], (ws.shape[0], *const.shape))
        else:
            x = SynthesisLayer(
                self.out_channels,
                self.resolution,
                up=2,
                conv_clamp=self.conv_clamp,
                resample_filter=self.resample_filter,
                compute_dtype=self.compute_dtype,
                name="conv0",
            )(x, ws[:, w_index], noise_mode)
            w_index += 1
        x = SynthesisLayer(
            self.out_channels,
            self.resolution,
            conv_clamp=self.conv_clamp,
            resample_filter=self.resample_filter,
            compute_dtype=self.compute_dtype,
            name="conv1",
        )(x, ws[:, w_index], noise_mode)
        w_index += 1
        if zero_features:
            x = jnp.zeros_like(x)
        if img is not None:
            img = fir.upsample2d(img, fir.setup_filter(self.resample_filter))
        rgb = ToRGBLayer(
            self.img_channels,
            conv_clamp=self.conv_clamp,
            compute_dtype=self.compute_dtype,
            name="torgb",
        )(x, ws[:, w_index])
        img = rgb if img is None else img + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    """`ws: [N, num_ws, w_dim] -> [N, R, R, img_channels]` float32, optionally with per-block
    features (in `compute_dtype`)."""

    img_resolution: int  # output resolution R (power of two, 16..256 tested)
    img_channels: int  # 3 for RGB, 4 for RGB + mask logit
    channel_base: int = 16384  # width rule numerator
    channel_max: int = 256  # width cap
    conv_clamp: float | None = 256.0  # activation clamp (reference: 256)
    resample_filter: Sequence[float] = (1, 3, 3, 1)  # FIR taps
    compute_dtype: str = "float32"  # convs in 'float32' or 'bfloat16' (nn.precision)

    @property
    def num_ws(self) -> int:
        return num_ws(self.img_resolution)

    @nn.compact
    def __call__(
        self,
        ws: jnp.ndarray,
        noise_mode: str = "random",
        return_features=False,
        zero_const_features=False,
    ):
        """Returns images `[N, R, R, C]`, plus `{resolution: [N, r, r, ch]}` if return_features.
        `zero_const_features` zeroes the 4x4 block's output features (the Labels4Free background:
        only noise, biases and the later layers' styles remain)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [N, {self.num_ws}, w_dim], got {ws.shape}")
        x = img = None
        features = {}
        w_index = 0
        previous_channels = 0
        for resolution in block_resolutions(self.img_resolution):
            channels = channels_at(resolution, self.channel_base, self.channel_max)
            block = SynthesisBlock(
                previous_channels,
                channels,
                resolution,
                self.img_channels,
                conv_clamp=self.conv_clamp,
                resample_filter=self.resample_filter,
                compute_dtype=self.compute_dtype,
                name=f"b{resolution}",
            )
            block_ws = ws[:, w_index : w_index + block.num_conv + 1]
            x, img = block(
                x, img, block_ws, noise_mode, zero_features=zero_const_features and x is None
            )
            features[resolution] = x
            w_index += block.num_conv
            previous_channels = channels
        if return_features:
            return img, features
        return img
