"""The ILS term against NumPy references, its gradient routing, and the learned estimator."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ilsgan_jax.models.mi_estimator import RegionMIEstimator
from ilsgan_jax.objectives import ils

N, H, W = 6, 16, 16


def make_layers(seed: int):
    """fg/bg with a fair share of pixels outside (-1, 1); mask in (0, 1)."""
    rng = np.random.default_rng(seed)
    fg = rng.uniform(-1.6, 1.6, (N, H, W, 3)).astype(np.float32)
    bg = rng.uniform(-1.6, 1.6, (N, H, W, 3)).astype(np.float32)
    mask = rng.uniform(0.05, 0.95, (N, H, W, 1)).astype(np.float32)
    return fg, bg, mask


def numpy_pairs(fg, bg, mask):
    fg, bg, mask = (v.astype(np.float64) for v in (fg, bg, mask))
    return [(bg * mask, fg * mask), (fg * (1 - mask), bg * (1 - mask))]  # (x, y) per pair


def numpy_fixed_bound(x, y, permutation, distribution, neg_weight):
    error = np.abs if distribution == "laplace" else np.square
    positive = error(x - y).reshape(len(x), -1).mean(axis=1)
    negative = error(x[permutation] - y).reshape(len(x), -1).mean(axis=1)
    bound = -positive.mean() + neg_weight * negative.mean()
    return 0.5 * bound if distribution == "gaussian" else bound


@pytest.mark.parametrize("distribution,neg_weight", [("laplace", 1.0), ("gaussian", 1.0),
                                                     ("laplace", 0.5)])
def test_fixed_ils_matches_numpy(distribution, neg_weight):
    fg, bg, mask = make_layers(0)
    key = jax.random.key(3)
    result = jax.jit(lambda k, f, b, m: ils.ils_term(
        k, f, b, m, sigma=0.2, estimator=distribution, neg_weight=neg_weight))(key, fg, bg, mask)
    permutations = np.asarray(ils.ils_permutations(key, N))
    assert sorted(permutations[0]) == list(range(N)) and not np.array_equal(*permutations)
    expected = [numpy_fixed_bound(x, y, p, distribution, neg_weight)
                for (x, y), p in zip(numpy_pairs(fg, bg, mask), permutations, strict=True)]
    np.testing.assert_allclose(np.asarray(result.pair_bounds), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(result.loss), 0.2 * sum(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("distribution,min_nonzero", [("gaussian", 0.99), ("laplace", 0.3)])
def test_fixed_ils_gradient_routing(distribution, min_nonzero):
    # With the L1 form the positive and negative terms' signs cancel exactly for many pixels, so
    # only a fraction of in-range pixels gets a nonzero gradient; with the squared form nearly all.
    fg, bg, mask = make_layers(1)
    key = jax.random.key(4)

    def loss(f, b, m):
        return ils.ils_term(key, f, b, m, sigma=1.0, estimator=distribution).loss

    grad_fg, grad_bg, grad_mask = jax.grad(loss, argnums=(0, 1, 2))(fg, bg, mask)
    for layer, gradient in ((fg, grad_fg), (bg, grad_bg)):
        gradient = np.asarray(gradient)
        outside = (layer <= -1) | (layer >= 1)
        assert outside.mean() > 0.2  # the test data exercises the stop-gradient
        assert np.all(gradient[outside] == 0.0)
        assert np.mean(gradient[~outside] != 0.0) > min_nonzero
    assert np.mean(np.asarray(grad_mask) != 0.0) > min_nonzero


def test_fixed_ils_gradient_equals_numpy_finite_difference_for_in_range_pixel():
    fg, bg, mask = make_layers(2)
    key = jax.random.key(5)
    permutations = np.asarray(ils.ils_permutations(key, N))

    def numpy_loss(fg_, mask_):
        pairs = numpy_pairs(fg_, bg, mask_)
        return sum(numpy_fixed_bound(x, y, p, "laplace", 1.0)
                   for (x, y), p in zip(pairs, permutations, strict=True))

    grad_fg, grad_mask = jax.grad(lambda f, m: ils.ils_term(key, f, bg, m, sigma=1.0).loss,
                                  argnums=(0, 1))(fg, mask)
    step = 1e-6
    index_fg = tuple(np.argwhere(np.abs(fg) < 0.9)[0])
    index_mask = (1, 3, 4, 0)
    for array, index, gradient, name in ((fg, index_fg, grad_fg, "fg"),
                                         (mask, index_mask, grad_mask, "mask")):
        plus, minus = array.astype(np.float64), array.astype(np.float64)
        plus[index] += step
        minus[index] -= step
        args_plus = (plus, mask) if name == "fg" else (fg, plus)
        args_minus = (minus, mask) if name == "fg" else (fg, minus)
        numeric = (numpy_loss(*args_plus) - numpy_loss(*args_minus)) / (2 * step)
        np.testing.assert_allclose(float(gradient[index]), numeric, rtol=1e-3, atol=1e-7)


def init_estimator(estimator, fg, bg):
    """Jitted init with an 'rbg' key (threefry initialisation takes XLA:CPU long to compile)."""
    key = jax.random.key(0, impl="rbg")
    return jax.jit(estimator.init)(key, [jnp.asarray(fg), jnp.asarray(bg)])


def numpy_nearest(images, size):
    height = images.shape[1]
    index = np.minimum(np.floor(np.arange(size) * (height / size)).astype(int), height - 1)
    return images[:, index][:, :, index]


def fixed_predictions(seed, resolution):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(N, resolution, resolution, 3)).astype(np.float32),
             np.tanh(rng.normal(size=(N, resolution, resolution, 3))).astype(np.float32))
            for _ in range(2)]


@pytest.mark.parametrize("distribution", ["neural_laplace", "neural_gaussian"])
@pytest.mark.parametrize("resolution", [8, 16])
def test_neural_bound_and_nll_match_numpy(distribution, resolution):
    fg, bg, mask = make_layers(3)
    predictions = fixed_predictions(4, resolution)
    key = jax.random.key(6)
    result = ils.ils_term(key, fg, bg, mask, sigma=1e-3, estimator=distribution,
                          estimator_fn=lambda ys: [tuple(map(jnp.asarray, p)) for p in predictions])
    permutations = np.asarray(ils.ils_permutations(key, N))
    expected_bounds, expected_nll = [], 0.0
    for (x, _), (mu, log_scale), permutation in zip(numpy_pairs(fg, bg, mask), predictions,
                                                    permutations, strict=True):
        x = numpy_nearest(x, resolution)
        mu, log_scale = mu.astype(np.float64), log_scale.astype(np.float64)
        if distribution == "neural_laplace":
            error = lambda v, mu=mu, s=log_scale: np.abs(v - mu) / np.exp(s)  # noqa: E731
        else:
            error = lambda v, mu=mu, s=log_scale: (mu - v) ** 2 / np.exp(s)  # noqa: E731
        positive = -error(x).reshape(N, -1).sum(axis=1)
        negative = -error(x[permutation]).reshape(N, -1).sum(axis=1)
        expected_bounds.append((positive - negative).mean() / 2)
        log_likelihood = -log_scale - error(x)
        if distribution == "neural_gaussian":
            log_likelihood -= 0.5 * math.log(2 * math.pi)
        expected_nll -= log_likelihood.reshape(N, -1).sum(axis=1).mean()
    np.testing.assert_allclose(np.asarray(result.pair_bounds), expected_bounds, rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(float(result.loss), 1e-3 * sum(expected_bounds), rtol=1e-4,
                               atol=1e-7)
    nll = ils.estimator_nll(
        fg, bg, mask, lambda ys: [tuple(map(jnp.asarray, p)) for p in predictions],
        estimator=distribution)
    np.testing.assert_allclose(float(nll), 0.1 * expected_nll, rtol=1e-5)


def test_neural_ils_gradients_reach_mask_through_estimator():
    fg, bg, mask = make_layers(5)
    estimator = RegionMIEstimator(resolution=16, widths=(4, 8))
    params = init_estimator(estimator, fg, bg)
    key = jax.random.key(1)

    def loss(f, b, m):
        return ils.ils_term(key, f, b, m, sigma=1e-3, estimator="neural_laplace",
                            estimator_fn=lambda ys: estimator.apply(params, ys)).loss

    grad_fg, grad_bg, grad_mask = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(fg, bg, mask)
    for layer, gradient in ((fg, grad_fg), (bg, grad_bg)):
        outside = (layer <= -1) | (layer >= 1)
        assert np.all(np.asarray(gradient)[outside] == 0.0)
        assert np.mean(np.asarray(gradient)[~outside] != 0.0) > 0.99
    assert np.mean(np.asarray(grad_mask) != 0.0) > 0.99


@pytest.mark.parametrize("distribution", ["neural_laplace", "neural_gaussian"])
def test_estimator_nll_decreases_when_trained(distribution):
    rng = np.random.default_rng(6)
    # x depends on y so the conditional is learnable: bg copies a blurred fg plus noise.
    fg = rng.uniform(-0.9, 0.9, (8, H, W, 3)).astype(np.float32)
    bg = (0.6 * np.roll(fg, 1, axis=2) + 0.1 * rng.normal(size=fg.shape)).astype(np.float32)
    mask = (rng.uniform(size=(8, H, W, 1)) > 0.5).astype(np.float32) * 0.8 + 0.1
    estimator = RegionMIEstimator(resolution=8, widths=(8, 16))
    params = init_estimator(estimator, fg, bg)
    optimizer = optax.adam(3e-3)
    state = optimizer.init(params)

    @jax.jit
    def nll(p):
        return ils.estimator_nll(fg, bg, mask, lambda ys: estimator.apply(p, ys),
                                 estimator=distribution)

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(nll)(p)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    initial = float(nll(params))
    for _ in range(40):
        params, state, _ = step(params, state)
    final = float(nll(params))
    assert np.isfinite(final) and final < initial - 0.1 * abs(initial)


def test_bad_inputs_raise():
    fg, bg, mask = make_layers(7)
    with pytest.raises(ValueError, match="estimator"):
        ils.ils_term(jax.random.key(0), fg, bg, mask, sigma=1.0, estimator="pixelcnnpp")
    with pytest.raises(ValueError, match="estimator_fn"):
        ils.ils_term(jax.random.key(0), fg, bg, mask, sigma=1.0, estimator="neural_gaussian")
    with pytest.raises(ValueError, match="mask"):
        ils.ils_term(jax.random.key(0), fg, bg, mask[..., 0], sigma=1.0)
