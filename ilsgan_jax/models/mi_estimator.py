"""Learned conditional estimators for the ILS term ('neural_laplace' / 'neural_gaussian').

The reference (`pixelcnnpp/model.py`: `ModelBag` holding one `NeuralLaplace` / `NeuralGaussian`
per region pair) predicts, from the condition region y, the per-pixel mean and log-scale of the
target region x with a U-Net:

  stage(c) = [3x3 conv -> BatchNorm -> ReLU] x 2
  encoder  stage(64) -> [maxpool 2, stage] with 128, 256, 256, 256 channels
  decoder  four steps: bilinear x2 upsampling (align_corners=True), concatenate [skip, up],
           stage with 256, 128, 64, 64 channels
  heads    mu = 1x1 conv(64) -> ReLU -> 1x1 conv(3);  log_scale = same + tanh (so in [-1, 1])

Inputs are first resized to the estimator's resolution (64 in every reference config) by
nearest-neighbour resizing. This module follows that layout; the differences are:
  * the channel widths are a constructor argument (`widths`, default the reference's
    (64, 128, 256, 256, 256)) so tests and the CPU demo can shrink it; the number of
    down-samplings is `len(widths) - 1` (4 in the reference);
  * normalisation uses the current batch's statistics and keeps no running averages: the
    reference only ever runs its estimator in training mode (`.train()`), where BatchNorm
    normalises with batch statistics, so the running averages it tracks are never read;
  * convolution biases start at zero (PyTorch draws them uniformly); weights use PyTorch's
    default range, uniform(+-1/sqrt(fan_in));
  * the reference pads the up-sampled map when its size differs from the skip; here the
    resolution must be divisible by 2 ** (len(widths) - 1), so sizes always match.

With `compute_dtype='bfloat16'` the convolutions and the features between them are bfloat16
(parameters float32, cast at use); the normalisation statistics and the heads' outputs
(mu, log_scale) are float32.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ilsgan_jax.nn.precision import compute_dtype
from ilsgan_jax.nn.resampling import nearest_resize

REFERENCE_WIDTHS = (64, 128, 256, 256, 256)
# PyTorch's default Conv2d weight init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _upsample2x_align_corners(images: jnp.ndarray) -> jnp.ndarray:
    """Bilinear x2 upsampling with `align_corners=True` (PyTorch `nn.Upsample`), NHWC."""

    def along(axis_images: jnp.ndarray, axis: int) -> jnp.ndarray:
        size = axis_images.shape[axis]
        out_size = 2 * size
        if size == 1:
            return jnp.repeat(axis_images, 2, axis=axis)
        source = jnp.arange(out_size, dtype=jnp.float32) * ((size - 1) / (out_size - 1))
        lower = jnp.floor(source).astype(jnp.int32)
        upper = jnp.minimum(lower + 1, size - 1)
        weight_shape = [1] * axis_images.ndim
        weight_shape[axis] = out_size
        weight = (source - lower).reshape(weight_shape).astype(axis_images.dtype)
        low_values = jnp.take(axis_images, lower, axis=axis)
        high_values = jnp.take(axis_images, upper, axis=axis)
        return low_values * (1.0 - weight) + high_values * weight

    return along(along(images, 1), 2)


class BatchStatNorm(nn.Module):
    """BatchNorm in training mode: normalise with the batch's mean/variance over N, H, W (computed
    in float32; the output keeps the input's dtype)."""

    epsilon: float = 1e-5  # PyTorch BatchNorm2d default

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        channels = features.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        values = features.astype(jnp.float32)
        mean = jnp.mean(values, axis=(0, 1, 2))
        variance = jnp.var(values, axis=(0, 1, 2))  # biased, as BatchNorm uses in training
        normalised = (values - mean) * (1.0 / jnp.sqrt(variance + self.epsilon))
        return (normalised * scale + bias).astype(features.dtype)


class ConvStage(nn.Module):
    """[3x3 conv (zero pad 1) -> BatchStatNorm -> ReLU] x 2, in `compute_dtype`."""

    features: int
    compute_dtype: str = "float32"  # 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        hidden = inputs
        for _ in range(2):
            hidden = nn.Conv(
                self.features,
                (3, 3),
                padding=1,
                kernel_init=_torch_default_kernel_init,
                dtype=compute_dtype(self.compute_dtype),
            )(hidden)
            hidden = nn.relu(BatchStatNorm()(hidden))
        return hidden


