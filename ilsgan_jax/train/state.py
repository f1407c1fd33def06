"""The train state: one pytree with everything a run needs to continue bit-for-bit."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from ilsgan_jax.augment.controller import AdaState, init_ada_state
from ilsgan_jax.train.builders import Networks, Optimizers, latent_shape_for

Params = Any


@flax.struct.dataclass
class TrainState:
    """All of it is replicated over the mesh; the checkpoint stores exactly this pytree.

    Attributes:
      step: [] int32, train iterations completed.
      images_seen: [] int32, real images consumed (`cur_nimg` of the reference).
      g_params: the generator's trainable parameters.
      g_buffers: every other variable collection of the generator, e.g.
        `{'buffers': {w_avg, noise_const}}` (plus frozen pretrained weights for Labels4Free).
      g_ema_params / g_ema_buffers: the exponential moving average of G (used for samples,
        export and FID); buffers are copied from G each step, as the reference does.
      d_params: discriminator parameters.
      estimator_params: learned ILS conditional (empty dict when unused).
      g_opt_state / d_opt_state / estimator_opt_state: optax states.
      ada: ADA probability and its sign statistics.
      rng: [2] uint32, key data of the run's base key; each step folds in `step`.
      nonfinite_step: [] int32, first step whose losses were not finite, -1 if none.
    """

    step: jnp.ndarray
    images_seen: jnp.ndarray
    g_params: Params
    g_buffers: Params
    g_ema_params: Params
    g_ema_buffers: Params
    d_params: Params
    estimator_params: Params
    g_opt_state: Any
    d_opt_state: Any
    estimator_opt_state: Any
    ada: AdaState
    rng: jnp.ndarray
    nonfinite_step: jnp.ndarray

    @property
    def key(self) -> jax.Array:
        return jax.random.wrap_key_data(self.rng)


def generator_collections(variables) -> dict:
    """The generator's non-trainable collections (everything but 'params')."""
    return {name: value for name, value in variables.items() if name != "params"}


def generator_variables(params, collections) -> dict:
    """`{'params': params, **collections}`, ready for `generator.apply`."""
    return {"params": params, **collections}


def create_train_state(
    config: ml_collections.ConfigDict,
    networks: Networks,
    optimizers: Optimizers,
    key: jax.Array,
) -> TrainState:
    """Initialises parameters and optimiser states. Pure: call it under `jax.jit` (with
    replicated out_shardings) to build the state directly on the devices."""
    init_key, noise_key, d_key, e_key, run_key = jax.random.split(key, 5)
    resolution = config.data.resolution
    z = jnp.zeros(latent_shape_for(config, 1), jnp.float32)
    g_variables = networks.generator.init({"params": init_key, "noise": noise_key}, z)
    images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
    d_params = networks.discriminator.init(d_key, images)["params"]
    estimator_params = {}
    if networks.estimator is not None:
        conditions = [images, images]
        estimator_params = networks.estimator.init(e_key, conditions)["params"]
    g_params = g_variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        images_seen=jnp.zeros((), jnp.int32),
        g_params=g_params,
        g_buffers=generator_collections(g_variables),
        g_ema_params=jax.tree.map(jnp.copy, g_params),
        g_ema_buffers=jax.tree.map(jnp.copy, generator_collections(g_variables)),
        d_params=d_params,
        estimator_params=estimator_params,
        g_opt_state=optimizers.generator.init(g_params),
        d_opt_state=optimizers.discriminator.init(d_params),
        estimator_opt_state=optimizers.estimator.init(estimator_params),
        ada=init_ada_state(config.ada),
        rng=jax.random.key_data(run_key),
        nonfinite_step=jnp.full((), -1, jnp.int32),
    )
