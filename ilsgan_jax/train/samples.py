"""Sample grids during training: the EMA generator on fixed latents, rows from the system."""

import jax
import numpy as np

from ilsgan_jax.systems import System
from ilsgan_jax.train.phases import Trainer

SAMPLE_KEY_OFFSET = 12345  # sample latents come from key(seed + offset), apart from training's


def make_sample_fn(trainer: Trainer, num_images: int, seed: int):
    """Returns a jitted `sample(g_ema_params, g_ema_buffers) -> rows` with fixed latents and
    perturbation (so successive grids are comparable), constant noise, truncation 1; rows are
    `{name: [num_images, R, R, 3]}` in [-1, 1] (`System.sample_rows`)."""
    return fixed_latent_sample_fn(
        trainer.config, trainer.system, trainer.networks.generator, num_images, seed
    )


def fixed_latent_sample_fn(config, system: System, generator, num_images: int, seed: int):
    """`make_sample_fn` for a system and generator module: latents and perturbation from
    `key(seed + SAMPLE_KEY_OFFSET)` only, so generators of one architecture trained apart (ILS on
    and off) draw their rows from the same z."""
    z_key, rows_key = jax.random.split(jax.random.key(seed + SAMPLE_KEY_OFFSET))
    z = jax.random.normal(z_key, system.latent_shape(config, num_images))

    @jax.jit
    def sample(params, buffers):
        layers = generator.apply({"params": params, **buffers}, z, noise_mode="const")
        return system.sample_rows(config, layers, rows_key)

    return sample


def host_rows(sample_fn, state) -> dict[str, np.ndarray]:
    """The rows of the EMA generator in `state`, on the host."""
    return jax.device_get(sample_fn(state.g_ema_params, state.g_ema_buffers))
