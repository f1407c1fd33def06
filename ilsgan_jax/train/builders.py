"""Builds the networks and optimisers a config asks for, and checks the config before compiling."""

from typing import NamedTuple

import flax.linen as nn
import ml_collections
import optax

from ilsgan_jax.models.discriminator import Discriminator
from ilsgan_jax.models.synthesis import check_resolution
from ilsgan_jax.nn.precision import compute_dtype
from ilsgan_jax.objectives.schedules import lazy_regularisation_adam, r1_gamma_heuristic
from ilsgan_jax.systems import System, system_for

ADVERSARIAL_LOSSES = ("ns_r1", "wgan_gp")


class Networks(NamedTuple):
    """The (stateless) Flax modules of one system; parameters live in the train state."""

    generator: nn.Module
    discriminator: nn.Module
    estimator: nn.Module | None  # learned ILS conditional, or None


class Optimizers(NamedTuple):
    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation
    estimator: optax.GradientTransformation


def build_networks(config: ml_collections.ConfigDict, system: System | None = None) -> Networks:
    """The system's generator (and learned estimator, if any) and the shared StyleGAN2 D.
    `system` defaults to `system_for(config)`."""
    system = system or system_for(config)
    model, resolution = config.model, config.data.resolution
    discriminator = Discriminator(
        resolution,
        3,
        channel_base=model.channel_base,
        channel_max=model.channel_max,
        conv_clamp=model.conv_clamp,
        mbstd_group_size=model.mbstd_group_size,
        mbstd_num_channels=model.mbstd_num_channels,
        compute_dtype=model.compute_dtype,
    )
    return Networks(system.build_generator(config), discriminator, system.build_estimator(config))


def build_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
    """Adam with StyleGAN2's lazy-regularisation rescaling: G (interval 4) lr * 4/5 and
    beta2 ** (4/5); D (R1 interval 16) lr * 16/17 and beta2 ** (16/17). The learned estimator
    is trained in the D phase with D's hyperparameters."""
    optim = config.optim

    def adam(interval):
        lr, (beta1, beta2) = lazy_regularisation_adam(
            optim.learning_rate, (optim.beta1, optim.beta2), interval
        )
        return optax.adam(lr, b1=beta1, b2=beta2, eps=optim.eps)

    d_interval = config.loss.r1_interval if config.loss.adversarial == "ns_r1" else None
    return Optimizers(adam(config.loss.g_reg_interval), adam(d_interval), adam(d_interval))


def r1_gamma(config: ml_collections.ConfigDict) -> float:
    """The configured R1 weight, or the heuristic 0.0002 * res^2 / batch when it is negative."""
    if config.loss.r1_gamma >= 0:
        return float(config.loss.r1_gamma)
    return r1_gamma_heuristic(config.data.resolution, config.train.batch_size)


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises ValueError naming the offending field before anything is compiled."""
    check_resolution(config.data.resolution, "config.data.resolution")
    compute_dtype(config.model.compute_dtype, "config.model.compute_dtype")
    if not 16 <= config.data.resolution <= 1024:
        raise ValueError(
            f"config.data.resolution must be in 16..1024, got {config.data.resolution}"
        )
    batch = config.train.batch_size
    if batch < 1 or batch % num_devices:
        raise ValueError(
            f"config.train.batch_size={batch} must be a positive multiple of the {num_devices} "
            "devices"
        )
    group = config.model.mbstd_group_size
    if group < 0:
        raise ValueError(
            f"config.model.mbstd_group_size must be >= 0 (0 = the whole batch), got {group}"
        )
    per_device = batch // num_devices
    if group and per_device % min(group, per_device):
        raise ValueError(
            f"config.model.mbstd_group_size={group} must divide the per-device batch "
            f"{per_device} (config.train.batch_size={batch} over {num_devices} devices)"
        )
    if group and group > per_device:
        raise ValueError(
            f"config.model.mbstd_group_size={group} exceeds the per-device batch {per_device}: "
            "groups would straddle devices; lower it or raise config.train.batch_size"
        )
    if config.loss.adversarial not in ADVERSARIAL_LOSSES:
        raise ValueError(
            f"config.loss.adversarial must be one of {ADVERSARIAL_LOSSES}, "
            f"got {config.loss.adversarial!r}"
        )
    if config.loss.r1_interval < 1:
        raise ValueError(f"config.loss.r1_interval must be >= 1, got {config.loss.r1_interval}")
    if not 0.0 <= config.loss.style_mixing_prob <= 1.0:
        raise ValueError("config.loss.style_mixing_prob must be in [0, 1]")
    system = system_for(config)  # an unknown config.system names the known ones
    if system.validate_config is not None:
        system.validate_config(config)


def latent_shape_for(config: ml_collections.ConfigDict, batch: int) -> tuple[int, ...]:
    """Shape of the latents the config's generator takes (e.g. [batch, z_dim])."""
    return system_for(config).latent_shape(config, batch)
