"""StyleGAN2 discriminator, 'resnet' architecture with the minibatch-std epilogue, NHWC.

`images: [N, R, R, C] float32 in [-1, 1] -> logits: [N] float32`.

Mixed precision (`compute_dtype='bfloat16'`, every resolution): the convs cast the images, the
features and their weights to bfloat16 and the blocks' features stay in it; minibatch-std's
statistics and the dense layers' outputs (so the logits) are float32. Gradients with respect to
the float32 images (R1, WGAN-GP) come back float32 through the first cast.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ilsgan_jax.models.synthesis import block_resolutions, channels_at
from ilsgan_jax.nn.layers import EqualizedConv2d, EqualizedDense, minibatch_std


class DiscriminatorBlock(nn.Module):
    """FromRGB (first block only), two 3x3 convs (the second downsamples) and a 1x1 down skip."""

    in_channels: int  # 0 for the first block (reads the image)
    tmp_channels: int  # channels between the convs
    out_channels: int  # channels after downsampling
    conv_clamp: float | None = None  # activation clamp
    resample_filter: Sequence[float] = (1, 3, 3, 1)  # FIR taps
    compute_dtype: str = "float32"  # dtype of the convs and features: 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, x, img):
        dtype = self.compute_dtype
        if self.in_channels == 0:
            x = EqualizedConv2d(
                self.tmp_channels,
                1,
                activation="lrelu",
                conv_clamp=self.conv_clamp,
                compute_dtype=dtype,
                name="fromrgb",
            )(img)
        skip = EqualizedConv2d(
            self.out_channels,
            1,
            use_bias=False,
            down=2,
            resample_filter=self.resample_filter,
            compute_dtype=dtype,
            name="skip",
        )(x, gain=math.sqrt(0.5))
        x = EqualizedConv2d(
            self.tmp_channels,
            3,
            activation="lrelu",
            conv_clamp=self.conv_clamp,
            compute_dtype=dtype,
            name="conv0",
        )(x)
        x = EqualizedConv2d(
            self.out_channels,
            3,
            activation="lrelu",
            down=2,
            conv_clamp=self.conv_clamp,
            resample_filter=self.resample_filter,
            compute_dtype=dtype,
            name="conv1",
        )(x, gain=math.sqrt(0.5))
        return skip + x


class DiscriminatorEpilogue(nn.Module):
    """4x4: minibatch-std (float32 statistics), 3x3 conv, FC, FC to one float32 logit."""

    channels: int  # feature channels at 4x4
    mbstd_group_size: int = 4  # samples per minibatch-std group (contiguous); 0 = whole batch
    mbstd_num_channels: int = 1  # number of std features
    conv_clamp: float | None = None  # activation clamp
    compute_dtype: str = "float32"  # dtype of the conv and the dense layers' operands

    @nn.compact
    def __call__(self, x):
        dtype = self.compute_dtype
        if self.mbstd_num_channels > 0:
            x = minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = EqualizedConv2d(
            self.channels,
            3,
            activation="lrelu",
            conv_clamp=self.conv_clamp,
            compute_dtype=dtype,
            name="conv",
        )(x)
        x = x.reshape(x.shape[0], -1)
        x = EqualizedDense(self.channels, activation="lrelu", compute_dtype=dtype, name="fc")(x)
        return EqualizedDense(1, compute_dtype=dtype, name="out")(x)[:, 0]


class Discriminator(nn.Module):
    """`[N, R, R, img_channels] -> [N]` float32 logits."""

    img_resolution: int  # input resolution R (power of two)
    img_channels: int = 3  # input channels
    channel_base: int = 16384  # width rule numerator
    channel_max: int = 256  # width cap
    conv_clamp: float | None = 256.0  # activation clamp (reference: 256)
    mbstd_group_size: int = 4  # minibatch-std group size; 0 = the whole batch (see minibatch_std)
    mbstd_num_channels: int = 1  # minibatch-std features
    resample_filter: Sequence[float] = (1, 3, 3, 1)  # FIR taps
    compute_dtype: str = "float32"  # convs and matmuls in 'float32' or 'bfloat16' (nn.precision)

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        expected = (self.img_resolution, self.img_resolution, self.img_channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"Discriminator expects images [N, {expected}], got {images.shape}")
        x = None
        for resolution in reversed(block_resolutions(self.img_resolution)[1:]):
            tmp = channels_at(resolution, self.channel_base, self.channel_max)
            out = channels_at(resolution // 2, self.channel_base, self.channel_max)
            x = DiscriminatorBlock(
                0 if resolution == self.img_resolution else tmp,
                tmp,
                out,
                conv_clamp=self.conv_clamp,
                resample_filter=self.resample_filter,
                compute_dtype=self.compute_dtype,
                name=f"b{resolution}",
            )(x, images)
        return DiscriminatorEpilogue(
            channels_at(4, self.channel_base, self.channel_max),
            self.mbstd_group_size,
            self.mbstd_num_channels,
            conv_clamp=self.conv_clamp,
            compute_dtype=self.compute_dtype,
            name="b4",
        )(x)
