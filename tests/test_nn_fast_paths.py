"""The polyphase / sub-pixel fast paths of `ilsgan_jax.nn` against the literal zero-insertion forms:
values and gradients (the backward passes are what the fast paths were written for)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.nn import upfirdn2d as fir
from ilsgan_jax.nn.conv import conv2d_resample, conv2d_resample_direct, transposed_conv2d

RNG = np.random.default_rng(1)
TAPS = fir.setup_filter([1.0, 3.0, 2.0, 5.0])  # asymmetric: catches a wrong flip or phase


@pytest.mark.parametrize(
    "up,down,pads",
    [
        (2, 1, (2, 1, 2, 1)),
        (2, 1, (0, -1, 3, 0)),
        (2, 1, (-3, 4, 5, -2)),
        (3, 1, (1, 2, 0, 3)),
        (1, 2, (1, 1, 1, 1)),
        (1, 2, (-1, 2, 0, 1)),
        (1, 3, (2, 0, 1, 1)),
        (2, 2, (1, 2, 2, 1)),
        (3, 2, (0, 1, 2, 0)),
    ],
)
def test_polyphase_upfirdn2d_matches_zero_insertion_form_and_its_gradient(up, down, pads):
    x = jnp.asarray(RNG.normal(size=(2, 7, 9, 3)).astype(np.float32))
    kwargs = dict(up=up, down=down, padding=pads, gain=1.5, flip_filter=bool(up % 2))

    @jax.jit
    def both(v, cotangent):  # one compilation per case (op-by-op dispatch is slow to compile)
        results = []
        for op in (fir.upfirdn2d, fir.upfirdn2d_direct):
            out, vjp = jax.vjp(lambda u, op=op: op(u, TAPS, **kwargs), v)
            results += [out, vjp(cotangent)[0]]
        return results

    out_shape = jax.eval_shape(lambda v: fir.upfirdn2d_direct(v, TAPS, **kwargs), x).shape
    cotangent = jnp.asarray(RNG.normal(size=out_shape).astype(np.float32))
    fast, grad_fast, literal, grad_literal = both(x, cotangent)
    assert fast.shape == literal.shape == out_shape
    np.testing.assert_allclose(np.asarray(fast), np.asarray(literal), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(grad_fast), np.asarray(grad_literal), rtol=1e-5, atol=1e-5
    )


def test_short_filter_leaves_empty_phases_zero():
    # A 1-tap filter with up=3: two of three phases have no taps and must be exactly zero.
    x = jnp.asarray(RNG.normal(size=(1, 4, 5, 2)).astype(np.float32))
    fast = fir.upfirdn2d(x, np.ones([1], np.float32), up=3)
    want = np.zeros((1, 12, 15, 2), np.float32)
    want[:, ::3, ::3] = np.asarray(x)
    np.testing.assert_array_equal(np.asarray(fast), want)


@pytest.mark.parametrize("kernel_size,up", [(3, 2), (4, 2), (1, 2), (2, 3)])
def test_transposed_conv_is_the_full_correlation_of_the_zero_inserted_image(kernel_size, up):
    k = kernel_size
    x = RNG.normal(size=(2, 5, 4, 3)).astype(np.float32)
    w = RNG.normal(size=(k, k, 3, 2)).astype(np.float32)
    got = np.asarray(
        jax.jit(transposed_conv2d, static_argnums=2)(jnp.asarray(x), jnp.asarray(w), up)
    )
    out_h, out_w = up * (5 - 1) + k, up * (4 - 1) + k
    zero_inserted = np.zeros((2, out_h + k - 1, out_w + k - 1, 3), np.float32)
    zero_inserted[:, k - 1 : k - 1 + up * 5 : up, k - 1 : k - 1 + up * 4 : up] = x
    want = np.zeros((2, out_h, out_w, 2))
    for dy in range(k):
        for dx in range(k):
            window = zero_inserted[:, dy : dy + out_h, dx : dx + out_w]
            want += np.einsum("nhwi,io->nhwo", window, w[dy, dx])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kernel_size,flip_weight,size",
    [(3, False, (6, 5)), (3, True, (4, 4)), (1, False, (5, 6)), (4, False, (5, 5))],
)
def test_subpixel_upsampling_conv_matches_literal_form_and_its_gradients(
    kernel_size, flip_weight, size
):
    x = jnp.asarray(RNG.normal(size=(2, *size, 3)).astype(np.float32))
    w = jnp.asarray(RNG.normal(size=(kernel_size, kernel_size, 3, 4)).astype(np.float32))
    kwargs = dict(up=2, padding=kernel_size // 2, flip_weight=flip_weight)
    f = fir.setup_filter()

    def fast(v, k):
        return conv2d_resample(v, k, f, **kwargs)

    def literal(v, k):
        return conv2d_resample_direct(v, k, f, **kwargs)

    @jax.jit
    def value_and_vjp(v, k, cotangent):
        results = []
        for op in (fast, literal):
            out, vjp = jax.vjp(op, v, k)
            results.append((out, *vjp(cotangent)))
        return results

    out_shape = jax.eval_shape(literal, x, w).shape
    cotangent = jnp.asarray(RNG.normal(size=out_shape).astype(np.float32))
    (out_fast, *grads_fast), (out_literal, *grads_literal) = value_and_vjp(x, w, cotangent)
    assert out_fast.shape == out_literal.shape
    np.testing.assert_allclose(np.asarray(out_fast), np.asarray(out_literal), rtol=1e-4, atol=1e-4)
    for got, want in zip(grads_fast, grads_literal, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-3)
