"""The ADA p controller as pure functions over a small pytree state.

StyleGAN2-ADA (training_loop.py) collects `sign(D(real))` over the iterations since the last
adjustment and, every `interval` iterations, moves p by

    sign(mean_sign - target) * (batch_size * interval) / (speed_kimg * 1000),

so p can cross [0, 1] in `speed_kimg` thousand real images. Here the statistics are two scalars
in the train state, and the adjustment is selected with `jnp.where` on the step, so both
functions run inside a jitted train step.

Deviation: the reference clamps p only at 0 (p may drift above 1, where every probability gate is
already saturated); here p is clipped to [0, 1], so it starts coming down as soon as D stops
overfitting instead of first undoing the drift above 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from ilsgan_jax.augment.config import AdaConfig, as_ada_config

ConfigLike = AdaConfig | Mapping[str, Any] | ml_collections.ConfigDict


@flax.struct.dataclass
class AdaState:
    """ADA state carried in the train state.

    Attributes:
      p: [] float32 in [0, 1], the current augmentation probability.
      sign_sum: [] float32, sum of sign(D(real logits)) since the last adjustment.
      sign_count: [] float32, number of logits summed into `sign_sum`.
    """

    p: jax.Array
    sign_sum: jax.Array
    sign_count: jax.Array


def init_ada_state(config: ConfigLike) -> AdaState:
    """Initial state: p = `initial_p` for 'ada' and 'fixed', 0 for 'noaug'; empty statistics."""
    config = as_ada_config(config)
    p = 0.0 if config.mode == "noaug" else config.initial_p
    return AdaState(
        p=jnp.asarray(p, jnp.float32),
        sign_sum=jnp.zeros((), jnp.float32),
        sign_count=jnp.zeros((), jnp.float32),
    )


def accumulate_real_signs(state: AdaState, real_logits: jax.Array) -> AdaState:
    """Adds `sign(real_logits)` (any shape, e.g. [N, 1]) to the statistics.

    The reference reports the signs from every phase that evaluates D on reals (D main and the
    R1 phase); call this once per such evaluation.
    """
    signs = jnp.sign(real_logits.astype(jnp.float32))
    return state.replace(
        sign_sum=state.sign_sum + signs.sum(),
        sign_count=state.sign_count + jnp.asarray(signs.size, jnp.float32),
    )


def mean_real_sign(state: AdaState) -> jax.Array:
    """[] float32: E[sign(D(real))] since the last adjustment (0 when nothing was accumulated)."""
    return state.sign_sum / jnp.maximum(state.sign_count, 1.0)


def p_adjustment(mean_sign: jax.Array, batch_size: int, config: ConfigLike) -> jax.Array:
    """[] float32: the reference's step `sign(mean_sign - target) * batch * interval / images`."""
    config = as_ada_config(config)
    step_size = batch_size * config.interval / (config.speed_kimg * 1000.0)
    return jnp.sign(mean_sign - config.target) * jnp.float32(step_size)


def update_ada_state(
    state: AdaState, iteration: jax.Array | int, *, batch_size: int, config: ConfigLike
) -> AdaState:
    """Adjusts p when `iteration % interval == 0` and then clears the statistics.

    Args:
      state: current ADA state.
      iteration: number of completed train iterations including the current one (the reference's
        `batch_idx` after its increment), int scalar, may be traced.
      batch_size: global batch of real images per iteration (static).
      config: ADA config (static). p only moves in mode 'ada'; in 'fixed' and 'noaug' the
        statistics are still cleared every interval so they stay bounded.

    Returns:
      The new state. If no signs were accumulated since the last adjustment, p is unchanged.
    """
    config = as_ada_config(config)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    due = jnp.asarray(iteration) % config.interval == 0
    new_p = state.p
    if config.mode == "ada":
        adjusted = jnp.clip(
            state.p + p_adjustment(mean_real_sign(state), batch_size, config), 0.0, 1.0
        )
        new_p = jnp.where(due & (state.sign_count > 0), adjusted, state.p)
    zero = jnp.zeros((), jnp.float32)
    return AdaState(
        p=new_p,
        sign_sum=jnp.where(due, zero, state.sign_sum),
        sign_count=jnp.where(due, zero, state.sign_count),
    )
