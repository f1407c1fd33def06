"""The Independence-prior GAN (Dai et al., 2019): K instance providers, a spatial-transformer
layout module and back-to-front composition over a background
(`models.instances.InstanceLayeredGenerator`), with the per-instance area penalty, optional
per-instance minimum area, binarisation and colour consistency, the union mask's regularisers
and optional pairwise ILS."""

import jax
import jax.numpy as jnp

from ilsgan_jax.models.instance_calibration import calibrate_union_coverage
from ilsgan_jax.models.instances import instance_generator_from_config
from ilsgan_jax.objectives import instance_losses, mask_losses, schedules
from ilsgan_jax.systems import layered_terms
from ilsgan_jax.systems.base import Config, Layers, LossInputs, Metrics, System
from ilsgan_jax.systems.mask_coverage import coverage_initialisation


def latent_shape(config: Config, batch: int) -> tuple[int, ...]:
    """One z for the background and one per instance: [batch, K + 1, z_dim]."""
    return (batch, config.model.num_instances + 1, config.model.z_dim)


AREA_MASK_CHOICES = {"provider": "provider_mask", "layout": "mask"}
COLOUR_SOURCES = {"provider": "provider_rgb", "layout": "fg_rgb"}  # the colours under them


def _masks_read_by(layers: Layers, choice: str, key: str) -> jnp.ndarray:
    """The instance masks `[N, K, R, R, 1]` an area term reads: 'provider' (before layout) or
    'layout' (after layout, as drawn in the image); `key` names the config field in errors."""
    if choice not in AREA_MASK_CHOICES:
        raise ValueError(f"{key} must be one of {sorted(AREA_MASK_CHOICES)}, got {choice!r}")
    return layers[AREA_MASK_CHOICES[choice]]


def generator_loss(config: Config, inputs: LossInputs) -> tuple[jnp.ndarray, Metrics]:
    """Area penalty per instance (+ options) on the K instance masks: (scalar, metrics)."""
    loss, layers = config.loss, inputs.layers
    metrics = layered_terms.zero_metrics()
    area_source = _masks_read_by(layers, loss.area_mask, "loss.area_mask")
    area_weight = loss.area_weight * schedules.linear_rampup(
        inputs.cur_nimg, loss.area_rampup_kimg
    )
    total = jnp.mean(instance_losses.area_penalty(area_source, weight=area_weight))
    metrics["g/area"] = total
    if loss.instance_min_area_weight > 0:
        floor_source = _masks_read_by(
            layers, loss.instance_min_area_mask, "loss.instance_min_area_mask"
        )
        floor = instance_losses.min_area_penalty(
            floor_source,
            min_area=loss.instance_min_area,
            power=loss.instance_min_area_power,
            statistic=loss.instance_min_area_statistic,
        )
        total = total + loss.instance_min_area_weight * floor
        metrics["g/min_area"] = floor
    if loss.instance_bin_weight > 0:
        bin_loss = instance_losses.instance_binarisation(layers["mask"])
        bin_weight = loss.instance_bin_weight * schedules.linear_rampup(
            inputs.cur_nimg, loss.instance_bin_rampup_kimg, loss.instance_bin_start_kimg
        )
        total = total + bin_weight * jnp.mean(bin_loss)
        metrics["g/binarisation"] = jnp.mean(bin_loss)
    if loss.instance_colour_weight > 0:
        masks = _masks_read_by(layers, loss.instance_colour_mask, "loss.instance_colour_mask")
        rgbs = layers[COLOUR_SOURCES[loss.instance_colour_mask]]
        spread = jnp.sum(instance_losses.colour_spread(rgbs, masks))
        colour_weight = loss.instance_colour_weight * schedules.linear_rampup(
            inputs.cur_nimg, loss.instance_colour_rampup_kimg, loss.instance_colour_start_kimg
        )
        total = total + colour_weight * spread
        metrics["g/colour_spread"] = spread
    union = layers["union_mask"]
    if loss.bin_weight > 0 or loss.msize_weight > 0:
        bin_union = mask_losses.binarisation_loss(union)
        size_union = mask_losses.min_size_loss(union, min_size=loss.min_msize)
        total = total + jnp.mean(loss.bin_weight * bin_union + loss.msize_weight * size_union)
        metrics["g/min_size"] = jnp.mean(size_union)
    sigma = layered_terms.ils_weight(config, inputs.cur_nimg)
    metrics["ils/sigma"] = sigma
    if loss.ils.enabled:
        ils_loss, _ = instance_losses.pairwise_ils(
            inputs.key,
            layers["bg_rgb"],
            layers["fg_rgb"],
            layers["mask"],
            sigma=sigma,
            estimator=loss.ils.estimator,
            neg_weight=loss.ils.neg_weight,
            estimator_fn=inputs.estimator_apply,
        )
        total = total + ils_loss
        metrics["g/ils"] = ils_loss
    areas = instance_losses.instance_areas(layers["mask"]).mean(axis=0)
    for k in range(areas.shape[0]):
        metrics[f"mask/area_instance{k}"] = areas[k]
    metrics.update(layered_terms.mask_metrics(union))
    return total, metrics


def export_layers(layers: Layers) -> Layers:
    """The union of the instance masks, with the composite as the foreground image (inside the
    union mask it shows the instances)."""
    return {
        "image": layers["composite"],
        "fg_rgb": layers["composite"],
        "bg_rgb": layers["bg_rgb"],
        "soft_mask": layers["union_mask"],
    }


def sample_rows(config: Config, layers: Layers, key: jax.Array) -> Layers:
    """Composite, background, then each instance over white and its mask."""
    del config, key
    rows = {"composite": layers["composite"], "bg_rgb": layers["bg_rgb"]}
    for k in range(layers["mask"].shape[1]):
        mask_k = layers["mask"][:, k]
        rows[f"fg_over_white_{k}"] = mask_k * layers["fg_rgb"][:, k] + (1.0 - mask_k)
        rows[f"mask_{k}"] = jnp.broadcast_to(mask_k * 2.0 - 1.0, layers["bg_rgb"].shape)
    return rows


SYSTEM = System(
    name="independence_prior",
    build_generator=instance_generator_from_config,
    generator_loss=generator_loss,
    export_layers=export_layers,
    sample_rows=sample_rows,
    latent_shape=latent_shape,
    # A learned conditional can score the pairwise ILS term; it is not trained here (no
    # estimator phase for K instances), as before this system became a plug-in.
    build_estimator=layered_terms.build_estimator,
    # With `config.model.initial_mask_coverage` set, the union of the instance masks starts
    # covering that fraction of the image, every instance the same share.
    initialize_state=coverage_initialisation(
        instance_generator_from_config, calibrate_union_coverage
    ),
)