class PixelHead(nn.Module):
    """1x1 conv -> ReLU -> 1x1 conv (in `compute_dtype`), optionally followed by tanh; the
    output is float32."""

    hidden: int
    out_channels: int
    bounded: bool
    compute_dtype: str = "float32"  # 'float32' | 'bfloat16'

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        dtype = compute_dtype(self.compute_dtype)
        conv = dict(kernel_init=_torch_default_kernel_init, dtype=dtype)
        hidden = nn.relu(nn.Conv(self.hidden, (1, 1), **conv)(features))
        output = nn.Conv(self.out_channels, (1, 1), **conv)(hidden).astype(jnp.float32)
        return jnp.tanh(output) if self.bounded else output


class ConditionalUNet(nn.Module):
    """Predicts (mu, log_scale) of a target region from a condition region, same resolution.

    Attributes:
      widths: encoder channel widths, one per level (first = full resolution).
      out_channels: channels of x (3).
      compute_dtype: 'float32' | 'bfloat16', the convolutions' dtype (outputs float32).
    """

    widths: Sequence[int] = REFERENCE_WIDTHS
    out_channels: int = 3
    compute_dtype: str = "float32"

    @nn.compact
    def __call__(self, condition: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """condition: [N, R, R, C] -> (mu [N, R, R, out], log_scale [N, R, R, out] in [-1, 1])."""
        dtype = self.compute_dtype
        skips = [ConvStage(self.widths[0], dtype)(condition)]
        for width in self.widths[1:]:
            pooled = nn.max_pool(skips[-1], (2, 2), strides=(2, 2))
            skips.append(ConvStage(width, dtype)(pooled))
        hidden = skips.pop()
        for level in reversed(range(len(skips))):
            upsampled = _upsample2x_align_corners(hidden)
            merged = jnp.concatenate([skips[level], upsampled], axis=-1)
            hidden = ConvStage(self.widths[max(level - 1, 0)], dtype)(merged)
        head_width = self.widths[0]
        mu = PixelHead(head_width, self.out_channels, False, dtype, name="mu_head")(hidden)
        log_scale = PixelHead(head_width, self.out_channels, True, dtype, name="log_scale_head")(
            hidden
        )
        return mu, log_scale


class RegionMIEstimator(nn.Module):
    """One conditional U-Net per ILS region pair (the reference's `ModelBag`, num_autoreg=2).

    Attributes:
      resolution: R, the estimator's working resolution (64 in the reference configs); must be
        divisible by 2 ** (len(widths) - 1).
      widths: U-Net channel widths.
      num_pairs: number of region pairs (2: bg_invis | fg_vis and fg_invis | bg_vis).
      compute_dtype: 'float32' | 'bfloat16', the U-Nets' convolutions (outputs float32).
    """

    resolution: int = 64
    widths: Sequence[int] = REFERENCE_WIDTHS
    num_pairs: int = 2
    compute_dtype: str = "float32"

    @nn.compact
    def __call__(
        self, conditions: Sequence[jnp.ndarray]
    ) -> tuple[tuple[jnp.ndarray, jnp.ndarray], ...]:
        """conditions: `num_pairs` arrays [N, H, W, 3] (fg_vis, bg_vis), any square H = W.

        Returns one (mu, log_scale) per pair, each [N, R, R, 3]; log_scale in [-1, 1].
        """
        factor = 2 ** (len(self.widths) - 1)
        if self.resolution % factor:
            raise ValueError(
                f"resolution {self.resolution} must be divisible by {factor} for widths "
                f"{tuple(self.widths)}"
            )
        if len(conditions) != self.num_pairs:
            raise ValueError(f"expected {self.num_pairs} conditions, got {len(conditions)}")
        predictions = []
        for index, condition in enumerate(conditions):
            if condition.ndim != 4 or condition.shape[1] != condition.shape[2]:
                raise ValueError(f"conditions[{index}] must be [N, H, H, C], got {condition.shape}")
            resized = nearest_resize(condition, self.resolution)
            unet = ConditionalUNet(
                widths=self.widths,
                out_channels=condition.shape[-1],
                compute_dtype=self.compute_dtype,
                name=f"pair{index}",
            )
            predictions.append(unet(resized))
        return tuple(predictions)
