"""What makes one system of the layered-GAN family: the `System` record the trainer reads.

The shared trainer (`ilsgan_jax.train`) runs the same phases for every system: G main (the
adversarial loss plus the system's own terms), D main (adversarial loss, optional WGAN-GP), lazy
R1, an optional estimator phase, EMA and ADA statistics. A system supplies only what differs:

- its generator (and an optional learned estimator trained in the D phase),
- the latents it takes, an optional perturbation of what D sees,
- its generator loss terms beyond the adversarial loss (mask regularisers, ILS, area penalty),
- an optional host-side state initialisation (e.g. loading a pretrained generator),
- the rows of its sample grid and the (image, mask) layers it exports.

Adding a system: write one module with a `SYSTEM = System(...)` and add it to
`ilsgan_jax.systems.REGISTRY`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

Config = ml_collections.ConfigDict
Layers = dict[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class LossInputs:
    """What a system's generator loss sees in the G main phase (all traced arrays).

    layers: the generator's output for this phase's latents (unperturbed).
    perturbed: what D saw (`layers` itself for systems without a perturbation).
    cur_nimg: [] int32, real images seen before this step (drives the ILS schedule).
    key: PRNG key for stochastic terms (ILS's negative pairs).
    estimator_apply: `conditions -> outputs` of the learned estimator, or None.
    """

    layers: Layers
    perturbed: Layers
    cur_nimg: jnp.ndarray
    key: jax.Array
    estimator_apply: Callable | None


# (config, state, restore_run) -> state; `restore_run(config, workdir)` returns the newest train
# state saved in another run's workdir (the trainer passes its own restore function).
InitializeState = Callable[[Config, Any, Callable[[Config, str], Any]], Any]


def plain_latent_shape(config: Config, batch: int) -> tuple[int, ...]:
    """One z per sample: [batch, z_dim]."""
    return (batch, config.model.z_dim)


def no_estimator(config: Config) -> nn.Module | None:
    del config
    return None


@dataclasses.dataclass(frozen=True)
class System:
    """One system of the framework, as functions of the config.

    Attributes:
      name: the value of `config.system` that selects it.
      build_generator: `config -> nn.Module` mapping latents to a dict of layers with at least
        'composite' [N, R, R, 3] in [-1, 1] (what D sees).
      generator_loss: `(config, LossInputs) -> (scalar, metrics)`: the terms added to the
        adversarial loss in G main. Must return the same metric names on every call.
      export_layers: `layers -> {'image', 'fg_rgb', 'bg_rgb' [N, R, R, 3], 'soft_mask'
        [N, R, R, 1] in [0, 1]}` for the (image, mask) export; None when the system has no mask.
      sample_rows: `(config, layers, key) -> {row name: [N, R, R, 3] in [-1, 1]}` for sample
        grids; `key` is fixed per run so successive grids are comparable.
      latent_shape: `(config, batch) -> shape` of the latents the generator takes.
      perturb: `(config, key, layers) -> layers` applied before D (None: D sees `layers`).
      build_estimator: `config -> nn.Module | None`, a learned conditional for the ILS term.
      estimator_loss: `(config, estimator_apply, layers) -> scalar`, minimised over the
        estimator's parameters in the D phase on stop-gradient layers (None: no such phase).
      initialize_state: host-side changes to a freshly initialised train state (None: none).
      validate_config: raises ValueError naming a bad system-specific field (None: no checks).
    """

    name: str
    build_generator: Callable[[Config], nn.Module]
    generator_loss: Callable[[Config, LossInputs], tuple[jnp.ndarray, Metrics]]
    export_layers: Callable[[Layers], Layers] | None
    sample_rows: Callable[[Config, Layers, jax.Array], Layers]
    latent_shape: Callable[[Config, int], tuple[int, ...]] = plain_latent_shape
    perturb: Callable[[Config, jax.Array, Layers], Layers] | None = None
    build_estimator: Callable[[Config], nn.Module | None] = no_estimator
    estimator_loss: Callable[[Config, Callable, Layers], jnp.ndarray] | None = None
    initialize_state: InitializeState | None = None
    validate_config: Callable[[Config], None] | None = None


def stylegan_kwargs(config: Config) -> dict:
    """The StyleGAN2 generator settings every system's synthesis networks share."""
    model = config.model
    return dict(
        w_dim=model.w_dim,
        mapping_layers=model.mapping_layers,
        channel_base=model.channel_base,
        channel_max=model.channel_max,
        conv_clamp=model.conv_clamp,
        compute_dtype=model.compute_dtype,
    )
