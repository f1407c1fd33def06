"""Two processes on loopback with jax.distributed and gloo CPU collectives agree with NumPy."""

import os
import socket
import subprocess
import sys

import multiprocess_worker as worker
import numpy as np

NUM_PROCESSES = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def numpy_reference() -> dict:
    inputs, targets = worker.global_inputs()
    weights = np.asarray([0.5, -0.25, 1.0], np.float64)
    for _ in range(worker.NUM_STEPS):
        residual = inputs.astype(np.float64) @ weights - targets
        gradient = 2.0 * inputs.T.astype(np.float64) @ residual / len(targets)
        weights = weights - worker.LEARNING_RATE * gradient
    return {
        "batch_sum": inputs.sum(axis=0),
        "batch_mean": inputs.mean(axis=0),
        "weights": weights,
        "gathered_x": inputs,
        "gathered_y": targets,
    }


def test_two_processes_agree_on_sharded_reductions_sgd_and_checkpoint(tmp_path):
    port = free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the worker sets its own device count
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(__file__)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                worker.__file__,
                str(rank),
                str(NUM_PROCESSES),
                str(port),
                str(tmp_path),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(NUM_PROCESSES)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for rank, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"process {rank} failed:\n{output[-4000:]}"

    results = [dict(np.load(tmp_path / f"result_{rank}.npz")) for rank in range(NUM_PROCESSES)]
    reference = numpy_reference()
    for rank, result in enumerate(results):
        for name, expected in reference.items():
            np.testing.assert_allclose(
                result[name], expected, rtol=1e-5, atol=1e-6, err_msg=f"{name} on process {rank}"
            )
        np.testing.assert_array_equal(result["restored_weights"], result["weights"])
        np.testing.assert_array_equal(result["restored_x"], reference["gathered_x"])
        assert int(result["restored_step"]) == worker.NUM_STEPS
        assert int(result["restored_images_seen"]) == worker.GLOBAL_BATCH * worker.NUM_STEPS
    # Bitwise agreement between the processes, not only closeness to NumPy.
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)
    # The weights moved: the update is not a no-op.
    assert np.abs(results[0]["weights"] - np.asarray([0.5, -0.25, 1.0])).max() > 1e-3
