"""Per-instance losses of the independence-prior GAN (Dai et al., AAAI 2019).

- Area penalty: `lambda_area * sum_k mean_{HW} m_k`, per sample. Every provider is pushed to
  the smallest mask that still makes the composite look real, i.e. one that covers exactly one
  whole instance.
- Minimum area (optional, our addition; not in Dai et al.): a floor under every instance's
  batch-mean area, so that no provider is emptied for good by the area penalty; optionally
  under its opaque area, or under the batch variance of its mask, which a shape drawn at one
  place in every sample does not meet (`min_area_penalty`).
- Binarisation (optional): ILSGAN's `mean_{HW} min(m, 1 - m)` on every instance, summed over k.
- Colour consistency (optional, our addition; not in Dai et al.): the spread over the batch of
  each instance's mean colour under its mask, so that a provider cannot draw one object in some
  samples and another object of other colours in others (`colour_spread`).
- Pairwise ILS (optional, our addition; not in Dai et al.): ILSGAN's ILS term between every
  instance and "the rest of the scene". For instance k the foreground layer is (f_k, m_k) and
  the background layer is the back-to-front composite of the background and all other instances
  (`layers_k.composite_without`), i.e. what the image shows where instance k is not drawn. So
  the pixels instance k covers must carry no information about the scene it hides and vice
  versa, which is the two-layer ILS with the other instances folded into the background. The
  masks are the instances' own (not their visible parts under later instances): occlusion by
  later instances is part of "the rest of the scene" only through the composite. The bounds of
  all instances are summed (K = 1: exactly ILSGAN's term).

Which masks to penalise is the caller's choice: `provider_mask` (before layout) does not reward
the layout for shrinking instances or pushing them out of the frame; `mask` (after layout)
measures the area actually drawn. The config fields `loss.area_mask` (the penalty) and
`loss.instance_min_area_mask` (the floor) name the choice.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ilsgan_jax.nn.layers_k import composite_without
from ilsgan_jax.objectives import ils, mask_losses


def _check_masks(masks: jnp.ndarray) -> None:
    if masks.ndim != 5 or masks.shape[-1] != 1:
        raise ValueError(f"masks must be [N, K, H, W, 1], got shape {masks.shape}")


def instance_areas(masks: jnp.ndarray) -> jnp.ndarray:
    """Mean coverage of every instance's mask.

    Args:
      masks: [N, K, H, W, 1] float32 in [0, 1].

    Returns:
      [N, K] float32 in [0, 1], `mean_{HW} m_k`.
    """
    _check_masks(masks)
    return jnp.mean(masks, axis=(2, 3, 4))


def area_penalty(masks: jnp.ndarray, *, weight: float | jnp.ndarray) -> jnp.ndarray:
    """`weight * sum_k mean_{HW} m_k` per sample.

    Args:
      masks: [N, K, H, W, 1] float32 in [0, 1].
      weight: lambda_area (>= 0).

    Returns:
      [N] float32 in [0, weight * K].
    """
    return weight * jnp.sum(instance_areas(masks), axis=1)


MIN_AREA_STATISTICS = ("mean", "variance")


def min_area_penalty(
    masks: jnp.ndarray, *, min_area: float, power: float = 1.0, statistic: str = "mean"
) -> jnp.ndarray:
    """`sum_k relu(min_area - A_k)`: a floor under a statistic `A_k` of every instance's mask.

    - 'mean': `A_k = mean_{N,HW} m_k^power`, the batch-mean area (power 1) or opaque area
      (power > 1: a faint mask counts for less than its area, so a provider cannot meet the
      floor with a faint veil over its whole frame).
    - 'variance': `A_k = mean_HW Var_N(m_k) = mean_{N,HW} m_k^2 - mean_HW (mean_N m_k)^2`, the
      opaque area (power 2) less what the instance draws alike in every sample. An object that
      appears at changing places counts with most of its opaque area (a shape of area a at
      uniformly random places: a(1 - a)); a shape drawn at one place in every sample, which
      matches no object of a random crop, does not count. `power` must be 1 (the statistic
      already reads m^2). Computed over the batch on each device.

    The floor is on a batch statistic, so a provider may leave single samples empty (an object
    absent from a crop) but cannot empty itself for good, after which its mask logits would get
    almost no gradient back.

    Args:
      masks: [N, K, H, W, 1] float32 in [0, 1].
      min_area: the floor, in [0, 1].
      power: the exponent on the mask, >= 1 ('mean' only).
      statistic: one of MIN_AREA_STATISTICS.

    Returns:
      [] float32 in [0, K * min_area].
    """
    _check_masks(masks)
    if not 0.0 <= min_area <= 1.0:
        raise ValueError(f"min_area (loss.instance_min_area) must be in [0, 1], got {min_area}")
    if power < 1.0:
        raise ValueError(f"power (loss.instance_min_area_power) must be >= 1, got {power}")
    if statistic == "mean":
        areas = jnp.mean(instance_areas(masks if power == 1.0 else masks**power), axis=0)
    elif statistic == "variance":
        if power != 1.0:
            raise ValueError(
                "loss.instance_min_area_statistic='variance' reads mean_HW Var_N(m), which "
                f"already weighs opacity; leave loss.instance_min_area_power at 1, got {power}"
            )
        areas = jnp.mean(jnp.var(masks, axis=0), axis=(1, 2, 3))
    else:
        raise ValueError(
            f"statistic (loss.instance_min_area_statistic) must be one of "
            f"{MIN_AREA_STATISTICS}, got {statistic!r}"
        )
    return jnp.sum(jax.nn.relu(min_area - areas))


def instance_binarisation(masks: jnp.ndarray) -> jnp.ndarray:
    """`sum_k mean_{HW} min(m_k, 1 - m_k)` per sample (ILSGAN's binarisation on each instance).

    Args:
      masks: [N, K, H, W, 1] float32 in [0, 1].

    Returns:
      [N] float32 in [0, 0.5 K].
    """
    _check_masks(masks)
    n, k = masks.shape[:2]
    per_instance = mask_losses.binarisation_loss(masks.reshape((n * k,) + masks.shape[2:]))
    return jnp.sum(per_instance.reshape(n, k), axis=1)


class PairwiseIlsResult(NamedTuple):
    """loss: [] float32, sigma * sum of all bounds (minimised by G).
    instance_bounds: [K, 2] float32, per instance the two CLUB bounds in `ils.PAIR_NAMES` order
    (instance k as foreground, the rest of the scene as background), without sigma."""

    loss: jnp.ndarray
    instance_bounds: jnp.ndarray


def colour_spread(rgbs: jnp.ndarray, masks: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    """How much each instance's colour changes between samples: the area-weighted variance over
    the batch of its mask-weighted mean colour, summed over RGB.

    For instance k and sample n, `c_nk = sum_HW(m f) / sum_HW(m)` is the mean colour it draws and
    `a_nk = mean_HW(m)` its area; with weights `w_nk = a_nk / sum_n a_nk` the spread is
    `sum_n w_nk |c_nk - sum_n' w_n'k c_n'k|^2`. A provider that draws one object (any place,
    size or texture) has a small spread; one that draws an orange object in some samples and a
    magenta one in others has a large one. Samples where the instance is (nearly) empty count
    for little, so an instance may be absent without cost.

    Args:
      rgbs: [N, K, H, W, 3] float32, the instances' colours (valid range (-1, 1)).
      masks: [N, K, H, W, 1] float32 in [0, 1], their masks.
      eps: guards the divisions for empty masks.

    Returns:
      [K] float32 >= 0, one spread per instance (at most 12 for colours in [-1, 1]).
    """
    _check_masks(masks)
    if rgbs.shape[:-1] != masks.shape[:-1]:
        raise ValueError(f"rgbs {rgbs.shape} and masks {masks.shape} must agree but in channels")
    mask_sum = jnp.sum(masks, axis=(2, 3))  # [N, K, 1]
    mean_colour = jnp.sum(masks * rgbs, axis=(2, 3)) / (mask_sum + eps)  # [N, K, 3]
    weight = mask_sum / (jnp.sum(mask_sum, axis=0, keepdims=True) + eps)  # [N, K, 1]
    centre = jnp.sum(weight * mean_colour, axis=0, keepdims=True)  # [1, K, 3]
    return jnp.sum(weight * jnp.square(mean_colour - centre), axis=(0, 2))


def pairwise_ils(
    key: jax.Array,
    bg_rgb: jnp.ndarray,
    fg_rgbs: jnp.ndarray,
    masks: jnp.ndarray,
    *,
    sigma: float | jnp.ndarray,
    estimator: str = "laplace",
    neg_weight: float = 1.0,
    estimator_fn: ils.EstimatorFn | None = None,
) -> PairwiseIlsResult:
    """ILS between every instance and the composite of everything else (module docstring).

    Args:
      key: PRNG key; split into one key per instance (K > 1) for `ils.ils_term`'s permutations.
      bg_rgb: [N, H, W, 3] float32; fg_rgbs: [N, K, H, W, 3] float32 (unbounded, valid range
        (-1, 1)); masks: [N, K, H, W, 1] float32 in [0, 1]. Pass the unperturbed layers after
        layout ('bg_rgb', 'fg_rgb', 'mask' of InstanceLayeredGenerator).
      sigma, estimator, neg_weight, estimator_fn: as in `ils.ils_term` (one estimator for all
        instances).

    Returns:
      PairwiseIlsResult(loss [], instance_bounds [K, 2]).
    """
    _check_masks(masks)
    num_instances = fg_rgbs.shape[1]
    bounds = []
    # K = 1 uses `key` itself, so the term is value for value ILSGAN's `ils_term(key, ...)`.
    keys = [key] if num_instances == 1 else list(jax.random.split(key, num_instances))
    for instance, instance_key in enumerate(keys):
        rest_of_scene = composite_without(bg_rgb, fg_rgbs, masks, instance)
        result = ils.ils_term(
            instance_key,
            fg_rgbs[:, instance],
            rest_of_scene,
            masks[:, instance],
            sigma=1.0,
            estimator=estimator,
            neg_weight=neg_weight,
            estimator_fn=estimator_fn,
        )
        bounds.append(result.pair_bounds)
    instance_bounds = jnp.stack(bounds)
    return PairwiseIlsResult(loss=sigma * jnp.sum(instance_bounds), instance_bounds=instance_bounds)
