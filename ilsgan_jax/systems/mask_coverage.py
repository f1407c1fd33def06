"""The systems' state initialisation that sets the initial generator's mask coverage
(`config.model.initial_mask_coverage`), shared by the systems that draw masks."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ilsgan_jax.systems.base import Config, InitializeState

CALIBRATION_STREAM = 7  # folded into key(seed): the calibration's latents, apart from init's


def coverage_initialisation(
    build_generator: Callable[[Config], object], calibrate: Callable[..., tuple]
) -> InitializeState:
    """A system's `initialize_state`: with `config.model.initial_mask_coverage` set, replaces
    G's parameters (and its EMA's) by `calibrate(generator, variables, key, target=...)`'s, which
    shift the mask logits so that the initial masks cover that target
    (`models.mask_calibration`, `models.instance_calibration`); None leaves the state as it is."""

    def initialize_state(config: Config, state, restore_run):
        del restore_run
        target = config.model.initial_mask_coverage
        if target is None:
            return state
        generator = build_generator(config)

        @jax.jit
        def calibrated(params, buffers):
            variables, info = calibrate(
                generator,
                {"params": params, **buffers},
                jax.random.fold_in(jax.random.key(config.seed), CALIBRATION_STREAM),
                target=target,
            )
            return variables["params"], info

        params, info = calibrated(state.g_params, state.g_buffers)
        info = jax.device_get(info)
        logging.info(
            "Initial mask coverage %.3f -> %.3f (mask logit bias %s)",
            info["initial_coverage"],
            info["calibrated_coverage"],
            np.array2string(np.asarray(info["mask_logit_bias"]), precision=3, sign="+"),
        )
        return state.replace(g_params=params, g_ema_params=jax.tree.map(jnp.copy, params))

    return initialize_state
