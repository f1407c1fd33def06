"""Terms shared by the systems whose generator draws one foreground, mask and background.

ILSGAN, PerturbGAN and Labels4Free differ only in which of these they switch on (config.loss):
the perturbation of what D sees, the mask regularisers on the perturbed mask, Labels4Free's
minimum background area, and the ILS term on the unperturbed layers (`generator_loss`).
"""

import jax
import jax.numpy as jnp

from ilsgan_jax.evaluate import seg_metrics
from ilsgan_jax.models.mi_estimator import RegionMIEstimator
from ilsgan_jax.objectives import mask_losses
from ilsgan_jax.objectives.ils import estimator_nll, ils_term
from ilsgan_jax.objectives.perturbation import perturb_layers, sample_perturbation
from ilsgan_jax.objectives.schedules import ils_sigma
from ilsgan_jax.systems.base import Config, Layers, LossInputs, Metrics

BACKGROUND_MIN_SIZE_CHOICES = ("auto", "on", "off")
# Logged by every layered system (zeros where a term is off), so the metric names never change.
LAYERED_METRICS = (
    "g/binarisation",
    "g/min_size",
    "g/ils",
    "g/ils_bg_invis_given_fg_vis",
    "g/ils_fg_invis_given_bg_vis",
    "mask/mean",
    "mask/binariness",
    "mask/empty_fraction",
    "mask/full_fraction",
    "ils/sigma",
)


def zero_metrics(names=LAYERED_METRICS) -> Metrics:
    return {name: jnp.zeros((), jnp.float32) for name in names}


def mask_metrics(mask: jnp.ndarray) -> Metrics:
    """Logged statistics of generated masks [N, H, W, 1] in [0, 1]: 'mask/mean' (coverage),
    'mask/binariness' (mean min(m, 1 - m): 0 binary, 0.5 all 0.5) and the fractions of empty
    (coverage < 1%) and full (> 99%) masks, the two ways layered GANs collapse."""
    stats = seg_metrics.mask_statistics(mask)
    return {
        "mask/mean": stats["coverage"],
        "mask/binariness": stats["binariness"],
        "mask/empty_fraction": stats["empty_fraction"],
        "mask/full_fraction": stats["full_fraction"],
    }


def ils_weight(config: Config, cur_nimg: jnp.ndarray) -> jnp.ndarray:
    """The ILS weight sigma at `cur_nimg` images (0 when ILS is off): [] float32."""
    ils = config.loss.ils
    if not ils.enabled:
        return jnp.zeros((), jnp.float32)
    return ils_sigma(
        cur_nimg,
        initial_sigma=ils.initial_sigma,
        sigma=ils.sigma,
        strategy=ils.strategy,
        warmup_kimg=ils.warmup_kimg,
    )


def perturbation_enabled(config: Config) -> bool:
    return config.loss.xint_max > 0 or config.loss.bg_contrast > 0


def perturb(config: Config, key: jax.Array, layers: Layers) -> Layers:
    """The random shift of foreground + mask (and background contrast jitter) before D; the
    identity when both are off. `layers` as `LayeredGenerator` returns them."""
    loss = config.loss
    if not perturbation_enabled(config):
        return layers
    eps = sample_perturbation(
        key, layers["mask"].shape[0], xint_max=loss.xint_max, bg_contrast=loss.bg_contrast
    )
    return perturb_layers(layers, eps, xint_max=loss.xint_max, bg_contrast=loss.bg_contrast)


def symmetric_min_size(config: Config) -> bool:
    """Whether the size loss also keeps the background above `min_msize`: 'auto' = exactly when
    the perturbation is off (the reference), 'on' / 'off' force it."""
    return {"auto": not perturbation_enabled(config), "on": True, "off": False}[
        config.loss.background_min_size
    ]


def learned_estimator_enabled(config: Config) -> bool:
    return bool(config.loss.ils.enabled) and config.loss.ils.estimator.startswith("neural")


