"""Plain StyleGAN2: one generator, no layers, only the adversarial loss. Trained first in the
Labels4Free flow (its EMA generator becomes Labels4Free's frozen generator)."""

import jax

from ilsgan_jax.models.layered import PlainGenerator
from ilsgan_jax.systems import layered_terms
from ilsgan_jax.systems.base import Config, Layers, LossInputs, System, stylegan_kwargs


def build_generator(config: Config) -> PlainGenerator:
    return PlainGenerator(config.data.resolution, **stylegan_kwargs(config))


def generator_loss(config: Config, inputs: LossInputs):
    """No terms beyond the adversarial loss; the layered metric names logged as zeros."""
    del config, inputs
    metrics = layered_terms.zero_metrics()
    return metrics["g/ils"], metrics


def sample_rows(config: Config, layers: Layers, key: jax.Array) -> Layers:
    del config, key
    return {"composite": layers["composite"]}


SYSTEM = System(
    name="stylegan2",
    build_generator=build_generator,
    generator_loss=generator_loss,
    export_layers=None,
    sample_rows=sample_rows,
)
