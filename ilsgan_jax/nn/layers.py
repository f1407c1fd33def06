"""Equalized-learning-rate layers (StyleGAN2): weights are drawn from N(0, 1/lr_multiplier^2) and
scaled at run time by `lr_multiplier / sqrt(fan_in)`; biases are scaled by `lr_multiplier`.

Mixed precision (`ilsgan_jax.nn.precision`): parameters are float32 and are cast to the layer's
`compute_dtype` at use. Dense layers return float32 (their matmuls accumulate in float32); conv
layers return the compute dtype, so activations flow in it from layer to layer.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from ilsgan_jax.nn import upfirdn2d as fir
from ilsgan_jax.nn.bias_act import bias_act, default_gain
from ilsgan_jax.nn.conv import conv2d_resample
from ilsgan_jax.nn.precision import compute_dtype, dense


class EqualizedDense(nn.Module):
    """Fully connected layer with equalized learning rate: `[N, Cin] -> [N, features]` float32
    (the matmul in `compute_dtype`, accumulated in float32; bias and activation in float32)."""

    features: int  # output features
    use_bias: bool = True  # whether to add a bias
    bias_init: float = 0.0  # initial value of the (unscaled) bias
    lr_multiplier: float = 1.0  # learning-rate multiplier (0.01 in the mapping network)
    activation: str = "linear"  # 'linear' | 'lrelu' | 'relu'
    compute_dtype: str = "float32"  # dtype of the matmul's operands: 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        fan_in = x.shape[-1]
        weight = self.param(
            "weight", nn.initializers.normal(1.0 / self.lr_multiplier), (fan_in, self.features)
        )
        weight = weight * (self.lr_multiplier / math.sqrt(fan_in))
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
            bias = bias * self.lr_multiplier
        return bias_act(dense(x, weight, compute_dtype(self.compute_dtype)), bias, self.activation)


class EqualizedConv2d(nn.Module):
    """Conv layer with equalized learning rate and optional FIR resampling: `[N, H, W, Cin] ->
    [N, H * up / down, W * up / down, features]`, all of it (input, weight, bias, activation,
    clamp, output) in `compute_dtype`."""

    features: int  # output channels
    kernel_size: int  # square kernel width
    use_bias: bool = True  # whether to add a bias
    activation: str = "linear"  # activation after the bias
    up: int = 1  # integer upsampling factor
    down: int = 1  # integer downsampling factor
    resample_filter: Sequence[float] = (1, 3, 3, 1)  # FIR taps for resampling
    conv_clamp: float | None = None  # clamp the output to +-conv_clamp (None = off)
    compute_dtype: str = "float32"  # dtype of the conv and its output: 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, x: jnp.ndarray, gain: float = 1.0) -> jnp.ndarray:
        fan_in = x.shape[-1] * self.kernel_size**2
        weight = self.param(
            "weight",
            nn.initializers.normal(1.0),
            (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
        )
        weight = weight * (1.0 / math.sqrt(fan_in))
        dtype = compute_dtype(self.compute_dtype)
        x = conv2d_resample(
            x.astype(dtype),
            weight.astype(dtype),
            fir.setup_filter(self.resample_filter),
            up=self.up,
            down=self.down,
            padding=self.kernel_size // 2,
            flip_weight=(self.up == 1),
        )
        bias = (
            self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        )
        act_gain = default_gain(self.activation) * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, bias, self.activation, gain=act_gain, clamp=act_clamp)


def _grouped_modulated_conv(x, weight, styles, demod, up, padding, resample_filter, flip_weight):
    """`modulated_conv2d(fused=True)` without the noise: per-sample kernels
    [N, k, k, Cin, Cout] (modulated, demodulated by `demod` [N, Cout] or None) folded into one
    grouped convolution over `x` [N, H, W, Cin]."""
    batch = x.shape[0]
    k, _, in_channels, out_channels = weight.shape
    # Fused form: per-sample kernels [N, k, k, Cin, Cout] folded into one grouped convolution.
    per_sample = weight[None] * styles[:, None, None, :, None]
    if demod is not None:
        per_sample = per_sample * demod[:, None, None, None, :]
    grouped_kernel = (
        jnp.transpose(per_sample, (1, 2, 3, 0, 4))
        .reshape(k, k, in_channels, batch * out_channels)
        .astype(x.dtype)
    )
    grouped_input = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, x.shape[1], x.shape[2], -1)
    if not flip_weight:
        grouped_kernel = grouped_kernel[::-1, ::-1]
    taps = fir.filter_size(resample_filter)
    if up > 1:
        pad0 = padding + (taps + up - 1) // 2
        pad1 = padding + (taps - up) // 2
        grouped_input = fir.upfirdn2d(
            grouped_input, resample_filter, up=up, padding=(pad0, pad1, pad0, pad1), gain=up * up
        )
        conv_padding = ((0, 0), (0, 0))
    else:
        conv_padding = ((padding, padding), (padding, padding))
    out = lax.conv_general_dilated(
        grouped_input,
        grouped_kernel,
        window_strides=(1, 1),
        padding=conv_padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=batch,
    )
    out = out.reshape(out.shape[1], out.shape[2], batch, out_channels).transpose(2, 0, 1, 3)
    return out


def modulated_conv2d(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    styles: jnp.ndarray,
    *,
    noise: jnp.ndarray | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: np.ndarray | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused: bool = False,
) -> jnp.ndarray:
    """StyleGAN2 modulated convolution with optional weight demodulation.

    Runs in `x`'s dtype (the weight, styles and demodulation coefficients are cast to it where they
    meet `x`, as StyleGAN2-ADA's float16 path); the demodulation coefficients are computed in
    float32 from the float32 weight and styles. StyleGAN2-ADA also rescales the weight and styles
    by their max norms for float16, against overflow; bfloat16 has float32's range and needs none.

    Args:
      x: `[N, H, W, Cin]` activations (float32 or bfloat16).
      weight: `[k, k, Cin, Cout]` shared weight (already scaled by the equalized-lr gain).
      styles: `[N, Cin]` per-sample input-channel scales.
      noise: optional `[N, H', W', 1]` (or broadcastable) noise added after demodulation.
      up: 1 or 2 (FIR upsampling before the conv, as `conv2d_resample`).
      padding, resample_filter, flip_weight: as `conv2d_resample`.
      demodulate: divide each output channel by the norm of its modulated weights.
      fused: False = the reference's training form (scale activations, one shared conv, scale the
        output); True = per-sample weights as one grouped convolution. They agree to float
        tolerance; the grouped form is ~45x slower on XLA:CPU, so training uses the first.

    Returns:
      `[N, H * up, W * up, Cout]` in `x`'s dtype.
    """
    batch = x.shape[0]
    k, _, in_channels, out_channels = weight.shape
    if styles.shape != (batch, in_channels):
        raise ValueError(f"styles must be [{batch}, {in_channels}], got {styles.shape}")
    demod = None
    if demodulate:
        # sum_{ky,kx,i} (w[ky,kx,i,o] * s[n,i])^2 = s^2 @ sum_{ky,kx} w^2, in float32
        weight_f32, styles_f32 = weight.astype(jnp.float32), styles.astype(jnp.float32)
        squared_norms = jnp.square(styles_f32) @ jnp.sum(jnp.square(weight_f32), axis=(0, 1))
        demod = lax.rsqrt(squared_norms + 1e-8)  # [N, Cout]

    if not fused:
        x = x * styles[:, None, None, :].astype(x.dtype)
        x = conv2d_resample(
            x,
            weight.astype(x.dtype),
            resample_filter,
            up=up,
            padding=padding,
            flip_weight=flip_weight,
        )
        if demod is not None:
            x = x * demod[:, None, None, :].astype(x.dtype)
        if noise is not None:
            x = x + noise.astype(x.dtype)
        return x

    out = _grouped_modulated_conv(
        x, weight, styles, demod, up, padding, resample_filter, flip_weight
    )
    if noise is not None:
        out = out + noise.astype(out.dtype)
    return out


def minibatch_std(x: jnp.ndarray, group_size: int, num_channels: int = 1) -> jnp.ndarray:
    """Appends minibatch standard-deviation features: `[N, H, W, C] -> [N, H, W, C + num_channels]`.

    Groups are *contiguous* runs of `group_size` samples (the reference uses strided groups
    `i, i + N/G, ...`). Contiguous groups never straddle a device's slice of a batch sharded on
    its leading axis, so the result is the same on any number of devices as long as the
    per-device batch is a multiple of `group_size` (checked by the training config).
    `group_size` 0 (or >= N) makes one group of all N samples, StyleGAN (v1) / ProGAN's
    whole-batch statistic; under `jax.jit` N is the global batch, so with a sharded batch the
    group spans the devices (XLA reduces across them) and the result still does not depend on
    their number.

    The statistics are computed in float32 whatever `x`'s dtype; the features keep `x`'s dtype.
    """
    batch, height, width, channels = x.shape
    group = min(group_size, batch) if group_size else batch
    if batch % group:
        raise ValueError(f"minibatch-std: batch {batch} is not a multiple of group size {group}")
    if channels % num_channels:
        raise ValueError(f"minibatch-std: {channels} channels not divisible by {num_channels}")
    grouped = x.astype(jnp.float32).reshape(
        batch // group, group, height, width, num_channels, channels // num_channels
    )
    variance = jnp.mean(jnp.square(grouped - grouped.mean(axis=1, keepdims=True)), axis=1)
    std = jnp.sqrt(variance + 1e-8).mean(axis=(1, 2, 4))  # [N/G, F]
    std = jnp.broadcast_to(
        std[:, None, None, None, :], (batch // group, group, height, width, num_channels)
    ).reshape(batch, height, width, num_channels)
    return jnp.concatenate([x, std.astype(x.dtype)], axis=-1)
