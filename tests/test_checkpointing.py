"""Tests for train/checkpointing.py: round trip, retention, resume, corruption."""

import logging as std_logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ilsgan_jax.train import checkpointing

# When a restore fails (the point of several tests), orbax abandons its other pending reads; their
# coroutines / event-loop callbacks are reported at garbage collection as "unraisable" exceptions.
# Harmless and inside orbax.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def make_state(step: int) -> dict:
    """A train-state-like pytree whose values depend on `step`.

    Replicated and data-sharded arrays over 8 devices, raw key data, a typed key and scalars.
    """
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P("data"))
    weights = np.arange(12, dtype=np.float32).reshape(3, 4) * (step + 1)
    return {
        "params": {"dense": {"kernel": jax.device_put(weights, replicated)}},
        "per_example": jax.device_put(np.arange(16, dtype=np.float32) + step, sharded),
        "rng_key_data": jax.random.key_data(jax.random.key(100 + step)),
        "typed_key": jax.random.key(200 + step),
        "step": step,
        "ada_p": 0.125 * step,
        "images_seen": np.asarray(32 * step, dtype=np.int64),
    }


def assert_state_equal(restored: dict, expected: dict) -> None:
    np.testing.assert_array_equal(
        np.asarray(restored["params"]["dense"]["kernel"]),
        np.asarray(expected["params"]["dense"]["kernel"]),
    )
    assert restored["params"]["dense"]["kernel"].sharding == (
        expected["params"]["dense"]["kernel"].sharding
    )
    np.testing.assert_array_equal(
        np.asarray(restored["per_example"]), np.asarray(expected["per_example"])
    )
    assert restored["per_example"].sharding == expected["per_example"].sharding
    np.testing.assert_array_equal(
        np.asarray(restored["rng_key_data"]), np.asarray(expected["rng_key_data"])
    )
    assert jax.dtypes.issubdtype(restored["typed_key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(
        np.asarray(jax.random.key_data(restored["typed_key"])),
        np.asarray(jax.random.key_data(expected["typed_key"])),
    )
    # Restored keys must draw the same numbers as the saved ones.
    np.testing.assert_array_equal(
        np.asarray(jax.random.normal(restored["typed_key"], (4,))),
        np.asarray(jax.random.normal(expected["typed_key"], (4,))),
    )
    assert restored["step"] == expected["step"]
    assert restored["ada_p"] == pytest.approx(expected["ada_p"])
    assert int(restored["images_seen"]) == int(expected["images_seen"])


def save_steps(directory, steps, fids=None, **kwargs) -> checkpointing.Checkpointer:
    fids = fids or {}
    checkpointer = checkpointing.Checkpointer(directory, **kwargs)
    for step in steps:
        metrics = {"fid": fids[step]} if step in fids else None
        started = checkpointer.save(
            step, make_state(step), extra={"data_position": 10 * step}, metrics=metrics
        )
        assert started
    checkpointer.wait_until_finished()
    return checkpointer


def test_round_trip_preserves_values_shardings_keys_and_extra(tmp_path):
    directory = tmp_path / "ckpt"
    with save_steps(directory, [3], save_every_steps=1) as checkpointer:
        restored = checkpointer.restore_latest(checkpointing.abstract_like(make_state(0)))
    assert restored is not None
    state, step, extra = restored
    assert step == 3
    assert extra == {"data_position": 30}
    assert_state_equal(state, make_state(3))


def test_empty_directory_restores_nothing(tmp_path):
    with checkpointing.Checkpointer(tmp_path / "ckpt", save_every_steps=1) as checkpointer:
        assert checkpointer.restore_latest(make_state(0)) is None
        assert checkpointer.latest_good_step() is None


def test_save_every_steps_and_force(tmp_path):
    with checkpointing.Checkpointer(tmp_path / "ckpt", save_every_steps=4) as checkpointer:
        assert not checkpointer.save(3, make_state(3))
        assert checkpointer.save(4, make_state(4))
        assert not checkpointer.save(6, make_state(6))
        assert checkpointer.save(6, make_state(6), force=True)
        assert not checkpointer.save(6, make_state(6), force=True)  # already saved
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [4, 6]
        assert checkpointer.latest_good_step() == 6


def test_keeps_last_k_plus_best_fid(tmp_path):
    directory = tmp_path / "ckpt"
    fids = {2: 5.0, 4: 9.0}
    checkpointer = save_steps(directory, range(1, 7), fids, save_every_steps=1, keep_last=2)
    # Step 2 has the lowest FID and survives although it is older than the last 2.
    assert checkpointer.all_steps() == [2, 5, 6]
    assert checkpointer.best_step() == 2
    assert sorted(int(name) for name in os.listdir(directory) if name.isdigit()) == [2, 5, 6]
    # A better FID replaces the old best.
    checkpointer.save(7, make_state(7), metrics={"fid": 3.0})
    checkpointer.wait_until_finished()
    assert checkpointer.all_steps() == [6, 7]
    assert checkpointer.best_step() == 7
    checkpointer.close()


def test_resume_picks_the_latest_step(tmp_path):
    directory = tmp_path / "ckpt"
    save_steps(directory, [2, 4, 6], save_every_steps=2, keep_last=5).close()
    with checkpointing.Checkpointer(directory, save_every_steps=2) as reopened:
        assert reopened.all_steps() == [2, 4, 6]
        state, step, extra = reopened.restore_latest(make_state(0))
    assert step == 6
    assert extra == {"data_position": 60}
    assert_state_equal(state, make_state(6))


def _truncate_files(root) -> int:
    """Truncates every array data file below `root` to half its size; returns how many."""
    count = 0
    for parent, _, names in os.walk(root):
        if os.path.basename(parent) != "d":
            continue
        for name in names:
            path = os.path.join(parent, name)
            size = os.path.getsize(path)
            with open(path, "r+b") as handle:
                handle.truncate(size // 2)
            count += 1
    return count


@pytest.mark.parametrize("damage", ["truncated_arrays", "garbage_metadata"])
def test_corrupt_latest_falls_back_to_previous_and_warns(tmp_path, caplog, damage):
    directory = tmp_path / "ckpt"
    save_steps(directory, [1, 2, 3], save_every_steps=1, keep_last=5).close()
    latest = directory / "3"
    if damage == "truncated_arrays":
        assert _truncate_files(latest / "state") > 0
    else:
        (latest / "state" / "_METADATA").write_bytes(b"\x00garbage{{{not json")
    caplog.set_level(std_logging.WARNING)
    with checkpointing.Checkpointer(directory, save_every_steps=1, keep_last=5) as checkpointer:
        state, step, extra = checkpointer.restore_latest(make_state(0))
        assert step == 2
        assert extra == {"data_position": 20}
        assert_state_equal(state, make_state(2))
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= std_logging.WARNING]
        assert any("step 3" in message and str(directory) in message for message in warnings)
        # The bad step is moved aside, so training can save step 3 again.
        assert not latest.exists()
        quarantined = os.listdir(directory / checkpointing.QUARANTINE_DIR)
        assert len(quarantined) == 1 and quarantined[0].startswith("3-")
        assert checkpointer.all_steps() == [1, 2]
        assert checkpointer.save(3, make_state(30))
        checkpointer.wait_until_finished()
        state, step, _ = checkpointer.restore_latest(make_state(0))
    assert step == 3
    assert_state_equal(state, make_state(30))


def test_unknown_extra_file_in_latest_is_ignored(tmp_path):
    directory = tmp_path / "ckpt"
    save_steps(directory, [1, 2], save_every_steps=1).close()
    (directory / "2" / "garbage.bin").write_bytes(os.urandom(64))
    (directory / "2" / "state" / "garbage.bin").write_bytes(os.urandom(64))
    with checkpointing.Checkpointer(directory, save_every_steps=1) as checkpointer:
        state, step, _ = checkpointer.restore_latest(make_state(0))
    assert step == 2
    assert_state_equal(state, make_state(2))


def test_all_corrupt_raises_naming_the_directory(tmp_path):
    directory = tmp_path / "ckpt"
    save_steps(directory, [1, 2], save_every_steps=1).close()
    for step in ("1", "2"):
        assert _truncate_files(directory / step / "state") > 0
    with checkpointing.Checkpointer(directory, save_every_steps=1) as checkpointer:
        with pytest.raises(checkpointing.CheckpointRestoreError, match=str(directory)) as error:
            checkpointer.restore_latest(make_state(0))
        assert "step 2" in str(error.value) and "step 1" in str(error.value)
        # Nothing was moved away: the run stopped instead.
        assert checkpointer.all_steps() == [1, 2]


def test_incompatible_state_raises_naming_the_directory(tmp_path):
    directory = tmp_path / "ckpt"
    save_steps(directory, [1], save_every_steps=1).close()
    other_shape = make_state(0)
    other_shape["params"]["dense"]["kernel"] = jnp.zeros((5, 4))
    other_tree = make_state(0)
    other_tree["params"]["new_layer"] = jnp.zeros((2,))
    with checkpointing.Checkpointer(directory, save_every_steps=1) as checkpointer:
        for abstract_state in (other_shape, other_tree):
            with pytest.raises(checkpointing.CheckpointRestoreError, match=str(directory)):
                checkpointer.restore_latest(abstract_state)


def test_leftover_tmp_directory_is_not_a_checkpoint(tmp_path):
    directory = tmp_path / "ckpt"
    save_steps(directory, [1, 2], save_every_steps=1).close()
    # What a crash in the middle of writing step 3 leaves behind.
    partial = directory / "3.orbax-checkpoint-tmp-1234567"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_bytes(b'{"tree_metadata": {')
    with checkpointing.Checkpointer(directory, save_every_steps=1) as checkpointer:
        state, step, _ = checkpointer.restore_latest(make_state(0))
        assert step == 2
        assert_state_equal(state, make_state(2))
    assert not partial.exists()  # cleaned up when the directory was opened


CRASHING_SAVE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {tests_dir!r})
    from orbax.checkpoint._src.path import atomicity
    from ilsgan_jax.train import checkpointing
    from test_checkpointing import make_state

    checkpointer = checkpointing.Checkpointer({directory!r}, save_every_steps=1)
    checkpointer.save(1, make_state(1), extra={{"data_position": 10}})
    checkpointer.wait_until_finished()

    async def crash(self):  # the process dies right before the tmp dir is committed
        os._exit(3)

    atomicity.AtomicRenameTemporaryPath.finalize = crash
    checkpointer.save(2, make_state(2), extra={{"data_position": 20}})
    checkpointer.wait_until_finished()
    os._exit(0)
    """
)


def test_crash_during_save_leaves_previous_restorable(tmp_path):
    directory = tmp_path / "ckpt"
    script = CRASHING_SAVE_SCRIPT.format(
        tests_dir=os.path.dirname(__file__), directory=str(directory)
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr[-3000:]
    names = os.listdir(directory)
    assert "1" in names and "2" not in names
    assert any(name.startswith("2" + checkpointing.TMP_DIR_MARKER) for name in names), names
    with checkpointing.Checkpointer(directory, save_every_steps=1) as checkpointer:
        state, step, extra = checkpointer.restore_latest(make_state(0))
    assert step == 1
    assert extra == {"data_position": 10}
    assert_state_equal(state, make_state(1))


def test_save_and_restore_work_under_transfer_guard(tmp_path):
    """The loop runs with jax_transfer_guard='disallow'; checkpointing must not trip it."""
    saved, target = make_state(5), make_state(0)
    with checkpointing.Checkpointer(tmp_path / "ckpt", save_every_steps=1) as checkpointer:
        with jax.transfer_guard("disallow"):
            assert checkpointer.save(5, saved)
            checkpointer.wait_until_finished()
            state, step, _ = checkpointer.restore_latest(target)
    assert step == 5
    assert_state_equal(state, make_state(5))
