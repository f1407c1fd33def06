"""Layered generators: a background and a foreground StyleGAN2 generator fed the same z.

`z: [N, z_dim] -> {'fg_rgb': [N, R, R, 3], 'mask': [N, R, R, 1] in (0, 1),
'bg_rgb': [N, R, R, 3], 'composite': [N, R, R, 3]}`, all float32; images are unbounded and live
in [-1, 1]. With `compute_dtype='bfloat16'` the mapping and synthesis networks compute in
bfloat16 (`ilsgan_jax.nn.precision`); their outputs, the mask sigmoid and the compositing are
float32.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ilsgan_jax.models.mapping import MappingNetwork
from ilsgan_jax.models.synthesis import SynthesisNetwork, num_ws
from ilsgan_jax.nn.composite import composite

LAYER_NAMES = ("fg_rgb", "mask", "bg_rgb", "composite")


class StyleGenerator(nn.Module):
    """One StyleGAN2 generator: mapping network + skip synthesis network.

    `z: [N, z_dim] -> [N, R, R, img_channels]` (and the per-block features if asked).
    """

    resolution: int  # output resolution R
    img_channels: int  # output channels (3 RGB, 4 RGB + mask logit)
    w_dim: int = 512  # W dimensionality
    mapping_layers: int = 8  # depth of the mapping network
    mapping_lr_multiplier: float = 0.01  # learning-rate multiplier of the mapping network
    channel_base: int = 16384  # synthesis width rule numerator
    channel_max: int = 256  # synthesis width cap
    conv_clamp: float | None = 256.0  # activation clamp
    compute_dtype: str = "float32"  # convs and matmuls in 'float32' or 'bfloat16'

    def setup(self):
        self.mapping = MappingNetwork(
            self.w_dim,
            num_ws(self.resolution),
            num_layers=self.mapping_layers,
            lr_multiplier=self.mapping_lr_multiplier,
            compute_dtype=self.compute_dtype,
        )
        self.synthesis = SynthesisNetwork(
            self.resolution,
            self.img_channels,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            conv_clamp=self.conv_clamp,
            compute_dtype=self.compute_dtype,
        )

    def __call__(
        self,
        z,
        *,
        mixing_z=None,
        mixing_cutoff=None,
        truncation_psi=1.0,
        noise_mode="random",
        update_w_avg=False,
        return_features=False,
        zero_const_features=False,
    ):
        """Style mixing: if `mixing_z` is given, ws from index `mixing_cutoff` ([] int, traced ok;
        `num_ws` = no mixing) on come from `mixing_z` (whose w never updates `w_avg`).
        `zero_const_features`: zero the 4x4 block's features (see `SynthesisNetwork`)."""
        ws = self.mapping(z, truncation_psi=truncation_psi, update_w_avg=update_w_avg)
        if mixing_z is not None:
            mixed = self.mapping(mixing_z, truncation_psi=truncation_psi)
            layer = jnp.arange(ws.shape[1])[None, :, None]
            ws = jnp.where(layer < mixing_cutoff, ws, mixed)
        return self.synthesis(
            ws,
            noise_mode=noise_mode,
            return_features=return_features,
            zero_const_features=zero_const_features,
        )


class PlainGenerator(nn.Module):
    """A plain (non-layered) StyleGAN2 generator with the layered generators' call signature:
    `z -> {'composite': [N, R, R, 3]}` (the `stylegan2` system; Labels4Free starts from it)."""

    resolution: int  # output resolution R
    w_dim: int = 512  # W dimensionality
    mapping_layers: int = 8  # depth of the mapping network
    channel_base: int = 16384  # synthesis width rule numerator
    channel_max: int = 256  # synthesis width cap
    conv_clamp: float | None = 256.0  # activation clamp
    compute_dtype: str = "float32"  # convs and matmuls in 'float32' or 'bfloat16'

    @nn.compact
    def __call__(
        self,
        z,
        *,
        mixing_z=None,
        mixing_cutoff=None,
        truncation_psi=1.0,
        noise_mode="random",
        update_w_avg=False,
    ):
        images = StyleGenerator(
            self.resolution,
            3,
            w_dim=self.w_dim,
            mapping_layers=self.mapping_layers,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            conv_clamp=self.conv_clamp,
            compute_dtype=self.compute_dtype,
            name="generator",
        )(
            z,
            mixing_z=mixing_z,
            mixing_cutoff=mixing_cutoff,
            truncation_psi=truncation_psi,
            noise_mode=noise_mode,
            update_w_avg=update_w_avg,
        )
        return {"composite": images}


class LayeredGenerator(nn.Module):
    """ILSGAN / PerturbGAN generator: background (3 channels) and foreground (RGB + mask logit)
    generators, each with its own mapping network, driven by the same z."""

    resolution: int  # output resolution R
    w_dim: int = 512  # W dimensionality
    mapping_layers: int = 8  # depth of each mapping network
    channel_base: int = 16384  # synthesis width rule numerator
    channel_max: int = 256  # synthesis width cap
    conv_clamp: float | None = 256.0  # activation clamp
    # Constant added to the mask logit: m = sigmoid(logit + offset). 0 = the reference (masks
    # start around 0.5); negative values start the masks mostly background.
    mask_logit_offset: float = 0.0
    compute_dtype: str = "float32"  # convs and matmuls in 'float32' or 'bfloat16'

    def setup(self):
        kwargs = dict(
            w_dim=self.w_dim,
            mapping_layers=self.mapping_layers,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            conv_clamp=self.conv_clamp,
            compute_dtype=self.compute_dtype,
        )
        self.background = StyleGenerator(self.resolution, 3, **kwargs)
        self.foreground = StyleGenerator(self.resolution, 4, **kwargs)

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
        common = dict(
            mixing_z=mixing_z,
            mixing_cutoff=mixing_cutoff,
            truncation_psi=truncation_psi,
            noise_mode=noise_mode,
            update_w_avg=update_w_avg,
        )
        bg_rgb = self.background(z, **common)
        fg_rgba = self.foreground(z, **common)
        fg_rgb = fg_rgba[..., :3]
        mask = jax.nn.sigmoid(fg_rgba[..., 3:] + self.mask_logit_offset)
        return {
            "fg_rgb": fg_rgb,
            "mask": mask,
            "bg_rgb": bg_rgb,
            "composite": composite(fg_rgb, mask, bg_rgb),
        }
