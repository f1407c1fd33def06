"""ILSGAN: a layered StyleGAN2 (foreground + mask, background) with the perturbation shift, the
mask regularisers and the independent layer synthesis (ILS) term (`layered_terms`)."""

import jax
import jax.numpy as jnp
from absl import logging

from ilsgan_jax.models.layered import LayeredGenerator
from ilsgan_jax.models.mask_calibration import calibrate_mask_coverage
from ilsgan_jax.systems import layered_terms
from ilsgan_jax.systems.base import Config, System, stylegan_kwargs


def build_generator(config: Config) -> LayeredGenerator:
    return LayeredGenerator(
        config.data.resolution,
        mask_logit_offset=config.model.mask_logit_offset,
        **stylegan_kwargs(config),
    )


CALIBRATION_STREAM = 7  # folded into key(seed): the calibration's latents, apart from init's


def calibrate_initial_masks(config: Config, state, restore_run):
    """With `config.model.initial_mask_coverage` set, shifts the mask logit's output bias so
    that the initial generator's mean mask coverage is that target (in G and its EMA); the
    reference initialisation otherwise. See `models/mask_calibration.py`."""
    del restore_run
    target = config.model.initial_mask_coverage
    if target is None:
        return state
    generator = build_generator(config)

    @jax.jit
    def calibrate(params, buffers):
        variables, info = calibrate_mask_coverage(
            generator,
            {"params": params, **buffers},
            jax.random.fold_in(jax.random.key(config.seed), CALIBRATION_STREAM),
            target=target,
        )
        return variables["params"], info

    params, info = calibrate(state.g_params, state.g_buffers)
    info = jax.device_get(info)
    logging.info(
        "Initial mask coverage %.3f -> %.3f (mask logit bias %+.3f)",
        info["initial_coverage"],
        info["calibrated_coverage"],
        info["mask_logit_bias"],
    )
    return state.replace(g_params=params, g_ema_params=jax.tree.map(jnp.copy, params))


def layered_system(name: str) -> System:
    """A system of the fg/mask/bg family; its losses are switched by `config.loss`."""
    return System(
        name=name,
        build_generator=build_generator,
        generator_loss=layered_terms.generator_loss,
        export_layers=layered_terms.export_layers,
        sample_rows=layered_terms.sample_rows,
        perturb=layered_terms.perturb,
        build_estimator=layered_terms.build_estimator,
        estimator_loss=layered_terms.estimator_loss,
        initialize_state=calibrate_initial_masks,
        validate_config=layered_terms.validate_config,
    )


SYSTEM = layered_system("ilsgan")
