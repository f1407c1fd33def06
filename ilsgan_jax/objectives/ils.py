"""The independent layer synthesis (ILS) term: a CLUB upper bound on the MI between regions.

Follows `ILSLoss.estimate_MI` of the official code with the configuration every ILSGAN run
uses: estimator 'club', `separate_mi = {do_separate: True, opt_mask: True, stop_grad: False}`,
`scale = 'do_mean'`. With the unperturbed layers `f`, `b`, `m`:

    fg_vis = f * m,  bg_invis = b * m,  fg_invis = f * (1 - m),  bg_vis = b * (1 - m)
    ILS = sigma * [CLUB(x = bg_invis | y = fg_vis) + CLUB(x = fg_invis | y = bg_vis)]

Pixels of `f` and `b` outside the open interval (-1, 1) keep their value but pass no gradient;
the mask always receives gradients. Estimators ('distribution' in the reference):

  'laplace'          fixed q(x|y) ~ exp(-|x - y|):   -mean_i pos_i + w * mean_i neg_i,
                     pos_i = mean_CHW |x_i - y_i|, neg_i = mean_CHW |x_pi(i) - y_i|.
  'gaussian'         fixed q(x|y) ~ exp(-(x - y)^2 / 2): as above with squared errors, times 0.5.
  'neural_laplace'   learned (mu, log b) = U-Net(y) at the estimator's resolution R:
                     mean_i [sum_{RRC} -|x_i - mu_i| / b_i - sum_{RRC} -|x_pi(i) - mu_i| / b_i] / 2.
  'neural_gaussian'  learned (mu, log v): as above with -(x - mu)^2 / v.

For the neural bounds `x` is brought to R x R by nearest-neighbour resizing (PyTorch's rule), and
the reference's neg_weight is not used (it is not in its formula either). The estimator itself is
trained by `estimator_nll` (weight 0.1) in the discriminator phase.
"""

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ilsgan_jax.nn.resampling import nearest_resize

FIXED_ESTIMATORS = ("laplace", "gaussian")
NEURAL_ESTIMATORS = ("neural_laplace", "neural_gaussian")
ESTIMATORS = FIXED_ESTIMATORS + NEURAL_ESTIMATORS
# Region pairs in the order of `pair_bounds`: (x | y) = (bg_invis | fg_vis), (fg_invis | bg_vis).
PAIR_NAMES = ("bg_invis|fg_vis", "fg_invis|bg_vis")
ESTIMATOR_NLL_WEIGHT = 0.1  # weight of the estimator's NLL in the D phase (get_autoreg_loss)

# Maps the two conditions (fg_vis, bg_vis), each [N, H, W, 3], to one (mu, log_scale) pair per
# region pair, each [N, R, R, 3]; e.g. `lambda ys: estimator.apply(params, ys)`.
EstimatorFn = Callable[[Sequence[jnp.ndarray]], Sequence[tuple[jnp.ndarray, jnp.ndarray]]]


class IlsResult(NamedTuple):
    """loss: [] float32, sigma * sum(pair_bounds), minimised by G.
    pair_bounds: [2] float32, the CLUB bound of each pair in `PAIR_NAMES` order (no sigma)."""

    loss: jnp.ndarray
    pair_bounds: jnp.ndarray


def _check_layers(fg_rgb: jnp.ndarray, bg_rgb: jnp.ndarray, mask: jnp.ndarray) -> None:
    if fg_rgb.ndim != 4 or fg_rgb.shape != bg_rgb.shape:
        raise ValueError(
            f"fg_rgb {fg_rgb.shape} and bg_rgb {bg_rgb.shape} must be the same [N, H, W, C] shape"
        )
    if mask.shape != fg_rgb.shape[:3] + (1,):
        raise ValueError(f"mask must be {fg_rgb.shape[:3] + (1,)}, got shape {mask.shape}")


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got '{estimator}'")


def stop_gradient_out_of_range(layer: jnp.ndarray) -> jnp.ndarray:
    """Same values; pixels outside the open interval (-1, 1) pass no gradient."""
    in_range = (layer > -1.0) & (layer < 1.0)
    return jnp.where(in_range, layer, jax.lax.stop_gradient(layer))


