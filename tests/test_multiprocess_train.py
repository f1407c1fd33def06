"""The real training program on two processes on loopback (jax.distributed + gloo collectives).

`python -m ilsgan_jax.main --mode=train --config=configs/ilsgan.py:dataset=synthetic,runlocal,...`
(tiny overrides from loop_helpers, 16 px, a few steps) is started twice with
`--coordinator_address/--num_processes/--process_id`, each process with 2 simulated CPU devices
(`XLA_FLAGS`, as launch/multiprocess_cpu.sh does): a 4-device mesh over 2 processes. The processes
prepare the synthetic data themselves (process 0 writes it, process 1 waits for it).

Each process runs through tests/multiprocess_train_worker.py, which runs the unchanged entry point
and then saves that process's own copy of the final (replicated) train state, so that the test can
compare what each process holds without reading logs.

Asserted:
- both processes exit 0 within the time limit;
- the two processes hold bitwise the same train state (every leaf), every device of a process holds
  the same copy, and the state counts the requested steps (step, images seen, optimiser counts);
- the one checkpoint written jointly (orbax: both processes write array data, process 0 the
  metadata) restores with the library's `Checkpointer.restore_latest` at the requested step, with
  the data position, and equals the state in memory bitwise;
- a one-process run (4 devices, the same seed) fed the same global batches, i.e. the two
  processes' input streams concatenated (each process reads its own half of the data set; the
  plain one-process pipeline shuffles the whole set and gives other batches), ends with the same
  state to float tolerance (integer leaves exactly);
- and the plain one-process run does not match to that tolerance (the comparison has power).
"""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from loop_helpers import REPO_ROOT, TINY_OVERRIDES, tiny_cli_flags, tiny_loop_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_train_worker.py")
CONFIG_FLAG = (
    f"--config={os.path.join(REPO_ROOT, 'configs', 'ilsgan.py')}:dataset=synthetic,runlocal,res=16"
)
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
NUM_STEPS = 4  # r1_interval 4: step 0 also runs the R1 phase, so both compiled phases run
BATCH = TINY_OVERRIDES["train.batch_size"]  # global batch 8: 2 images per device
SCHEDULE = dict(num_steps=NUM_STEPS, log_every=2, sample_every=0, checkpoint_every=NUM_STEPS)
TWO_PROCESS_TIMEOUT = 900  # s; compiling the step takes ~3 min per process on 2 busy cores
ONE_PROCESS_TIMEOUT = 600
# One-process vs two-process state: the collectives sum in another order. Measured: <= 1e-5
# absolute on the parameters; the plain one-process run differs by ~1e-2.
ATOL, RTOL = 1e-4, 1e-4
LOCAL_COPIES_KEY = "__local_copies_agree__"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main_flags(workdir, data_dir) -> list[str]:
    """`ilsgan_jax.main` flags of the tiny run (the config flag replaced by the brief's form)."""
    flags = tiny_cli_flags(str(data_dir), **SCHEDULE)
    assert flags[0].startswith("--config=")
    return ["--mode=train", f"--workdir={workdir}", CONFIG_FLAG, *flags[1:]]


def process_env(num_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def log_tails(log_paths, chars=6000) -> str:
    parts = []
    for path in log_paths:
        text = open(path, errors="replace").read() if os.path.exists(path) else "(no log)"
        parts.append(f"----- {path} (last {chars} chars) -----\n{text[-chars:]}")
    return "\n".join(parts)


def run_processes(commands, envs, log_paths, timeout) -> None:
    """Starts the commands together and waits for all; on any failure or the timeout, kills every
    one still running (its whole process group), prints the logs and fails."""
    processes, logs = [], []
    failure = None
    try:
        for command, env, log_path in zip(commands, envs, log_paths, strict=True):
            log = open(log_path, "w")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed as a whole
                )
            )
        deadline = time.monotonic() + timeout
        while True:
            codes = [process.poll() for process in processes]
            failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:  # the others would hang in a collective until JAX's own timeouts
                failure = f"process(es) {failed} exited with {[codes[r] for r in failed]}"
                break
            if all(code == 0 for code in codes):
                break
            if time.monotonic() > deadline:
                failure = f"timed out after {timeout} s (exit codes so far: {codes})"
                break
            time.sleep(1.0)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs:
            log.close()
    if failure:
        tails = log_tails(log_paths)
        print(tails)
        pytest.fail(f"{failure}\n{tails}")


