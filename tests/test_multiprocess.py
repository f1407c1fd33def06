"""Two processes on loopback with jax.distributed and gloo CPU collectives agree with NumPy."""

import json
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


def test_launch_script_starts_processes_from_environment(tmp_path):
    """launch/multiprocess_cpu.sh with a stand-in for `python -m ilsgan_jax.main`."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_env_probe.py")
    shim = tmp_path / "python_shim.sh"
    # The shim drops `-m ilsgan_jax.main` and runs the probe with the remaining flags.
    shim.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{probe}" "$@"\n')
    shim.chmod(0o755)
    workdir = tmp_path / "workdir"
    env = dict(os.environ, PYTHON=str(shim), PORT=str(free_port()))
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [
            "bash",
            os.path.join(repo_root, "launch", "multiprocess_cpu.sh"),
            "2",
            "3",
            "configs/some.py:res=16",
            str(workdir),
            "--config.train.batch_size=12",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log_1 = (workdir / "process_1.log").read_text() if (workdir / "process_1.log").exists() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + log_1[-3000:]
    records = [json.loads((workdir / f"probe_{rank}.json").read_text()) for rank in range(2)]
    for rank, record in enumerate(records):
        assert record["started"] is True
        assert record["process_index"] == rank
        assert record["process_count"] == 2
        assert record["local_device_count"] == 3
        assert record["device_count"] == 6
        # 3 rows of 1.0 from process 0 and 3 rows of 2.0 from process 1.
        assert record["total"] == 3 * 1.0 + 3 * 2.0
        assert record["argv"] == [
            "--mode=train",
            "--config=configs/some.py:res=16",
            f"--workdir={workdir}",
            "--config.train.batch_size=12",
        ]


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    import multiprocess_preemption_worker as preemption_worker

    port = free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    processes = [
        subprocess.Popen(
            [sys.executable, preemption_worker.__file__, str(rank), str(port), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(NUM_PROCESSES)
    ]
    try:
        outputs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for rank, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"process {rank} failed:\n{output[-4000:]}"
    stopped = [
        json.loads((tmp_path / f"stopped_{rank}.json").read_text())["step"]
        for rank in range(NUM_PROCESSES)
    ]
    assert stopped[0] == stopped[1]
    # Stopped by the signal (which process 1 sent itself at SIGNAL_STEP), not by the limit.
    assert preemption_worker.SIGNAL_STEP < stopped[0] < preemption_worker.MAX_STEPS
