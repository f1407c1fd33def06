"""ILSGAN: a layered StyleGAN2 (foreground + mask, background) with the perturbation shift, the
mask regularisers and the independent layer synthesis (ILS) term (`layered_terms`)."""

from ilsgan_jax.models.layered import LayeredGenerator
from ilsgan_jax.models.mask_calibration import calibrate_mask_coverage
from ilsgan_jax.systems import layered_terms
from ilsgan_jax.systems.base import Config, System, stylegan_kwargs
from ilsgan_jax.systems.mask_coverage import coverage_initialisation


def build_generator(config: Config) -> LayeredGenerator:
    return LayeredGenerator(
        config.data.resolution,
        mask_logit_offset=config.model.mask_logit_offset,
        **stylegan_kwargs(config),
    )


# With `config.model.initial_mask_coverage` set, the mask logit's output bias is shifted so that
# the initial generator's mean mask coverage is that target (`models/mask_calibration.py`).
calibrate_initial_masks = coverage_initialisation(build_generator, calibrate_mask_coverage)


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
