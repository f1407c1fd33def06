"""Saved network weights (`stages.weights`): the segmenter's and the inversion encoder's, in orbax
directories; weights of older runs (one flax msgpack file) still load; unreadable ones fail
naming the path and what to run.

The variables are random arrays of the networks' shapes (`jax.eval_shape`): nothing trains.
"""

import logging as std_logging

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loop_helpers import RESOLUTION
from stage_helpers import stage_config

from configs import perturbgan
from ilsgan_jax.evaluate import segmenter as segmenter_lib
from ilsgan_jax.models.encoder import build_encoder
from ilsgan_jax.stages import inversion, segmentation

# A failed orbax restore abandons its other pending reads; their coroutines are reported at
# garbage collection as "unraisable" exceptions. Harmless and inside orbax.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return stage_config(str(tmp_path_factory.mktemp("tfds")))


def random_like(tree, seed: int):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: rng.normal(size=leaf.shape).astype(leaf.dtype), tree)


def segmenter_variables(config, seed: int = 0) -> dict:
    state = jax.eval_shape(
        lambda key: segmenter_lib.create_state(key, config.segmenter, (RESOLUTION, RESOLUTION, 3)),
        jax.random.key(0),
    )
    return random_like({"params": state.params, "batch_stats": state.batch_stats}, seed)


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want)


def test_segmenter_round_trip_and_overwrite(config, tmp_path):
    workdir = str(tmp_path)
    first, second = segmenter_variables(config, 1), segmenter_variables(config, 2)
    directory = segmentation.save_segmenter(workdir, first)
    assert directory == str(tmp_path / "segmenter" / "weights")
    assert_trees_equal(segmentation.load_segmenter(config, workdir), first)
    segmentation.save_segmenter(workdir, second)  # a retrained segmenter replaces the first
    assert_trees_equal(segmentation.load_segmenter(config, workdir), second)
    assert sorted(p.name for p in (tmp_path / "segmenter").iterdir()) == ["weights"]


def test_segmenter_in_the_old_msgpack_format_loads(config, tmp_path, caplog):
    variables = segmenter_variables(config, 3)
    legacy = tmp_path / "segmenter" / "best.msgpack"
    legacy.parent.mkdir()
    legacy.write_bytes(flax.serialization.to_bytes(variables))
    caplog.set_level(std_logging.INFO)
    assert_trees_equal(segmentation.load_segmenter(config, str(tmp_path)), variables)
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "old msgpack format" in logged and str(legacy) in logged


def test_corrupt_orbax_weights_fail_naming_the_directory(config, tmp_path):
    directory = segmentation.save_segmenter(str(tmp_path), segmenter_variables(config))
    for path in (tmp_path / "segmenter" / "weights").rglob("*"):
        if path.is_file():
            path.write_bytes(b"not what orbax wrote")
    with pytest.raises(ValueError) as raised:
        segmentation.load_segmenter(config, str(tmp_path))
    assert str(raised.value).startswith(f"{directory}: cannot read the segmenter weights")
    assert "run --mode=train_segmenter again" in str(raised.value)


def test_corrupt_or_mismatched_msgpack_fails_naming_the_file(config, tmp_path):
    legacy = tmp_path / "segmenter" / "best.msgpack"
    legacy.parent.mkdir()
    legacy.write_bytes(b"\x93 not msgpack of the segmenter")
    with pytest.raises(ValueError, match=f"^{legacy}: cannot read the segmenter weights"):
        segmentation.load_segmenter(config, str(tmp_path))
    wider = config.copy_and_resolve_references()
    wider.segmenter.widths = (8, 16)
    legacy.write_bytes(flax.serialization.to_bytes(segmenter_variables(wider)))
    with pytest.raises(ValueError, match=f"^{legacy}: cannot read .* has shape .*, expected"):
        segmentation.load_segmenter(config, str(tmp_path))


def test_weights_of_another_network_fail_naming_the_directory(config, tmp_path):
    wider = config.copy_and_resolve_references()
    wider.segmenter.widths = (8, 16)
    directory = segmentation.save_segmenter(str(tmp_path), segmenter_variables(wider))
    with pytest.raises(ValueError, match=f"^{directory}: cannot read .* has shape .*, expected"):
        segmentation.load_segmenter(config, str(tmp_path))


def test_missing_weights_name_the_directory(config, tmp_path):
    with pytest.raises(FileNotFoundError, match="segmenter/weights; run --mode=train_segmenter"):
        segmentation.load_segmenter(config, str(tmp_path))


def test_encoder_round_trip_and_old_format(tmp_path, caplog):
    config = perturbgan.get_config(f"runlocal,res={RESOLUTION}")
    config.encoder.channel_base = 256
    config.encoder.channel_max = 32
    shapes = jax.eval_shape(
        build_encoder(config).init, jax.random.key(0), jnp.zeros((1, RESOLUTION, RESOLUTION, 3))
    )
    variables = random_like(shapes, 4)
    saved = tmp_path / "saved"
    inversion.save_encoder(str(saved), variables)
    assert (saved / "encoder" / "weights").is_dir()
    assert_trees_equal(inversion.load_encoder(config, str(saved)), variables)

    legacy = tmp_path / "legacy" / "encoder" / "encoder.msgpack"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(flax.serialization.to_bytes(variables))
    caplog.set_level(std_logging.INFO)
    assert_trees_equal(inversion.load_encoder(config, str(tmp_path / "legacy")), variables)
    assert "old msgpack format" in " ".join(record.getMessage() for record in caplog.records)
