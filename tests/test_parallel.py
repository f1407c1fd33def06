"""Tests for ilsgan_jax.parallel on 8 simulated CPU devices (one process)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ilsgan_jax import parallel


def test_mesh_covers_all_devices_in_process_order():
    mesh = parallel.create_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.devices.shape == (8,)
    assert [device.id for device in mesh.devices] == sorted(device.id for device in jax.devices())
    assert parallel.local_device_count(mesh) == 8
    assert parallel.data_sharding(mesh).spec == P("data")
    assert parallel.replicated_sharding(mesh).spec == P()


def test_make_global_batch_shape_sharding_and_per_device_slices():
    mesh = parallel.create_mesh()
    images = np.random.default_rng(0).uniform(-1, 1, size=(16, 4, 4, 3)).astype(np.float32)
    labels = np.arange(16, dtype=np.int32)
    batch = parallel.make_global_batch(mesh, {"images": images, "labels": labels})
    assert batch["images"].shape == (16, 4, 4, 3)
    assert batch["images"].sharding == parallel.data_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(batch["images"]), images)
    # Device k of the mesh holds examples [2k, 2k + 2).
    for shard in batch["labels"].addressable_shards:
        position = list(mesh.devices).index(shard.device)
        np.testing.assert_array_equal(
            np.asarray(shard.data), labels[2 * position : 2 * position + 2]
        )
    # A jitted reduction over the sharded batch equals NumPy's.
    total = jax.jit(jnp.sum, out_shardings=parallel.replicated_sharding(mesh))(batch["images"])
    np.testing.assert_allclose(float(total), images.astype(np.float64).sum(), rtol=1e-5)


def test_batch_divisibility_errors_name_the_config_field():
    mesh = parallel.create_mesh()
    parallel.check_batch_divisible(32, mesh)
    assert parallel.process_batch_size(32, mesh) == 32
    for bad in (12, 0, 7):
        with pytest.raises(ValueError, match=r"config\.train\.batch_size=" + str(bad)):
            parallel.check_batch_divisible(bad, mesh)
    with pytest.raises(ValueError, match=r"config\.train\.batch_size"):
        parallel.make_global_batch(mesh, {"images": np.zeros((12, 2), np.float32)})
    with pytest.raises(ValueError, match="same leading"):
        parallel.make_global_batch(
            mesh, {"a": np.zeros((8, 2), np.float32), "b": np.zeros((16,), np.float32)}
        )


def test_host_local_copy_returns_numpy_values():
    mesh = parallel.create_mesh()
    values = np.arange(24, dtype=np.float32).reshape(8, 3)
    tree = {
        "sharded": jax.device_put(values, parallel.data_sharding(mesh)),
        "replicated": jax.device_put(values[0], parallel.replicated_sharding(mesh)),
        "python": 3,
    }
    host = parallel.host_local_copy(tree)
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(host))
    np.testing.assert_array_equal(host["sharded"], values)
    np.testing.assert_array_equal(host["replicated"], values[0])
    assert int(host["python"]) == 3


def test_initialize_distributed_single_process_and_bad_settings():
    assert not jax.distributed.is_initialized()
    # No flags, no ILSGAN_* variables, no cluster: single process, nothing started.
    assert parallel.initialize_distributed(environ={}) is False
    assert parallel.initialize_distributed(num_processes=1, environ={}) is False
    assert parallel.initialize_distributed(environ={"ILSGAN_NUM_PROCESSES": "1"}) is False
    assert not jax.distributed.is_initialized()
    with pytest.raises(ValueError, match="missing: coordinator_address"):
        parallel.initialize_distributed(num_processes=2, process_id=0, environ={})
    with pytest.raises(ValueError, match="missing: process_id"):
        parallel.initialize_distributed(
            environ={"ILSGAN_COORDINATOR": "127.0.0.1:1234", "ILSGAN_NUM_PROCESSES": "2"}
        )
    with pytest.raises(ValueError, match="process_id must be in"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 2, environ={})
    with pytest.raises(ValueError, match="ILSGAN_NUM_PROCESSES must be an integer"):
        parallel.initialize_distributed(environ={"ILSGAN_NUM_PROCESSES": "two"})
    assert not jax.distributed.is_initialized()


SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "node[001-002]",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
}


def test_initialize_distributed_starts_for_multi_process_launches(monkeypatch):
    """'auto': Slurm or Open MPI with more than one process starts `jax.distributed.initialize()`
    without arguments (JAX fills them in); one process does not; 'on' always starts it (TPU pods);
    'off' never; explicit settings win; a bad mode or count is named."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    assert parallel.initialize_distributed(environ={**SLURM_ENV, "SLURM_NTASKS": "1"}) is False
    assert parallel.initialize_distributed(environ={"OMPI_COMM_WORLD_SIZE": "1"}) is False
    assert calls == []
    assert parallel.initialize_distributed(environ={**SLURM_ENV, "SLURM_NTASKS": "4"}) is True
    assert parallel.initialize_distributed(environ={"OMPI_COMM_WORLD_SIZE": "2"}) is True
    assert calls == [((), {}), ((), {})]
    assert parallel.initialize_distributed(mode="on", environ={}) is True
    assert parallel.initialize_distributed(environ={"ILSGAN_DISTRIBUTED": "on"}) is True
    assert calls[-2:] == [((), {}), ((), {})]
    count = len(calls)
    off = {**SLURM_ENV, "SLURM_NTASKS": "4"}
    assert parallel.initialize_distributed(mode="off", environ=off) is False
    assert len(calls) == count
    parallel.initialize_distributed(
        "10.0.0.1:1234", 2, 1, environ={**SLURM_ENV, "SLURM_NTASKS": "4"}
    )
    assert calls[-1] == (
        (),
        {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1},
    )
    with pytest.raises(ValueError, match="--distributed"):
        parallel.initialize_distributed(mode="sometimes", environ={})
    with pytest.raises(ValueError, match="SLURM_NTASKS must be an integer"):
        parallel.initialize_distributed(environ={"SLURM_NTASKS": "four"})


def test_start_up_uses_no_private_jax_api():
    source = open(parallel.__file__).read()
    assert "jax._src" not in source


def test_make_global_batch_is_allowed_under_transfer_guard():
    """The loop runs with jax_transfer_guard='disallow'; feeding batches must stay explicit."""
    mesh = parallel.create_mesh()
    local = np.arange(16, dtype=np.float32).reshape(8, 2)
    with jax.transfer_guard("disallow"):
        batch = parallel.make_global_batch(mesh, {"x": local})
    np.testing.assert_array_equal(np.asarray(batch["x"]), local)
    with jax.transfer_guard("disallow"), pytest.raises(Exception, match="[Dd]isallowed"):
        jnp.asarray(local) + 1  # an implicit transfer is caught, so the guard is active
