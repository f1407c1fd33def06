"""FID/KID (evaluate/fid, kid, feature_stats, stats_cache, inception_features): closed-form Frechet
distances, KID against a direct MMD, statistics, cache, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilsgan_jax.evaluate import feature_stats, fid, inception, inception_features, kid, stats_cache


def _random_spd(rng, dim):
    matrix = rng.normal(size=(dim, dim))
    return matrix @ matrix.T + 0.5 * np.eye(dim)


def test_frechet_distance_commuting_diagonal_covariances():
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    value = fid.frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    np.testing.assert_allclose(value, expected, rtol=1e-10)
    assert expected == pytest.approx(1.0 + 0 + 6.25 + (1 + 9 - 6) + (4 + 1 - 4))


def test_frechet_distance_non_diagonal_2x2_closed_form():
    # For a 2x2 matrix M with positive eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    cov_a = np.array([[2.0, 0.8], [0.8, 1.0]])
    cov_b = np.array([[1.0, -0.3], [-0.3, 0.5]])
    mean_a, mean_b = np.array([0.3, -0.1]), np.array([-0.2, 0.4])
    product = cov_a @ cov_b
    trace_sqrt = np.sqrt(np.trace(product) + 2 * np.sqrt(np.linalg.det(product)))
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b) - 2 * trace_sqrt
    np.testing.assert_allclose(fid.frechet_distance(mean_a, cov_a, mean_b, cov_b), expected,
                               rtol=1e-10)


def test_frechet_distance_general_via_symmetric_square_root():
    # tr sqrtm(A B) = tr sqrt(A^1/2 B A^1/2), the latter from eigendecompositions only.
    rng = np.random.default_rng(1)
    cov_a, cov_b = _random_spd(rng, 6), _random_spd(rng, 6)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    eigenvalues, eigenvectors = np.linalg.eigh(cov_a)
    sqrt_a = eigenvectors @ np.diag(np.sqrt(eigenvalues)) @ eigenvectors.T
    inner = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b) - 2 * np.sqrt(inner).sum()
    np.testing.assert_allclose(fid.frechet_distance(mean_a, cov_a, mean_b, cov_b), expected,
                               rtol=1e-9)
    # Scaled covariance: W2^2 between N(0, S) and N(0, c^2 S) is (1 - c)^2 tr S.
    np.testing.assert_allclose(
        fid.frechet_distance(np.zeros(6), cov_a, np.zeros(6), 9.0 * cov_a),
        4.0 * np.trace(cov_a), rtol=1e-9,
    )


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_streaming_statistics_match_numpy_and_respect_max_items():
    features = np.random.default_rng(2).normal(size=(50, 5)).astype(np.float32)
    stats = feature_stats.FeatureStatistics(max_items=45, keep_features=True)
    for start in range(0, 50, 8):
        stats.update(features[start : start + 8])
    mean, cov = stats.mean_cov()
    assert stats.num_items == 45
    np.testing.assert_allclose(mean, features[:45].astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(features[:45].astype(np.float64).T, bias=True),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(stats.features(), features[:45])


def test_fid_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(3).normal(size=(400, 16))
    mean, cov = feature_stats.feature_statistics(features)
    assert abs(fid.frechet_distance(mean, cov, mean, cov)) < 1e-6


def _direct_unbiased_mmd2(x, y):
    dim, m = x.shape[1], x.shape[0]
    kernel = lambda a, b: (a @ b / dim + 1.0) ** 3  # noqa: E731
    within = sum(kernel(x[i], x[j]) + kernel(y[i], y[j])
                 for i in range(m) for j in range(m) if i != j)
    across = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2 * across / m**2


def test_kid_equals_direct_unbiased_mmd_on_full_subsets():
    rng = np.random.default_rng(4)
    generated, real = rng.normal(size=(12, 3)), rng.normal(0.5, 1.0, size=(12, 3))
    # One subset of all 12 samples: a permutation, to which the MMD is invariant.
    estimate = kid.kernel_inception_distance(generated, real, num_subsets=1, max_subset_size=100)
    np.testing.assert_allclose(estimate, _direct_unbiased_mmd2(generated, real), rtol=1e-10)


def test_kid_of_identical_sets_is_near_zero_and_shift_is_not():
    rng = np.random.default_rng(5)
    features, other_draw = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    shifted = kid.kernel_inception_distance(features + 0.5, features, 10, 500)
    # The set against itself (one subset = the whole set): only the O(1/m) diagonal terms remain.
    same = kid.kernel_inception_distance(features, features, num_subsets=1, max_subset_size=1000)
    # An independent draw of the same distribution: the estimator is unbiased.
    independent = kid.kernel_inception_distance(other_draw, features, 10, 500)
    assert shifted > 0.5
    assert abs(same) < 0.02 * shifted
    assert abs(independent) < 0.01 * shifted


def test_stats_cache_path_and_bad_names(tmp_path):
    path = stats_cache.stats_cache_path("synthetic", 32, "train", None, cache_dir=str(tmp_path))
    assert path == str(tmp_path / "fid_stats" / "synthetic-32px-train-all.npz")
    with pytest.raises(ValueError, match="dataset"):
        stats_cache.stats_cache_path("../evil", 32, "train", 100)


def _pooled_features(images):
    """Cheap stand-in detector: 2x2 average-pooled pixels, [B, 12]."""
    images = jnp.asarray(images, jnp.float32)
    batch, height, width, _ = images.shape
    pooled = images.reshape(batch, 2, height // 2, 2, width // 2, 3).mean(axis=(2, 4))
    return np.asarray(pooled.reshape(batch, 12))


def _real_batches(images, batch_size):
    return [images[i : i + batch_size] for i in range(0, images.shape[0], batch_size)]


def test_compute_fid_end_to_end_and_cache(tmp_path):
    rng = np.random.default_rng(6)
    real_images = np.tanh(rng.normal(size=(90, 8, 8, 3))).astype(np.float32)

    def same_distribution(key, batch_size):
        return jnp.tanh(jax.random.normal(key, (batch_size, 8, 8, 3)))

    def shifted_distribution(key, batch_size):
        return jnp.tanh(jax.random.normal(key, (batch_size, 8, 8, 3)) + 0.5)

    common = dict(batch_size=16, feature_extractor=_pooled_features, cache_dir=str(tmp_path),
                  cache_key=("toy", 8, "train"), with_kid=True, kid_subsets=10,
                  kid_subset_size=80)
    good = fid.compute_fid(same_distribution, _real_batches(real_images, 16), None, 400, **common)
    assert good.num_real == 90 and good.num_generated == 400
    # Cached now: an iterator that fails if read proves the cache is used.
    def must_not_be_called():
        raise AssertionError("real data read despite the cache")

    bad = fid.compute_fid(shifted_distribution, must_not_be_called, None, 400, **common)
    assert bad.fid > 5 * good.fid and bad.fid > 0.1
    assert bad.kid > 5 * abs(good.kid)
    # FID of the real set against itself (generator replaying the real images) is ~0.
    batches = iter(np.concatenate([real_images[:80]] * 2)[i : i + 16] for i in range(0, 160, 16))
    replay = fid.compute_fid(lambda key, n: next(batches), _real_batches(real_images[:80], 16),
                             None, 80, batch_size=16, feature_extractor=_pooled_features)
    assert abs(replay.fid) < 1e-6
    # The cache file holds the float64 statistics of the 90 real images.
    cache_path = stats_cache.stats_cache_path("toy", 8, "train", None, str(tmp_path))
    cached = stats_cache.load_statistics(cache_path)
    expected_mean, expected_cov = feature_stats.feature_statistics(_pooled_features(real_images))
    np.testing.assert_allclose(cached.mean, expected_mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cached.cov, expected_cov, rtol=1e-5, atol=1e-9)


def test_compute_fid_needs_enough_real_images():
    images = np.zeros((10, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="real_iterator"):
        fid.compute_fid(lambda key, n: jnp.zeros((n, 8, 8, 3)), [images], None, 8,
                        batch_size=8, num_real=20, feature_extractor=_pooled_features)


def test_sharded_inception_extractor_matches_single_device():
    # Random weights (shapes only): the point is that sharding over 8 devices changes nothing.
    rng = np.random.default_rng(7)
    shapes = inception.flatten_params(inception.inception_param_shapes())
    flat = {}
    for name, shape in shapes.items():
        if name.endswith("kernel"):
            fan_in = np.prod(shape[:-1])
            flat[name] = (rng.normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)
        else:
            flat[name] = np.zeros(shape, np.float32) if not name.endswith("var") else np.ones(
                shape, np.float32)
    variables = inception.unflatten_params(flat)
    images = rng.uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
    make_extractor = inception_features.make_inception_extractor
    sharded = make_extractor(variables, batch_size=8)
    single = make_extractor(variables, batch_size=8, devices=jax.local_devices()[:1])
    assert len(jax.local_devices()) == 8  # conftest simulates 8 CPU devices
    features_sharded, features_single = sharded(images), single(images)
    assert features_sharded.shape == (8, 2048)
    np.testing.assert_allclose(features_sharded, features_single, rtol=1e-4, atol=1e-5)
    assert np.std(features_single, axis=0).mean() > 0  # not a constant output
