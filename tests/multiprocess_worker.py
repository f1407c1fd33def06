"""One process of the two-process CPU test (launched by tests/test_multiprocess.py).

Usage: python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Each process has 2 simulated CPU devices, joins jax.distributed on 127.0.0.1:PORT, feeds its slice
of a known global batch, and writes what it computed to OUT_DIR/result_<PROCESS_ID>.npz:
the sharded batch sum and mean, replicated parameters after a few jitted SGD steps, the gathered
global batch, and the state restored from a checkpoint both processes wrote together.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ilsgan_jax import parallel
from ilsgan_jax.train import checkpointing

DEVICES_PER_PROCESS = 2
GLOBAL_BATCH = 8
FEATURES = 3
LEARNING_RATE = 0.1
NUM_STEPS = 3


def global_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The global batch every test knows: inputs [8, 3] and targets [8]."""
    inputs = np.linspace(-1.0, 1.0, GLOBAL_BATCH * FEATURES, dtype=np.float32)
    inputs = inputs.reshape(GLOBAL_BATCH, FEATURES)
    targets = np.arange(GLOBAL_BATCH, dtype=np.float32) / GLOBAL_BATCH
    return inputs, targets


def main(process_id: int, num_processes: int, port: int, out_dir: str) -> None:
    started = parallel.initialize_distributed(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=num_processes,
        process_id=process_id,
    )
    assert started
    assert jax.process_index() == process_id and jax.process_count() == num_processes
    assert jax.local_device_count() == DEVICES_PER_PROCESS
    assert jax.device_count() == DEVICES_PER_PROCESS * num_processes

    mesh = parallel.create_mesh()
    local_size = parallel.process_batch_size(GLOBAL_BATCH, mesh)
    inputs, targets = global_inputs()
    rows = slice(process_id * local_size, (process_id + 1) * local_size)
    batch = parallel.make_global_batch(mesh, {"x": inputs[rows], "y": targets[rows]})
    assert batch["x"].shape == (GLOBAL_BATCH, FEATURES)
    assert batch["x"].sharding == parallel.data_sharding(mesh)

    replicated = parallel.replicated_sharding(mesh)
    batch_sum, batch_mean = jax.jit(
        lambda x: (jnp.sum(x, axis=0), jnp.mean(x, axis=0)), out_shardings=replicated
    )(batch["x"])

    def loss_fn(weights, batch):
        predictions = batch["x"] @ weights
        return jnp.mean((predictions - batch["y"]) ** 2)

    def sgd_update(weights, batch):
        return weights - LEARNING_RATE * jax.grad(loss_fn)(weights, batch)

    sgd_step = jax.jit(
        sgd_update,
        in_shardings=(replicated, parallel.data_sharding(mesh)),
        out_shardings=replicated,
        donate_argnums=0,
    )
    weights = jax.device_put(jnp.asarray([0.5, -0.25, 1.0], jnp.float32), replicated)
    for _ in range(NUM_STEPS):
        weights = sgd_step(weights, batch)

    gathered = parallel.host_local_copy(batch)

    # Both processes save one checkpoint together and restore it.
    state = {"weights": weights, "x": batch["x"], "step": NUM_STEPS}
    with checkpointing.Checkpointer(os.path.join(out_dir, "ckpt"), save_every_steps=1) as ckpt:
        assert ckpt.save(NUM_STEPS, state, extra={"images_seen": GLOBAL_BATCH * NUM_STEPS})
        ckpt.wait_until_finished()
        restored, step, extra = ckpt.restore_latest(checkpointing.abstract_like(state))
    restored_host = parallel.host_local_copy(restored)

    np.savez(
        os.path.join(out_dir, f"result_{process_id}.npz"),
        batch_sum=parallel.host_local_copy(batch_sum),
        batch_mean=parallel.host_local_copy(batch_mean),
        weights=parallel.host_local_copy(weights),
        gathered_x=gathered["x"],
        gathered_y=gathered["y"],
        restored_weights=restored_host["weights"],
        restored_x=restored_host["x"],
        restored_step=np.asarray(step),
        restored_images_seen=np.asarray(extra["images_seen"]),
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    # Read by JAX when its CPU backend starts, i.e. after initialize_distributed in main().
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