def region_pairs(
    fg_rgb: jnp.ndarray, bg_rgb: jnp.ndarray, mask: jnp.ndarray
) -> tuple[tuple[jnp.ndarray, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]:
    """The two (x, y) region pairs of the ILS term, `PAIR_NAMES` order.

    Args:
      fg_rgb, bg_rgb: [N, H, W, 3] float32 (unbounded; [-1, 1] is the valid range).
      mask: [N, H, W, 1] float32 in [0, 1].

    Returns:
      ((bg_invis, fg_invis), (fg_vis, bg_vis)): targets x and conditions y, each [N, H, W, 3].
    """
    fg_vis = fg_rgb * mask
    bg_invis = bg_rgb * mask
    fg_invis = fg_rgb * (1.0 - mask)
    bg_vis = bg_rgb * (1.0 - mask)
    return (bg_invis, fg_invis), (fg_vis, bg_vis)


def ils_permutations(key: jax.Array, batch: int) -> jnp.ndarray:
    """One random permutation of the batch per region pair: [2, N] int32.

    `ils_term` draws its permutations with exactly this function from the key it is given.
    """
    return jax.vmap(lambda pair_key: jax.random.permutation(pair_key, batch))(
        jax.random.split(key, len(PAIR_NAMES))
    )


def club_fixed_bound(
    x: jnp.ndarray,
    y: jnp.ndarray,
    permutation: jnp.ndarray,
    *,
    distribution: str,
    neg_weight: float = 1.0,
) -> jnp.ndarray:
    """CLUB bound with a fixed conditional ('laplace': L1, 'gaussian': squared error * 0.5).

    Args:
      x: [N, H, W, C] target region; y: [N, H, W, C] condition region.
      permutation: [N] int, the negative pairing x_{pi(i)} with y_i.
      distribution: 'laplace' or 'gaussian'.
      neg_weight: weight of the negative term (1).

    Returns:
      [] float32.
    """
    if distribution not in FIXED_ESTIMATORS:
        raise ValueError(f"distribution must be one of {FIXED_ESTIMATORS}, got '{distribution}'")
    error = jnp.abs if distribution == "laplace" else jnp.square
    positive = jnp.mean(error(x - y), axis=(1, 2, 3))
    negative = jnp.mean(error(x[permutation] - y), axis=(1, 2, 3))
    bound = -jnp.mean(positive) + neg_weight * jnp.mean(negative)
    return 0.5 * bound if distribution == "gaussian" else bound


def _scaled_error(
    x: jnp.ndarray, mu: jnp.ndarray, log_scale: jnp.ndarray, distribution: str
) -> jnp.ndarray:
    """|x - mu| / b (laplace) or (x - mu)^2 / v (gaussian), elementwise."""
    if distribution == "neural_laplace":
        return jnp.abs(x - mu) / jnp.exp(log_scale)
    return jnp.square(x - mu) / jnp.exp(log_scale)


def _check_prediction(x: jnp.ndarray, mu: jnp.ndarray, log_scale: jnp.ndarray) -> None:
    if mu.shape != log_scale.shape or mu.ndim != 4 or mu.shape[0] != x.shape[0]:
        raise ValueError(
            f"mu {mu.shape} and log_scale {log_scale.shape} must both be [N, R, R, C] with "
            f"N = {x.shape[0]}"
        )
    if mu.shape[1] != mu.shape[2] or mu.shape[3] != x.shape[3]:
        raise ValueError(f"mu {mu.shape} must be square with {x.shape[3]} channels")


def club_neural_bound(
    x: jnp.ndarray,
    mu: jnp.ndarray,
    log_scale: jnp.ndarray,
    permutation: jnp.ndarray,
    *,
    distribution: str,
) -> jnp.ndarray:
    """CLUB bound from a learned conditional's predictions (reference: `neural_*`).

    `mean_i [sum -e(x_i) - sum -e(x_pi(i))] / 2`, e = |x - mu| / exp(log_scale) ('neural_laplace')
    or (x - mu)^2 / exp(log_scale) ('neural_gaussian'); sums over R, R, C.

    Args:
      x: [N, H, W, C] target region, resized to R x R (nearest, PyTorch rule).
      mu, log_scale: [N, R, R, C] predictions of the estimator given y.
      permutation: [N] int.
      distribution: 'neural_laplace' or 'neural_gaussian'.

    Returns:
      [] float32.
    """
    if distribution not in NEURAL_ESTIMATORS:
        raise ValueError(f"distribution must be one of {NEURAL_ESTIMATORS}, got '{distribution}'")
    _check_prediction(x, mu, log_scale)
    x = nearest_resize(x, mu.shape[1])
    positive = -jnp.sum(_scaled_error(x, mu, log_scale, distribution), axis=(1, 2, 3))
    negative = -jnp.sum(_scaled_error(x[permutation], mu, log_scale, distribution), axis=(1, 2, 3))
    return jnp.mean(positive - negative) / 2.0


def ils_term(
    key: jax.Array,
    fg_rgb: jnp.ndarray,
    bg_rgb: jnp.ndarray,
    mask: jnp.ndarray,
    *,
    sigma: float | jnp.ndarray,
    estimator: str = "laplace",
    neg_weight: float = 1.0,
    estimator_fn: EstimatorFn | None = None,
) -> IlsResult:
    """The ILS term minimised by G (reference `estimate_MI`), computed on unperturbed layers.

    Args:
      key: PRNG key for the two negative-pair permutations (see `ils_permutations`).
      fg_rgb: [N, H, W, 3] float32, unbounded, valid range (-1, 1).
      bg_rgb: [N, H, W, 3] float32, unbounded, valid range (-1, 1).
      mask: [N, H, W, 1] float32 in [0, 1].
      sigma: weight of the term (`schedules.ils_sigma`), scalar.
      estimator: one of `ESTIMATORS`.
      neg_weight: weight of the negative term for the fixed estimators (1).
      estimator_fn: required for the neural estimators; maps (fg_vis, bg_vis) to the
        estimator's [(mu, log_scale)] per pair. Gradients flow through it to the layers; the
        train step differentiates w.r.t. G only, so the estimator is not updated by this term.

    Returns:
      IlsResult(loss [] float32, pair_bounds [2] float32).
    """
    _check_layers(fg_rgb, bg_rgb, mask)
    _check_estimator(estimator)
    fg_rgb = stop_gradient_out_of_range(fg_rgb)
    bg_rgb = stop_gradient_out_of_range(bg_rgb)
    targets, conditions = region_pairs(fg_rgb, bg_rgb, mask)
    permutations = ils_permutations(key, fg_rgb.shape[0])
    if estimator in FIXED_ESTIMATORS:
        bounds = [
            club_fixed_bound(x, y, permutation, distribution=estimator, neg_weight=neg_weight)
            for x, y, permutation in zip(targets, conditions, permutations, strict=True)
        ]
    else:
        if estimator_fn is None:
            raise ValueError(f"estimator '{estimator}' needs estimator_fn")
        predictions = estimator_fn(conditions)
        if len(predictions) != len(PAIR_NAMES):
            raise ValueError(f"estimator_fn returned {len(predictions)} predictions, expected 2")
        bounds = [
            club_neural_bound(x, mu, log_scale, permutation, distribution=estimator)
            for x, (mu, log_scale), permutation in zip(
                targets, predictions, permutations, strict=True
            )
        ]
    pair_bounds = jnp.stack(bounds)
    return IlsResult(loss=sigma * jnp.sum(pair_bounds), pair_bounds=pair_bounds)


def estimator_nll(
    fg_rgb: jnp.ndarray,
    bg_rgb: jnp.ndarray,
    mask: jnp.ndarray,
    estimator_fn: EstimatorFn,
    *,
    estimator: str,
    weight: float = ESTIMATOR_NLL_WEIGHT,
) -> jnp.ndarray:
    """Weighted NLL of the learned conditional (reference `get_autoreg_loss` * 0.1), D phase.

    Per pair, with x resized to the estimator's R x R and sums over R, R, C, batch mean:
      'neural_laplace':  -sum(-log_b - |x - mu| / exp(log_b))
      'neural_gaussian': -sum(-(mu - x)^2 / exp(log_v) - log_v - 0.5 * log(2 pi))
    (the reference's own normalisation, kept as is). The layers are treated as constants (the
    reference freezes G in this phase), so only the estimator's parameters get gradients.

    Args:
      fg_rgb, bg_rgb: [N, H, W, 3] float32; mask: [N, H, W, 1] in [0, 1] (unperturbed layers).
      estimator_fn: as in `ils_term`, closing over the estimator's parameters.
      estimator: 'neural_laplace' or 'neural_gaussian'.
      weight: 0.1.

    Returns:
      [] float32.
    """
    _check_layers(fg_rgb, bg_rgb, mask)
    if estimator not in NEURAL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {NEURAL_ESTIMATORS}, got '{estimator}'")
    fg_rgb, bg_rgb, mask = jax.lax.stop_gradient((fg_rgb, bg_rgb, mask))
    targets, conditions = region_pairs(fg_rgb, bg_rgb, mask)
    predictions = estimator_fn(conditions)
    if len(predictions) != len(PAIR_NAMES):
        raise ValueError(f"estimator_fn returned {len(predictions)} predictions, expected 2")
    total = jnp.zeros((), jnp.float32)
    for x, (mu, log_scale) in zip(targets, predictions, strict=True):
        _check_prediction(x, mu, log_scale)
        x = nearest_resize(x, mu.shape[1])
        log_likelihood = -log_scale - _scaled_error(x, mu, log_scale, estimator)
        if estimator == "neural_gaussian":
            log_likelihood = log_likelihood - 0.5 * math.log(2.0 * math.pi)
        total = total - jnp.mean(jnp.sum(log_likelihood, axis=(1, 2, 3)))
    return weight * total
