"""A toy system for the plug-in test: a plain StyleGAN2 generator with one extra G term,
`weight * |mean(composite) - brightness|`. Everything else comes from the shared trainer."""

import jax
import jax.numpy as jnp

from ilsgan_jax.systems import stylegan2
from ilsgan_jax.systems.base import System


def configure(config):
    """Switches `config` to the toy system and adds its fields."""
    with config.unlocked():
        config.system = "toy"
        config.toy = dict(weight=0.5, brightness=0.9)
    return config


def generator_loss(config, inputs):
    gap = jnp.abs(jnp.mean(inputs.layers["composite"]) - config.toy.brightness)
    return config.toy.weight * gap, {"toy/brightness_gap": gap}


def sample_rows(config, layers, key: jax.Array):
    del config, key
    return {"composite": layers["composite"]}


SYSTEM = System(
    name="toy",
    build_generator=stylegan2.build_generator,
    generator_loss=generator_loss,
    export_layers=None,
    sample_rows=sample_rows,
)
