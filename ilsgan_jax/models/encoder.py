"""Inversion encoder of PerturbGAN's segmenter: `images: [N, R, R, 3] in [-1, 1] -> z: [N, z_dim]`.

A residual convolutional encoder shaped like the discriminator (width rule
`min(channel_base / res, channel_max)`, one residual block per resolution from R down to 8, each
halving the resolution, then a 4x4 head with two dense layers), but per sample (no minibatch-std)
and with an unbounded z output. PerturbGAN's paper trains "an encoder" against the frozen generator;
its official code (adambielski/perturbed-seg) ships no encoder, so the architecture is ours.
It computes in `config.model.compute_dtype`, like the generator it inverts (parameters float32,
z float32).
"""

import math

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ilsgan_jax.models.synthesis import block_resolutions, channels_at, check_resolution
from ilsgan_jax.nn.precision import compute_dtype

LRELU_SLOPE = 0.2


def _lrelu(x: jnp.ndarray) -> jnp.ndarray:
    return nn.leaky_relu(x, LRELU_SLOPE)


def _downsample(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 average pooling: [N, H, W, C] -> [N, H/2, W/2, C]."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class EncoderBlock(nn.Module):
    """Two 3x3 convs then 2x average-pool, plus a pooled 1x1 skip; sum scaled by sqrt(1/2).

    `[N, r, r, C_in] -> [N, r/2, r/2, out_channels]`.
    """

    out_channels: int  # channels after downsampling
    compute_dtype: str = "float32"  # 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        in_channels = features.shape[-1]
        dtype = compute_dtype(self.compute_dtype)
        skip = nn.Conv(self.out_channels, (1, 1), use_bias=False, dtype=dtype, name="skip")(
            _downsample(features)
        )
        hidden = _lrelu(nn.Conv(in_channels, (3, 3), dtype=dtype, name="conv0")(features))
        hidden = _lrelu(nn.Conv(self.out_channels, (3, 3), dtype=dtype, name="conv1")(hidden))
        return (skip + _downsample(hidden)) * math.sqrt(0.5)


class Encoder(nn.Module):
    """Image -> latent z of the layered generator."""

    resolution: int  # input resolution R (power of two >= 8)
    z_dim: int  # output dimensionality (the generator's z_dim)
    channel_base: int = 16384  # width rule numerator
    channel_max: int = 256  # width cap
    compute_dtype: str = "float32"  # convs and matmuls in 'float32' or 'bfloat16' (z float32)

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        """images: [N, R, R, 3] float32 in [-1, 1] -> z: [N, z_dim] float32 (unbounded)."""
        expected = (self.resolution, self.resolution, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            shape = ", ".join(map(str, expected))
            raise ValueError(f"images must be [N, {shape}], got {images.shape}")

        def width(res: int) -> int:
            return channels_at(res, self.channel_base, self.channel_max)

        dtype = compute_dtype(self.compute_dtype)
        features = _lrelu(
            nn.Conv(width(self.resolution), (1, 1), dtype=dtype, name="fromrgb")(images)
        )
        for res in reversed(block_resolutions(self.resolution)[1:]):  # R, R/2, ..., 8
            features = EncoderBlock(width(res // 2), self.compute_dtype, name=f"block{res}")(
                features
            )
        features = _lrelu(nn.Conv(width(4), (3, 3), dtype=dtype, name="conv4")(features))
        features = features.reshape(features.shape[0], -1)
        features = _lrelu(nn.Dense(width(4), dtype=dtype, name="fc")(features))
        return nn.Dense(self.z_dim, dtype=dtype, name="out")(features).astype(jnp.float32)


def build_encoder(config: ml_collections.ConfigDict) -> Encoder:
    """The encoder of `config.encoder` for `config.data.resolution` and `config.model.z_dim`."""
    if "encoder" not in config:
        raise ValueError("config.encoder is missing: use configs/perturbgan.py (or add its fields)")
    resolution = config.data.resolution
    check_resolution(resolution, "config.data.resolution")
    if resolution < 8:
        raise ValueError(f"config.data.resolution must be >= 8 for the encoder, got {resolution}")
    for field in ("channel_base", "channel_max"):
        if config.encoder[field] < 1:
            value = config.encoder[field]
            raise ValueError(f"config.encoder.{field} must be positive, got {value}")
    return Encoder(
        resolution,
        config.model.z_dim,
        channel_base=config.encoder.channel_base,
        channel_max=config.encoder.channel_max,
        compute_dtype=config.model.compute_dtype,
    )
