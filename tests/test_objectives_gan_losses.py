"""Adversarial losses, R1 (finite differences) and WGAN-GP (analytic cases)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.objectives import gan_losses

SHAPE = (2, 4, 3, 2)  # N, H, W, C: small enough for central differences over every pixel


def _critic_weights():
    rng = np.random.default_rng(0)
    return rng.normal(size=SHAPE[1:]), rng.normal(size=SHAPE[1:])  # float64


def numpy_critic(image: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """A tiny nonlinear D for one sample: sum(tanh(a * x) * b) + 0.3 * sum(x)^2."""
    return float(np.sum(np.tanh(a * image) * b) + 0.3 * np.sum(image) ** 2)


def jax_critic(images: jnp.ndarray, a: np.ndarray, b: np.ndarray) -> jnp.ndarray:
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    per_sample = jnp.sum(jnp.tanh(a * images) * b, axis=(1, 2, 3))
    return (per_sample + 0.3 * jnp.sum(images, axis=(1, 2, 3)) ** 2)[:, None]  # [N, 1]


def test_r1_penalty_matches_finite_differences():
    a, b = _critic_weights()
    images = np.random.default_rng(1).uniform(-1, 1, SHAPE)
    penalty, logits = jax.jit(
        lambda x: gan_losses.r1_penalty_and_logits(lambda y: jax_critic(y, a, b), x)
    )(jnp.asarray(images, jnp.float32))
    step = 1e-5
    expected = []
    for n in range(SHAPE[0]):
        gradient = np.zeros(SHAPE[1:])
        for index in np.ndindex(*SHAPE[1:]):
            plus, minus = images[n].copy(), images[n].copy()
            plus[index] += step
            minus[index] -= step
            gradient[index] = (numpy_critic(plus, a, b) - numpy_critic(minus, a, b)) / (2 * step)
        expected.append(np.sum(gradient**2))
    assert penalty.shape == (SHAPE[0],)
    np.testing.assert_allclose(np.asarray(penalty), expected, rtol=1e-4)
    np.testing.assert_allclose(
        np.asarray(logits[:, 0]), [numpy_critic(images[n], a, b) for n in range(SHAPE[0])],
        rtol=1e-5,
    )


def test_r1_penalty_is_differentiable_in_critic_parameters():
    # D(x) = w * sum(x^2): grad_x = 2 w x, penalty = 4 w^2 sum(x^2), d penalty / dw = 8 w sum(x^2)
    images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, SHAPE).astype(np.float32))
    squares = np.sum(np.asarray(images, np.float64) ** 2, axis=(1, 2, 3))

    def mean_penalty(weight):
        return jnp.mean(gan_losses.r1_penalty(lambda x: weight * jnp.sum(x**2, axis=(1, 2, 3)),
                                              images))

    weight = 0.7
    np.testing.assert_allclose(float(mean_penalty(weight)), np.mean(4 * weight**2 * squares),
                               rtol=1e-5)
    np.testing.assert_allclose(float(jax.grad(mean_penalty)(weight)), np.mean(8 * weight * squares),
                               rtol=1e-5)


def test_lazy_r1_weighting():
    penalty = jnp.asarray([1.0, 2.0])
    np.testing.assert_allclose(
        np.asarray(gan_losses.lazy_r1_loss(penalty, gamma=0.0256, interval=16)),
        [0.0256 / 2 * 16, 2 * 0.0256 / 2 * 16], rtol=1e-6,
    )


def test_non_saturating_and_wgan_losses():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(5, 1)).astype(np.float32) * 3
    fake = rng.normal(size=(5, 1)).astype(np.float32) * 3
    softplus = lambda v: np.logaddexp(0.0, v)  # noqa: E731
    np.testing.assert_allclose(np.asarray(gan_losses.generator_adversarial_loss(jnp.asarray(fake))),
                               softplus(-fake[:, 0]), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(gan_losses.discriminator_adversarial_loss(jnp.asarray(real), jnp.asarray(fake))),
        softplus(fake[:, 0]) + softplus(-real[:, 0]), rtol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(gan_losses.generator_adversarial_loss(jnp.asarray(fake), loss_type="wgan_gp")),
        -fake[:, 0], rtol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(gan_losses.discriminator_adversarial_loss(
            jnp.asarray(real[:, 0]), jnp.asarray(fake[:, 0]), loss_type="wgan_gp")),
        fake[:, 0] - real[:, 0] + 0.001 * real[:, 0] ** 2, rtol=1e-5,
    )
    with pytest.raises(ValueError, match="loss_type"):
        gan_losses.generator_adversarial_loss(jnp.asarray(fake), loss_type="hinge")
    with pytest.raises(ValueError, match="fake_logits"):
        gan_losses.generator_adversarial_loss(jnp.zeros((5, 2)))


def test_wgan_gradient_penalty_linear_critic_is_analytic():
    # D(x) = <a, x> + c has gradient a everywhere: penalty = (||a||_2 - 1)^2 for every sample.
    rng = np.random.default_rng(4)
    direction = rng.normal(size=SHAPE[1:]).astype(np.float32)
    real = jnp.asarray(rng.uniform(-1, 1, SHAPE).astype(np.float32))
    fake = jnp.asarray(rng.uniform(-1, 1, SHAPE).astype(np.float32))
    for scale in (0.2, 3.0):
        a = direction * scale
        penalty = gan_losses.wgan_gradient_penalty(
            jax.random.key(0), lambda x, a=a: jnp.sum(x * a, axis=(1, 2, 3)) + 0.5, real, fake)
        expected = (np.linalg.norm(a.astype(np.float64)) - 1.0) ** 2
        np.testing.assert_allclose(np.asarray(penalty), np.full(SHAPE[0], expected), rtol=1e-5)


def test_wgan_gradient_penalty_uses_per_sample_interpolates():
    # D(x) = 0.5 * ||x||^2 has gradient x: penalty = (||x_hat|| - 1)^2 with x_hat from alpha.
    rng = np.random.default_rng(5)
    real = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    fake = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    key = jax.random.key(7)
    penalty = gan_losses.wgan_gradient_penalty(
        key, lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3)), jnp.asarray(real), jnp.asarray(fake))
    alpha = np.asarray(jax.random.uniform(key, (SHAPE[0], 1, 1, 1)))
    assert not np.allclose(alpha[0], alpha[1])
    interpolates = alpha * real + (1 - alpha) * fake
    expected = (np.linalg.norm(interpolates.reshape(SHAPE[0], -1), axis=1) - 1.0) ** 2
    np.testing.assert_allclose(np.asarray(penalty), expected, rtol=1e-5)
    # no gradient to the images the penalty is built from
    gradient = jax.grad(lambda f: jnp.sum(gan_losses.wgan_gradient_penalty(
        key, lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3)), jnp.asarray(real), f)))(
        jnp.asarray(fake))
    assert float(jnp.max(jnp.abs(gradient))) == 0.0
