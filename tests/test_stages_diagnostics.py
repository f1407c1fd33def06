"""`--mode=fid` and `--mode=mine` (`stages.diagnostics`) on a real (2-step) GAN checkpoint at
16 px, in process: the reports equal direct computations, with a small stand-in for Inception;
the MINE report is ~0 for independent regions and close to the true MI for dependent ones.
"""

import json
import os

import numpy as np
import pytest
from loop_helpers import RESOLUTION
from stage_helpers import stage_config, train_tiny_gan

from ilsgan_jax.stages import diagnostics, modes
from ilsgan_jax.train import loop, training_fid

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return stage_config(str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def trained_workdir(config, tmp_path_factory):
    return train_tiny_gan(config, str(tmp_path_factory.mktemp("gan")))


FID_FEATURE_DIM = 8


def projection_features(batch_size: int):
    """A small stand-in for Inception: a fixed random projection of the flattened images
    (uint8-range values as the real extractor sees them) to 8 features; float64 [B, 8]."""
    weights = np.random.default_rng(5).normal(size=(RESOLUTION * RESOLUTION * 3, FID_FEATURE_DIM))

    def extract(images):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            images = np.floor(np.clip(images * 127.5 + 128.0, 0, 255))
        assert images.shape[0] == batch_size
        return images.reshape(batch_size, -1).astype(np.float64) / 255.0 @ weights

    return extract


@pytest.fixture()
def fid_config(config):
    fid_config = config.copy_and_resolve_references()
    fid_config.eval.fid_full_num_images = 40
    fid_config.eval.batch_size = 16
    fid_config.eval.kid_subsets = 5
    return fid_config


def test_fid_mode_report_equals_a_direct_computation(
    fid_config, trained_workdir, tmp_path, monkeypatch
):
    import jax

    from ilsgan_jax.evaluate import fid as fid_lib
    from ilsgan_jax.evaluate import inception_features, kid, stats_cache

    monkeypatch.setenv("ILSGAN_JAX_CACHE", str(tmp_path / "cache"))
    workdir = trained_workdir["workdir"]
    extract = projection_features(16)
    report = diagnostics.run_fid(fid_config, workdir, feature_extractor=extract)
    with open(os.path.join(workdir, "fid.json")) as file:
        assert json.load(file) == report
    assert report["metric"] == "fid40_full" and report["kid_metric"] == "kid40_full"
    assert report["num_images"] == 40 and report["checkpoint_step"] == 2
    assert report["num_real_images"] == fid_config.data.synthetic_train_size  # the full split
    # The real statistics are cached per (data set, resolution, split).
    assert os.path.isfile(stats_cache.stats_cache_path("synthetic", RESOLUTION, "train", None))

    # Direct: every training image; 3 batches of 16 generated images, batch i from
    # fold_in(key(config.seed), i) split into (latents, noise), first 40 kept.
    real = np.concatenate(
        [
            extract(inception_features._padded(b, 16))[: b.shape[0]]
            for b in training_fid.real_images(fid_config)
        ]
    )
    state = trained_workdir["result"].state
    generator = loop.builders.build_networks(fid_config).generator
    variables = {"params": state.g_ema_params, **state.g_ema_buffers}
    generated = []
    for batch in range(3):
        key = jax.random.fold_in(jax.random.key(fid_config.seed), batch)
        latent_key, noise_key = jax.random.split(key)
        z = jax.random.normal(latent_key, (16, fid_config.model.z_dim))
        images = generator.apply(variables, z, rngs={"noise": noise_key})["composite"]
        generated.append(extract(np.asarray(images)))
    generated = np.concatenate(generated)[:40]
    expected_fid = fid_lib.frechet_distance(
        generated.mean(0), np.cov(generated.T, bias=True), real.mean(0), np.cov(real.T, bias=True)
    )
    expected_kid = kid.kernel_inception_distance(
        generated, real, num_subsets=5, max_subset_size=1000, seed=fid_config.seed
    )
    assert report["fid"] == pytest.approx(expected_fid, rel=1e-4)
    assert report["kid"] == pytest.approx(expected_kid, rel=1e-3, abs=1e-7)
    assert report["fid"] > 0


def test_fid_mode_defaults_and_missing_inception(config, trained_workdir, tmp_path, monkeypatch):
    assert config.eval.fid_full_num_images == 50_000
    assert diagnostics.metric_name("fid", 50_000) == "fid50k_full"
    assert diagnostics.metric_name("kid", 10_000) == "kid10k_full"
    monkeypatch.setenv("ILSGAN_JAX_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(FileNotFoundError, match="python -m ilsgan_jax.evaluate.convert_inception"):
        diagnostics.run_fid(config, trained_workdir["workdir"])


def region_layers(seed: int, count: int = 3000, rho: float = 0.9):
    """2x2 px layers, mask = left column. Inside the mask fg and bg are independent normals;
    outside it the foreground is rho * bg + sqrt(1 - rho^2) * noise. So I(b m; f m) = 0 and
    I(f (1 - m); b (1 - m)) = -6/2 log(1 - rho^2) = 4.98 nats (6 correlated dimensions)."""
    rng = np.random.default_rng(seed)
    fg = rng.normal(size=(count, 2, 2, 3)) * 0.5
    bg = rng.normal(size=(count, 2, 2, 3)) * 0.5
    mask = np.zeros((count, 2, 2, 1))
    mask[:, :, :1] = 1.0
    fg = np.where(mask == 0, rho * bg + np.sqrt(1 - rho**2) * fg, fg)
    true_mi = -0.5 * np.log(1 - rho**2) * 6
    return fg.astype(np.float32), bg.astype(np.float32), mask.astype(np.float32), true_mi


def test_mine_report_zero_for_independent_positive_for_dependent():
    import jax
    import ml_collections

    fg, bg, mask, true_mi = region_layers(0)
    mine_config = ml_collections.ConfigDict(
        dict(hidden_sizes=(64,), learning_rate=1e-3, batch_size=256, num_steps=1000, ema_decay=None)
    )
    report = diagnostics.region_mi_report(jax.random.key(0), fg, bg, mask, mine_config)
    estimates = report["estimates_nats"]
    assert set(estimates) == set(diagnostics.MINE_PAIRS) == set(report["pairs"])
    assert abs(estimates["mi_bg_invisible_fg_visible"]) < 0.1, estimates
    assert 0.6 * true_mi < estimates["mi_fg_invisible_bg_visible"] < true_mi + 0.2, estimates
    assert report["settings"]["num_samples"] == 3000
    assert report["settings"]["hidden_sizes"] == [64]


def test_mine_mode_writes_its_report(config, trained_workdir):
    import jax

    mine_config = config.copy_and_resolve_references()
    mine_config.mine.num_samples = 40
    mine_config.mine.batch_size = 16
    mine_config.mine.hidden_sizes = (8,)
    mine_config.mine.num_steps = 30
    mine_config.eval.batch_size = 16
    workdir = trained_workdir["workdir"]
    report_path = os.path.join(workdir, "mine_report.json")
    assert not os.path.exists(report_path)
    modes.run_mode("mine", mine_config, workdir)  # what --mode=mine runs
    with open(report_path) as file:
        report = json.load(file)
    assert set(report["estimates_nats"]) == set(diagnostics.MINE_PAIRS)
    assert report["checkpoint_step"] == 2 and report["resolution"] == RESOLUTION
    for name in ("num_samples", "batch_size", "num_steps", "learning_rate", "seed"):
        assert report["settings"][name] == mine_config.mine[name], name
    # The same estimates from layers recomputed here: latents of batch i from
    # fold_in(split(key(seed))[0], i), constant noise; the critic from split(...)[1].
    latent_key, critic_key = jax.random.split(jax.random.key(mine_config.mine.seed))
    state = trained_workdir["result"].state
    generator = loop.builders.build_networks(mine_config).generator
    variables = {"params": state.g_ema_params, **state.g_ema_buffers}
    layers = [
        generator.apply(
            variables,
            jax.random.normal(jax.random.fold_in(latent_key, batch), (16, mine_config.model.z_dim)),
            noise_mode="const",
        )
        for batch in range(3)
    ]
    fg, bg, mask = (
        np.concatenate([np.asarray(batch[name]) for batch in layers])[:40]
        for name in ("fg_rgb", "bg_rgb", "mask")
    )
    expected = diagnostics.region_mi_report(critic_key, fg, bg, mask, mine_config.mine)
    for name, value in expected["estimates_nats"].items():
        assert np.isfinite(report["estimates_nats"][name])
        assert report["estimates_nats"][name] == pytest.approx(value, abs=1e-3), name