def load_state(path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs the two-process training, then the two one-process runs; returns paths and states."""
    root = tmp_path_factory.mktemp("multiprocess_train")
    data_dir = root / "tfds"  # empty: the processes prepare the synthetic data themselves
    two_workdir = root / "two_processes"
    port = free_port()
    outputs = [root / f"state_process_{rank}.npz" for rank in range(NUM_PROCESSES)]
    commands = [
        [
            sys.executable,
            WORKER,
            str(outputs[rank]),
            "1",
            *main_flags(two_workdir, data_dir),
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={NUM_PROCESSES}",
            f"--process_id={rank}",
        ]
        for rank in range(NUM_PROCESSES)
    ]
    started = time.monotonic()
    run_processes(
        commands,
        [process_env(DEVICES_PER_PROCESS)] * NUM_PROCESSES,
        [root / f"process_{rank}.log" for rank in range(NUM_PROCESSES)],
        TWO_PROCESS_TIMEOUT,
    )
    two_seconds = time.monotonic() - started

    # One process with all 4 devices; "2" = feed it the two processes' streams concatenated.
    references = {}
    for name, shares in (("same_batches", "2"), ("plain_pipeline", "1")):
        output = root / f"state_one_process_{name}.npz"
        command = [
            sys.executable,
            WORKER,
            str(output),
            shares,
            *main_flags(root / f"one_process_{name}", data_dir),
        ]
        env = process_env(NUM_PROCESSES * DEVICES_PER_PROCESS)
        run_processes([command], [env], [root / f"one_process_{name}.log"], ONE_PROCESS_TIMEOUT)
        references[name] = load_state(output)
    print(f"two-process run: {two_seconds:.0f} s; all runs: {time.monotonic() - started:.0f} s")
    return dict(
        data_dir=data_dir,
        two_workdir=two_workdir,
        states=[load_state(path) for path in outputs],
        references=references,
    )


def float_leaves(state: dict) -> list[str]:
    return [name for name, value in state.items() if np.issubdtype(value.dtype, np.floating)]


def test_processes_hold_the_same_state_after_the_requested_steps(runs):
    first, second = runs["states"]
    assert sorted(first) == sorted(second)
    assert len(float_leaves(first)) > 100  # the whole TrainState, not a stub
    for rank, state in enumerate(runs["states"]):
        assert bool(state[LOCAL_COPIES_KEY]), f"devices of process {rank} hold different copies"
        assert int(state[".step"]) == NUM_STEPS
        assert int(state[".images_seen"]) == NUM_STEPS * BATCH
        assert int(state[".g_opt_state[0].count"]) == NUM_STEPS
        # D's optimiser also stepped once for the R1 phase at step 0.
        assert int(state[".d_opt_state[0].count"]) == NUM_STEPS + 1
        assert int(state[".nonfinite_step"]) == -1
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def abstract_train_state():
    """The TrainState's shapes and dtypes for the tiny config, on one device (no compilation)."""
    from ilsgan_jax.train import builders
    from ilsgan_jax.train.state import create_train_state

    config = tiny_loop_config("/unused", **SCHEDULE)
    networks = builders.build_networks(config)
    optimizers = builders.build_optimizers(config)
    shapes = jax.eval_shape(
        lambda key: create_train_state(config, networks, optimizers, key), jax.random.key(0)
    )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), shapes
    )


def test_joint_checkpoint_restores_at_the_requested_step(runs):
    from ilsgan_jax.train import checkpointing

    directory = runs["two_workdir"] / "checkpoints"
    state_files = sorted(os.listdir(directory / str(NUM_STEPS) / "state"))
    # Orbax spreads the replicated arrays' writes over the replicas: both processes wrote data.
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(state_files), state_files
    with checkpointing.Checkpointer(directory, save_every_steps=NUM_STEPS) as checkpointer:
        assert checkpointer.all_steps() == [NUM_STEPS]
        restored = checkpointer.restore_latest(abstract_train_state())
    assert restored is not None
    assert restored.step == NUM_STEPS
    assert restored.extra == {"images_seen": NUM_STEPS * BATCH, "data_step": NUM_STEPS}
    in_memory = runs["states"][0]
    restored_leaves = jax.tree_util.tree_flatten_with_path(restored.state)[0]
    assert len(restored_leaves) == len(in_memory) - 1  # all but LOCAL_COPIES_KEY
    for path, leaf in restored_leaves:
        name = jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(leaf), in_memory[name], err_msg=name)


def test_equals_one_process_run_on_the_same_global_batches(runs):
    two_process = runs["states"][0]
    reference = runs["references"]["same_batches"]
    assert sorted(reference) == sorted(two_process)
    for name, value in two_process.items():
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(value, reference[name], rtol=RTOL, atol=ATOL, err_msg=name)
        else:  # steps, counts, the PRNG key data: exactly
            np.testing.assert_array_equal(value, reference[name], err_msg=name)


def max_parameter_difference(state_a: dict, state_b: dict) -> float:
    names = [name for name in state_a if name.startswith((".g_params", ".d_params"))]
    return max(float(np.max(np.abs(state_a[name] - state_b[name]))) for name in names)


def test_plain_one_process_pipeline_gives_other_batches_and_another_state(runs):
    """The data pipeline splits the data set per process: the plain one-process run sees other
    global batches, so it is not the reference and its state differs far beyond the tolerance."""
    two_process = runs["states"][0]
    plain = runs["references"]["plain_pipeline"]
    same = runs["references"]["same_batches"]
    assert int(plain[".step"]) == NUM_STEPS
    assert max_parameter_difference(two_process, same) < ATOL
    assert max_parameter_difference(two_process, plain) > 20 * ATOL
