"""The independence-prior generator (Dai et al., AAAI 2019): K instance providers, a layout
module and back-to-front composition over a background.

`z: [N, K + 1, z_dim]` (index 0 drives the background, index k the k-th instance) ->
  'bg_rgb':        [N, R, R, 3]        background, unbounded, lives in [-1, 1]
  'provider_rgb':  [N, K, R, R, 3]     each instance as its provider drew it (before layout)
  'provider_mask': [N, K, R, R, 1]     its soft mask in [0, 1) (before layout; times
                                       `layout.frame_window` when mask_border_taper > 0)
  'layout_params': [N, K, 4]           unconstrained layout predictions (layout.affine_matrices)
  'layout_theta':  [N, K, 2, 3]        the sampling matrices applied
  'presence':      [N, K]              each instance's presence in (0, 1), which multiplies its
                                       laid-out mask (all ones without `presence_gate`)
  'fg_rgb':        [N, K, R, R, 3]     instances after layout (zero outside the warped frame)
  'mask':          [N, K, R, R, 1]     masks after layout and presence, in [0, 1) (zero outside)
  'union_mask':    [N, R, R, 1]        1 - prod_k (1 - mask_k)
  'composite':     [N, R, R, 3]        instance 1 over the background, ..., instance K on top

Providers are StyleGAN2 RGBA generators (`StyleGenerator` with 4 channels: RGB + mask logit),
either one per instance (`share_providers=False`) or one shared generator whose input is
`z_k + e_k`, with `e_k` a learned provider embedding (`share_providers=True`; all instances run as
one batch). The layout network reads each instance's w (its first style vector, so truncation
and style mixing act on the layout too) concatenated with a one-hot provider id, and starts at
the identity layout.

With `provider_style='constant'` (our option, not the paper's) provider k draws from a learned
latent of its own instead of z_k, so it draws one appearance (varied only by its noise inputs)
and cannot switch between objects by its latent; z_k then drives only instance k's layout (and
presence). With `presence_gate` the layout network also predicts a presence logit per instance;
`sigmoid(logit + PRESENCE_LOGIT_OFFSET)` multiplies the laid-out mask, so an instance can be
absent from an image without being pushed out of it.

With K = 1, identical z for both layers and zero layout bounds this is the ILSGAN
`LayeredGenerator` (tests/test_instances.py checks it value for value).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ilsgan_jax.models import layout
from ilsgan_jax.models.layered import StyleGenerator
from ilsgan_jax.nn.layers_k import composite_back_to_front, union_mask

INSTANCE_LAYER_NAMES = ("bg_rgb", "fg_rgb", "mask", "union_mask", "composite")
PROVIDER_STYLES = ("latent", "constant")
PRESENCE_LOGIT_OFFSET = 2.0  # a fresh presence gate reads sigmoid(2) = 0.88: every instance
# starts visible (the floor and the adversarial loss see it) and the gate still has gradient


def _styles(generator: StyleGenerator, z, *, mixing_z, mixing_cutoff, truncation_psi, update_w_avg):
    """The per-layer styles `ws: [N, num_ws, w_dim]` of `generator`, as StyleGenerator builds
    them (mapping, truncation, optional style mixing from `mixing_cutoff` on)."""
    ws = generator.mapping(z, truncation_psi=truncation_psi, update_w_avg=update_w_avg)
    if mixing_z is not None:
        mixed = generator.mapping(mixing_z, truncation_psi=truncation_psi)
        layer = jnp.arange(ws.shape[1])[None, :, None]
        ws = jnp.where(layer < mixing_cutoff, ws, mixed)
    return ws


class InstanceLayeredGenerator(nn.Module):
    """Background + K RGBA instance providers + layout (spatial transformer) + composition."""

    resolution: int  # output resolution R
    num_instances: int = 2  # K, number of instance providers / instances per image
    share_providers: bool = False  # one provider with a learned embedding per instance
    w_dim: int = 512  # W dimensionality
    mapping_layers: int = 8  # depth of each mapping network
    channel_base: int = 16384  # synthesis width rule numerator
    channel_max: int = 256  # synthesis width cap
    conv_clamp: float | None = 256.0  # activation clamp
    compute_dtype: str = "float32"  # convolutions and matmuls: 'float32' | 'bfloat16'
    max_rotation: float = 0.0  # layout rotation bound, radians (0 = no rotation)
    scale_range: Sequence[float] = (1.0, 1.0)  # layout scale bounds (low <= 1 <= high)
    max_translation: float = 0.0  # layout translation bound, fraction of the image size
    frame_scale: float = 1.0  # the providers' frames' side at layout scale 1, fraction of the
    # image's (`layout.affine_matrices`)
    layout_hidden: int = 64  # width of the layout MLP's hidden layers
    layout_layers: int = 2  # hidden layers of the layout MLP
    mask_border_taper: float = 0.0  # width of the providers' mask fade-out at the frame
    # border, fraction of the frame (0 = none; `layout.frame_window`)
    provider_style: str = "latent"  # 'latent': provider k's styles from z_k (the paper);
    # 'constant': from a learned latent per provider, z_k drives its layout only
    presence_gate: bool = False  # the layout also predicts each instance's presence in (0, 1)
    background_resolution: int | None = None  # the background's own resolution (a power of
    # two; 1 and 2 are a 4 px generator averaged down), upsampled (bilinear) to `resolution`;
    # None = `resolution`. Lower = a background that cannot draw sharp objects (`_background`)

    @nn.compact
    def __call__(
        self,
        z: jnp.ndarray,
        *,
        mixing_z: jnp.ndarray | None = None,
        mixing_cutoff=None,
        truncation_psi=1.0,
        noise_mode: str = "random",
        update_w_avg: bool = False,
    ) -> dict[str, jnp.ndarray]:
        """Args:
          z: [N, K + 1, z_dim] float32 ~ N(0, I); [:, 0] background, [:, k] instance k.
          mixing_z: optional [N, K + 1, z_dim], style-mixing latents (same layout as z).
          mixing_cutoff: [] int, first style index taken from `mixing_z` (num_ws = no mixing).
          truncation_psi: truncation towards each mapping network's w_avg (1 = none).
          noise_mode: 'random' (needs the 'noise' rng), 'const' or 'none'.
          update_w_avg: move the mapping networks' w_avg buffers ('buffers' must be mutable).

        Returns:
          The dict of the module docstring.
        """
        self._check_latents(z, mixing_z)
        style_kwargs = dict(
            mixing_cutoff=mixing_cutoff, truncation_psi=truncation_psi, update_w_avg=update_w_avg
        )
        bg_rgb = self._background(z, mixing_z, style_kwargs, noise_mode)

        draw_instances = self._shared_providers if self.share_providers else self._own_providers
        rgba, instance_w = draw_instances(z, mixing_z, style_kwargs, noise_mode)
        provider_rgb = rgba[..., :3]
        window = layout.frame_window(self.resolution, self.mask_border_taper)
        provider_mask = jax.nn.sigmoid(rgba[..., 3:]) * window

        layout_input = instance_w if self.provider_style == "latent" else z[:, 1:]
        layout_params, theta, presence = self._layout(layout_input)
        fg_rgb, mask = _warp_instances(provider_rgb, provider_mask, theta)
        mask = mask * presence[:, :, None, None, None]
        return {
            "bg_rgb": bg_rgb,
            "provider_rgb": provider_rgb,
            "provider_mask": provider_mask,
            "layout_params": layout_params,
            "layout_theta": theta,
            "presence": presence,
            "fg_rgb": fg_rgb,
            "mask": mask,
            "union_mask": union_mask(mask),
            "composite": composite_back_to_front(bg_rgb, fg_rgb, mask),
        }

    # Helpers of `__call__` (they create its submodules and parameters, so they run only inside
    # it; `nn.nowrap` keeps them out of Flax's method wrapping).

    @nn.nowrap
    def _check_latents(self, z: jnp.ndarray, mixing_z: jnp.ndarray | None) -> None:
        num_instances = self.num_instances
        if num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {num_instances}")
        if z.ndim != 3 or z.shape[1] != num_instances + 1:
            raise ValueError(
                f"z must be [N, num_instances + 1 = {num_instances + 1}, z_dim], got {z.shape}"
            )
        if mixing_z is not None and mixing_z.shape != z.shape:
            raise ValueError(f"mixing_z must have z's shape {z.shape}, got {mixing_z.shape}")
        if self.provider_style not in PROVIDER_STYLES:
            raise ValueError(
                f"model.provider_style must be one of {PROVIDER_STYLES}, "
                f"got {self.provider_style!r}"
            )

    @nn.nowrap
    def _generator_kwargs(self) -> dict:
        """The StyleGenerator settings shared by the background and the providers."""
        return dict(
            w_dim=self.w_dim,
            mapping_layers=self.mapping_layers,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            conv_clamp=self.conv_clamp,
            compute_dtype=self.compute_dtype,
        )

    @nn.nowrap
    def _background(self, z, mixing_z, style_kwargs, noise_mode):
        """The background `[N, R, R, 3]` from `z[:, 0]`, drawn at `background_resolution` and
        upsampled bilinearly to R.

        A full-resolution background can draw every object of the data itself, and then the
        area penalty has every reason to empty the instances. A low-resolution background can
        only draw blurred objects, so a sharp object is cheaper to draw as an instance. At 1 or
        2 px (a 4 px StyleGAN2 averaged down) it is a colour or a bilinear colour gradient
        across the image, which cannot draw an object at all.
        """
        size = self.background_resolution
        size = self.resolution if size is None else size
        _check_background_resolution(size, self.resolution)
        drawn = max(size, 4)  # StyleGAN2 synthesis starts at 4 px
        background = StyleGenerator(drawn, 3, name="background", **self._generator_kwargs())
        bg_ws = _styles(background, z[:, 0], mixing_z=_latent(mixing_z, 0), **style_kwargs)
        bg_rgb = background.synthesis(bg_ws, noise_mode=noise_mode)
        if size < drawn:  # 1 or 2 px: block means of the 4 px drawing
            factor = drawn // size
            bg_rgb = nn.avg_pool(bg_rgb, (factor, factor), strides=(factor, factor))
        if size == self.resolution:
            return bg_rgb
        shape = (bg_rgb.shape[0], self.resolution, self.resolution, bg_rgb.shape[-1])
        return jax.image.resize(bg_rgb, shape, method="bilinear")

    @nn.nowrap
    def _shared_providers(self, z, mixing_z, style_kwargs, noise_mode):
        """One provider for all instances, its input `z_k + e_k` (all instances as one batch).

        Returns:
          (rgba [N, K, R, R, 4] with the mask logit last, instance_w [N, K, w_dim]).
        """
        n, _, z_dim = z.shape
        num_instances = self.num_instances
        provider = StyleGenerator(self.resolution, 4, name="provider", **self._generator_kwargs())
        embedding = self.param(
            "provider_embedding", nn.initializers.normal(1.0), (num_instances, z_dim)
        )

        def flatten(array):  # [N, K + 1, D] -> instances as one batch [N * K, D]
            return (array[:, 1:] + embedding[None]).reshape(n * num_instances, z_dim)

        if self.provider_style == "constant":  # the embedding alone is each provider's latent
            provider_z, provider_mixing_z = jnp.tile(embedding, (n, 1)), None
        else:
            provider_z = flatten(z)
            provider_mixing_z = None if mixing_z is None else flatten(mixing_z)
        ws = _styles(provider, provider_z, mixing_z=provider_mixing_z, **style_kwargs)
        rgba = provider.synthesis(ws, noise_mode=noise_mode)
        rgba = rgba.reshape((n, num_instances) + rgba.shape[1:])
        instance_w = ws[:, 0].reshape(n, num_instances, -1)
        return rgba, instance_w

    @nn.nowrap
    def _own_providers(self, z, mixing_z, style_kwargs, noise_mode):
        """One provider per instance, `provider<k>` drawing instance k from `z[:, k + 1]` (or,
        with `provider_style='constant'`, from its learned latent `provider_latents[k]`).

        Returns:
          (rgba [N, K, R, R, 4] with the mask logit last, instance_w [N, K, w_dim]).
        """
        n, _, z_dim = z.shape
        constant = self.provider_style == "constant"
        if constant:
            latents = self.param(
                "provider_latents", nn.initializers.normal(1.0), (self.num_instances, z_dim)
            )
        rgbas, instance_ws = [], []
        for index in range(self.num_instances):
            provider = StyleGenerator(
                self.resolution, 4, name=f"provider{index}", **self._generator_kwargs()
            )
            ws = _styles(
                provider,
                jnp.broadcast_to(latents[index], (n, z_dim)) if constant else z[:, index + 1],
                mixing_z=None if constant else _latent(mixing_z, index + 1),
                **style_kwargs,
            )
            rgbas.append(provider.synthesis(ws, noise_mode=noise_mode))
            instance_ws.append(ws[:, 0])
        return jnp.stack(rgbas, axis=1), jnp.stack(instance_ws, axis=1)

    @nn.nowrap
    def _layout(self, instance_latent):
        """Layout predictions from each instance's latent (its w, or its z with constant
        provider styles) and a one-hot provider id.

        Returns:
          (layout_params [N, K, 4] unconstrained, theta [N, K, 2, 3] sampling matrices,
          presence [N, K] in (0, 1), all ones without `presence_gate`).
        """
        n, num_instances = instance_latent.shape[:2]
        provider_id = jnp.broadcast_to(
            jnp.eye(num_instances, dtype=instance_latent.dtype)[None],
            (n, num_instances, num_instances),
        )
        outputs = layout.LayoutNetwork(
            hidden_features=self.layout_hidden,
            num_hidden_layers=self.layout_layers,
            extra_outputs=int(self.presence_gate),
            name="layout",
        )(jnp.concatenate([instance_latent, provider_id], axis=-1))
        layout_params = outputs[..., : layout.NUM_LAYOUT_PARAMS]
        theta = layout.affine_matrices(
            layout_params,
            max_rotation=self.max_rotation,
            scale_range=tuple(self.scale_range),
            max_translation=self.max_translation,
            frame_scale=self.frame_scale,
        )
        if self.presence_gate:
            presence = jax.nn.sigmoid(outputs[..., -1] + PRESENCE_LOGIT_OFFSET)
        else:
            presence = jnp.ones((n, num_instances), jnp.float32)
        return layout_params, theta, presence


def _check_background_resolution(size, resolution: int) -> None:
    """Raises ValueError naming `model.background_resolution` unless `size` is a power of two
    (1 and 2 included) no larger than `resolution`."""
    if not isinstance(size, int) or size < 1 or size & (size - 1) or size > resolution:
        raise ValueError(
            "model.background_resolution must be a power of two (1, 2, 4, ...) <= the "
            f"resolution {resolution}, or None; got {size!r}"
        )


def _latent(array, index):
    """`array[:, index]`, or None when `array` is None."""
    return None if array is None else array[:, index]


def _warp_instances(provider_rgb, provider_mask, theta):
    """Applies each instance's layout: RGB and mask move together, one warp of the RGBA stack with
    all instances as one batch.

    Args:
      provider_rgb: [N, K, R, R, 3]; provider_mask: [N, K, R, R, 1]; theta: [N, K, 2, 3].

    Returns:
      (fg_rgb [N, K, R, R, 3], mask [N, K, R, R, 1]), zero outside the warped frame.
    """
    n, num_instances, size = provider_rgb.shape[:3]
    rgba_after = layout.warp(
        jnp.concatenate([provider_rgb, provider_mask], axis=-1).reshape(
            (n * num_instances, size, size, 4)
        ),
        theta.reshape(n * num_instances, 2, 3),
    ).reshape((n, num_instances, size, size, 4))
    return rgba_after[..., :3], rgba_after[..., 3:]


def instance_generator_from_config(config) -> InstanceLayeredGenerator:
    """The generator of `configs/independence_prior.py` (`config.model`, `config.data`)."""
    model, layout_config = config.model, config.model.layout
    return InstanceLayeredGenerator(
        config.data.resolution,
        num_instances=model.num_instances,
        share_providers=model.share_providers,
        w_dim=model.w_dim,
        mapping_layers=model.mapping_layers,
        channel_base=model.channel_base,
        channel_max=model.channel_max,
        conv_clamp=model.conv_clamp,
        compute_dtype=model.compute_dtype,
        max_rotation=layout_config.max_rotation,
        scale_range=tuple(layout_config.scale_range),
        max_translation=layout_config.max_translation,
        frame_scale=layout_config.frame_scale,
        layout_hidden=layout_config.hidden_features,
        layout_layers=layout_config.num_hidden_layers,
        mask_border_taper=layout_config.mask_border_taper,
        provider_style=model.provider_style,
        presence_gate=layout_config.presence_gate,
        background_resolution=model.background_resolution,
    )
