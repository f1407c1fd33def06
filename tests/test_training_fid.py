"""FID during training: the evaluator degrades gracefully without weights; real images are the
whole training split with padding removed."""

import numpy as np

from configs import ilsgan as ilsgan_config
from ilsgan_jax.data import input_pipeline
from ilsgan_jax.train import training_fid


def _tiny_config(data_dir):
    config = ilsgan_config.get_config("runlocal,res=16")
    config.data.data_dir = str(data_dir)
    config.data.synthetic_train_size = 70
    config.data.synthetic_test_size = 10
    config.eval.batch_size = 32
    return config


def test_evaluator_without_inception_weights_returns_none(tmp_path, monkeypatch):
    monkeypatch.setenv("ILSGAN_JAX_CACHE", str(tmp_path / "empty_cache"))
    config = _tiny_config(tmp_path / "tfds")
    evaluate = training_fid.make_fid_evaluator(config, networks=None)
    assert evaluate(state=None) is None


def test_real_images_cover_the_training_split_without_padding(tmp_path):
    config = _tiny_config(tmp_path / "tfds")
    input_pipeline.prepare_synthetic(config.data)
    batches = list(training_fid.real_images(config))
    # 70 images in batches of 32: 32 + 32 + 6 valid rows (the padding of the last is dropped).
    assert [b.shape[0] for b in batches] == [32, 32, 6]
    images = np.concatenate(batches)
    assert images.shape == (70, 16, 16, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert np.abs(images).sum(axis=(1, 2, 3)).min() > 0  # no all-zero padding rows