def build_estimator(config: Config) -> RegionMIEstimator | None:
    """The learned ILS conditional for the 'neural_*' estimators, else None."""
    if not learned_estimator_enabled(config):
        return None
    return RegionMIEstimator(
        resolution=config.loss.ils.estimator_resolution,
        widths=tuple(config.loss.ils.estimator_widths),
        compute_dtype=config.model.compute_dtype,
    )


def estimator_loss(config: Config, estimator_apply, layers: Layers) -> jnp.ndarray:
    """The learned conditional's NLL on (stop-gradient) layers, weighted by `nll_weight`."""
    ils = config.loss.ils
    return estimator_nll(
        layers["fg_rgb"],
        layers["bg_rgb"],
        layers["mask"],
        estimator_apply,
        estimator=ils.estimator,
        weight=ils.nll_weight,
    )


def generator_loss(config: Config, inputs: LossInputs) -> tuple[jnp.ndarray, Metrics]:
    """Mask regularisers on the perturbed mask, Labels4Free's background area and ILS on the
    unperturbed layers: (scalar, metrics)."""
    loss = config.loss
    mask = inputs.perturbed["mask"]  # the regularisers see the perturbed mask (reference)
    bin_loss = mask_losses.binarisation_loss(mask)
    size_loss = mask_losses.min_size_loss(
        mask, min_size=loss.min_msize, symmetric=symmetric_min_size(config)
    )
    total = jnp.mean(loss.bin_weight * bin_loss + loss.msize_weight * size_loss)
    metrics = zero_metrics()
    if loss.bg_area_weight > 0:  # Labels4Free's minimum background area
        bg_area_loss = jax.nn.relu(loss.bg_area - (1.0 - jnp.mean(mask, axis=(1, 2, 3))))
        total = total + loss.bg_area_weight * jnp.mean(bg_area_loss)
        metrics["g/bg_area"] = jnp.mean(bg_area_loss)
    metrics.update(
        {
            "g/binarisation": jnp.mean(bin_loss),
            "g/min_size": jnp.mean(size_loss),
            **mask_metrics(inputs.layers["mask"]),
        }
    )
    sigma = ils_weight(config, inputs.cur_nimg)
    metrics["ils/sigma"] = sigma
    if loss.ils.enabled:  # on the unperturbed layers
        layers = inputs.layers
        ils = ils_term(
            inputs.key,
            layers["fg_rgb"],
            layers["bg_rgb"],
            layers["mask"],
            sigma=sigma,
            estimator=loss.ils.estimator,
            neg_weight=loss.ils.neg_weight,
            estimator_fn=inputs.estimator_apply,
        )
        total = total + ils.loss
        metrics.update(
            {
                "g/ils": ils.loss,
                "g/ils_bg_invis_given_fg_vis": ils.pair_bounds[0],
                "g/ils_fg_invis_given_bg_vis": ils.pair_bounds[1],
            }
        )
    return total, metrics


def export_layers(layers: Layers) -> Layers:
    """The exported pair and its layers: image = composite, soft_mask = mask."""
    return {
        "image": layers["composite"],
        "fg_rgb": layers["fg_rgb"],
        "bg_rgb": layers["bg_rgb"],
        "soft_mask": layers["mask"],
    }


def sample_rows(config: Config, layers: Layers, key: jax.Array) -> Layers:
    """Grid rows: composite, the perturbed composite D would see (`key` fixes the shift), the
    layers, the mask and the foreground over white."""
    mask = layers["mask"]
    return {
        "composite": layers["composite"],
        "shifted_composite": perturb(config, key, layers)["composite"],
        "fg_rgb": layers["fg_rgb"],
        "bg_rgb": layers["bg_rgb"],
        "mask": jnp.broadcast_to(mask * 2.0 - 1.0, layers["fg_rgb"].shape),
        "fg_over_white": mask * layers["fg_rgb"] + (1.0 - mask),
    }


def validate_config(config: Config) -> None:
    if config.loss.background_min_size not in BACKGROUND_MIN_SIZE_CHOICES:
        raise ValueError(
            f"config.loss.background_min_size must be one of {BACKGROUND_MIN_SIZE_CHOICES}, "
            f"got {config.loss.background_min_size!r}"
        )
