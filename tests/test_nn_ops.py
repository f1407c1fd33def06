"""StyleGAN2 ops against references computed another way (SciPy / NumPy loops)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from ilsgan_jax.nn import upfirdn2d as fir
from ilsgan_jax.nn.bias_act import bias_act
from ilsgan_jax.nn.conv import conv2d_resample
from ilsgan_jax.nn.layers import EqualizedDense, minibatch_std, modulated_conv2d

RNG = np.random.default_rng(0)


def _upfirdn_1d_scipy(x, taps, up, down, pad0, pad1, axis):
    """Reference semantics along one axis via scipy.signal.upfirdn (zero insertion + full conv)."""
    length = x.shape[axis]
    full = signal.upfirdn(taps, x, up=up, down=1, axis=axis)  # true (full) convolution
    upsampled_len = length * up + pad0 + pad1
    out_len = (upsampled_len - taps.size) // down + 1
    # output o reads full-conv index o*down + len(taps) - 1 - pad0 (zero outside)
    index = np.arange(out_len) * down + taps.size - 1 - pad0
    valid = (index >= 0) & (index < full.shape[axis])
    picked = np.take(full, np.clip(index, 0, full.shape[axis] - 1), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = out_len
    return picked * valid.reshape(shape)


def upfirdn2d_reference(x, taps, up, down, pads, gain):
    pad_x0, pad_x1, pad_y0, pad_y1 = pads
    taps = np.asarray(taps, np.float64) * np.sqrt(gain)
    y = _upfirdn_1d_scipy(x.astype(np.float64), taps, up, down, pad_y0, pad_y1, axis=1)
    return _upfirdn_1d_scipy(y, taps, up, down, pad_x0, pad_x1, axis=2)


@pytest.mark.parametrize(
    "up,down,pads,gain",
    [
        (1, 1, (1, 2, 1, 2), 1.0),
        (2, 1, (2, 1, 2, 1), 4.0),
        (1, 2, (1, 1, 1, 1), 1.0),
        (2, 1, (0, -1, 3, 0), 4.0),  # negative padding crops
        (1, 2, (-1, 2, 0, 1), 2.0),
    ],
)
def test_upfirdn2d_matches_scipy(up, down, pads, gain):
    x = RNG.normal(size=(2, 9, 11, 3)).astype(np.float32)
    taps = np.array([1.0, 3.0, 2.0, 5.0])  # asymmetric: catches a wrong flip
    kernel = fir.setup_filter(taps)
    got = fir.upfirdn2d(jnp.asarray(x), kernel, up=up, down=down, padding=pads, gain=gain)
    want = upfirdn2d_reference(x, kernel, up, down, pads, gain)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_upfirdn2d_2d_kernel_equals_separable_and_flip_filter_is_correlation():
    x = jnp.asarray(RNG.normal(size=(1, 8, 8, 2)).astype(np.float32))
    taps = fir.setup_filter([1, 2, 0, 3])
    separable = fir.upfirdn2d(x, taps, up=2, padding=(1, 2, 1, 2))
    outer = fir.upfirdn2d(x, np.outer(taps, taps), up=2, padding=(1, 2, 1, 2))
    np.testing.assert_allclose(np.asarray(separable), np.asarray(outer), rtol=1e-5, atol=1e-6)
    flipped = fir.upfirdn2d(x, taps[::-1].copy(), padding=(2, 1, 2, 1), flip_filter=True)
    plain = fir.upfirdn2d(x, taps, padding=(2, 1, 2, 1))
    np.testing.assert_allclose(np.asarray(flipped), np.asarray(plain), rtol=1e-6, atol=1e-6)


def test_upsample_downsample_preserve_constants_in_the_interior():
    kernel = fir.setup_filter()
    ones = jnp.ones((1, 8, 8, 1))
    up = fir.upsample2d(ones, kernel)
    assert up.shape == (1, 16, 16, 1)
    np.testing.assert_allclose(np.asarray(up[0, 2:-2, 2:-2, 0]), 1.0, rtol=1e-6)
    down = fir.downsample2d(ones, kernel)
    assert down.shape == (1, 4, 4, 1)
    np.testing.assert_allclose(np.asarray(down[0, 1:-1, 1:-1, 0]), 1.0, rtol=1e-6)


def test_bias_act_matches_numpy():
    x = RNG.normal(size=(3, 4, 5)).astype(np.float32) * 3
    b = RNG.normal(size=(5,)).astype(np.float32)
    got = bias_act(jnp.asarray(x), jnp.asarray(b), "lrelu", clamp=2.0)
    pre = x + b
    want = np.clip(np.where(pre >= 0, pre, 0.2 * pre) * np.sqrt(2), -2, 2)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bias_act(jnp.asarray(x), None, "linear")), x)
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(jnp.asarray(x), None, "swish")


def _conv_per_channel_pairs(x, w, op):
    """x: [H, W, Cin], w: [k, k, Cin, Cout] -> sum over Cin of op(x[..., i], w[..., i, o])."""
    outs = []
    for o in range(w.shape[3]):
        outs.append(sum(op(x[..., i], w[..., i, o]) for i in range(w.shape[2])))
    return np.stack(outs, axis=-1)


def test_conv2d_resample_plain_up_and_down_match_scipy():
    x = RNG.normal(size=(1, 6, 6, 2)).astype(np.float32)
    w = RNG.normal(size=(3, 3, 2, 3)).astype(np.float32)
    f = fir.setup_filter()
    f2d = np.outer(f, f).astype(np.float64)

    same = conv2d_resample(jnp.asarray(x), jnp.asarray(w), f, padding=1)
    want = _conv_per_channel_pairs(x[0], w, lambda a, k: signal.correlate2d(a, k, mode="same"))
    np.testing.assert_allclose(np.asarray(same[0]), want, rtol=1e-4, atol=1e-4)

    # Upsampling (flip_weight=False, as SynthesisLayer): out = (w * f * 4 * Z(x))[2:2+2H] with
    # full true convolutions, Z = zero insertion.
    up = conv2d_resample(jnp.asarray(x), jnp.asarray(w), f, up=2, padding=1, flip_weight=False)
    zeros = np.zeros((12, 12, 2))
    zeros[::2, ::2] = x[0]

    def up_ref(a, k):
        filtered = signal.convolve2d(a, f2d * 4, mode="full")
        return signal.convolve2d(filtered, k, mode="full")[2:14, 2:14]

    want_up = _conv_per_channel_pairs(zeros, w, up_ref)
    np.testing.assert_allclose(np.asarray(up[0]), want_up, rtol=1e-4, atol=1e-4)

    # Downsampling: FIR filter with padding 2, then stride-2 correlation.
    down = conv2d_resample(jnp.asarray(x), jnp.asarray(w), f, down=2, padding=1)

    def down_ref(a, k):
        filtered = signal.convolve2d(np.pad(a, 2), f2d, mode="valid")
        return signal.correlate2d(filtered, k, mode="valid")[::2, ::2]

    want_down = _conv_per_channel_pairs(x[0], w, down_ref)
    np.testing.assert_allclose(np.asarray(down[0]), want_down, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_forms_agree_with_a_per_sample_loop(up):
    batch, cin, cout = 3, 4, 5
    x = jnp.asarray(RNG.normal(size=(batch, 8, 8, cin)).astype(np.float32))
    w = jnp.asarray(RNG.normal(size=(3, 3, cin, cout)).astype(np.float32))
    styles = jnp.asarray(RNG.normal(size=(batch, cin)).astype(np.float32) + 1.0)
    f = fir.setup_filter()
    kwargs = dict(up=up, padding=1, resample_filter=f, flip_weight=(up == 1))
    training = modulated_conv2d(x, w, styles, fused=False, **kwargs)
    fused = modulated_conv2d(x, w, styles, fused=True, **kwargs)
    loop = []
    for n in range(batch):
        wn = np.asarray(w) * np.asarray(styles)[n][None, None, :, None]
        wn = wn / np.sqrt((wn**2).sum(axis=(0, 1, 2), keepdims=True) + 1e-8)
        loop.append(conv2d_resample(x[n : n + 1], jnp.asarray(wn), f, up=up, padding=1,
                                    flip_weight=(up == 1))[0])
    loop = np.stack(loop)
    assert training.shape == (batch, 8 * up, 8 * up, cout)
    np.testing.assert_allclose(np.asarray(training), loop, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(fused), loop, rtol=1e-4, atol=1e-4)


def test_demodulation_gives_unit_output_variance():
    key_x, key_w, key_s = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(key_x, (16, 16, 16, 128))
    w = jax.random.normal(key_w, (3, 3, 128, 64))
    styles = jax.random.normal(key_s, (16, 128)) * 0.5 + 1.0
    out = modulated_conv2d(x, w, styles, padding=1)
    interior_variance = float(jnp.var(out[:, 1:-1, 1:-1]))
    assert abs(interior_variance - 1.0) < 0.05, interior_variance
    undemodulated = modulated_conv2d(x, w, styles, padding=1, demodulate=False)
    assert float(jnp.var(undemodulated[:, 1:-1, 1:-1])) > 10.0


def test_minibatch_std_matches_numpy_formula():
    x = RNG.normal(size=(8, 4, 4, 6)).astype(np.float32)
    got = np.asarray(minibatch_std(jnp.asarray(x), group_size=4, num_channels=2))
    assert got.shape == (8, 4, 4, 8)
    np.testing.assert_array_equal(got[..., :6], x)
    for n in range(8):
        group = x[(n // 4) * 4 : (n // 4) * 4 + 4]
        for f in range(2):
            channels = group[..., f * 3 : (f + 1) * 3]
            want = np.sqrt(channels.var(axis=0) + 1e-8).mean()
            np.testing.assert_allclose(got[n, :, :, 6 + f], want, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of group size"):
        minibatch_std(jnp.asarray(x[:6]), group_size=4)


def test_minibatch_std_group_zero_is_the_whole_batch_on_any_device_count():
    """Group size 0: one statistic, `mean sqrt(var over all N + 1e-8)` over the features (the
    original PerturbGAN's StyleGAN (v1) D); with the batch sharded over 8 devices under jit the
    group is the global batch, as on one device."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    x = RNG.normal(size=(8, 4, 4, 6)).astype(np.float32)
    got = np.asarray(minibatch_std(jnp.asarray(x), group_size=0))
    np.testing.assert_allclose(got[..., 6], np.sqrt(x.var(axis=0) + 1e-8).mean(), rtol=1e-5)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    on_devices = jax.jit(lambda batch: minibatch_std(batch, group_size=0))(sharded)
    np.testing.assert_allclose(np.asarray(on_devices), got, rtol=1e-6)
    per_device = np.asarray(minibatch_std(jnp.asarray(x), group_size=1))[..., 6]
    assert not np.allclose(per_device, got[..., 6])  # groups of one sample would read ~0


def test_equalized_dense_runtime_scaling_and_init():
    layer = EqualizedDense(300, bias_init=0.5, lr_multiplier=0.01)
    x = jnp.asarray(RNG.normal(size=(2, 400)).astype(np.float32))
    params = layer.init(jax.random.key(0), x)["params"]
    weight = np.asarray(params["weight"])
    assert abs(weight.std() - 100.0) < 2.0  # N(0, 1 / lr_multiplier^2)
    got = layer.apply({"params": params}, x)
    want = np.asarray(x) @ (weight * 0.01 / np.sqrt(400)) + 0.5 * 0.01
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
