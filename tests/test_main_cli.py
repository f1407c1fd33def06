"""`python -m ilsgan_jax.main` as a user runs it (subprocesses).

- Mistyped overrides, unknown config variants, unknown modes and a missing --workdir fail before
  any training with an error naming the offending key.
- An end-to-end `--mode=train` on the synthetic builder (tiny config) stopped by SIGTERM: exits
  cleanly after a final checkpoint at the step it stopped, and has written TensorBoard event
  files (the loss scalars and the sample grid) and `samples/latest.png`, a PNG of the expected
  grid layout.

The subprocesses inherit the test session's environment (8 simulated devices, the persistent
compilation cache), so the train step compiled by test_train_loop.py is reused.
"""

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from loop_helpers import CONFIG_PATH, REPO_ROOT, RESOLUTION, checkpoint_steps, tiny_cli_flags
from PIL import Image

pytestmark = pytest.mark.timeout(900)

NUM_SAMPLE_IMAGES = 4  # TINY_OVERRIDES["train.num_sample_images"]
GRID_ROWS = 6  # composite, shifted composite, fg, bg, mask, fg over white


def run_main(args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "ilsgan_jax.main", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


# ----------------------------------------------------------------------------------------------
# Flag errors (no training happens).
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad_args, expected",
    [
        (["--config.train.batchsize=8"], "batchsize"),
        (["--config.trian.batch_size=8"], "trian"),
        (["--mode=trian"], "trian"),
    ],
    ids=["mistyped-leaf", "mistyped-group", "mistyped-mode"],
)
def test_mistyped_flags_fail_naming_the_key(bad_args, expected, tmp_path):
    workdir = tmp_path / "workdir"
    completed = run_main(
        [f"--config={CONFIG_PATH}:runlocal,res=16", f"--workdir={workdir}", *bad_args]
    )
    assert completed.returncode != 0
    assert expected in completed.stderr, completed.stderr[-2000:]
    assert not workdir.exists()  # failed before the program touched the workdir


def test_unknown_config_variant_fails_naming_it(tmp_path):
    completed = run_main([f"--config={CONFIG_PATH}:runlocal,datset=cub", f"--workdir={tmp_path}"])
    assert completed.returncode != 0
    assert "datset" in completed.stderr, completed.stderr[-2000:]


def test_missing_workdir_is_an_error(tmp_path):
    completed = run_main([f"--config={CONFIG_PATH}:runlocal,res=16"])
    assert completed.returncode != 0
    assert "workdir" in completed.stderr, completed.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# End-to-end train, stopped by SIGTERM.
# ----------------------------------------------------------------------------------------------
def wait_for(predicate, process, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"main exited ({process.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cli_train"))
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    flags = tiny_cli_flags(
        data_dir, num_steps=500, log_every=2, sample_every=2, checkpoint_every=2
    )
    log_path = os.path.join(workdir, "..", "cli_train.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ilsgan_jax.main",
                "--mode=train",
                f"--workdir={workdir}",
                *flags,
            ],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ.copy(),
        )
        try:
            wait_for(
                lambda: checkpoint_steps(workdir)
                and os.path.exists(os.path.join(workdir, "samples", "latest.png")),
                process,
                600,
                "the first checkpoint and sample grid",
            )
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    with open(log_path) as log:
        output = log.read()
    return dict(workdir=workdir, returncode=returncode, output=output)


# A CLI subprocess compiles its own train step (~3 min); the loop tests cover it in-process.
@pytest.mark.slow
def test_sigterm_exits_cleanly_after_a_final_checkpoint(sigterm_run):
    output = sigterm_run["output"]
    assert sigterm_run["returncode"] == 0, output[-3000:]
    assert "Received SIGTERM" in output
    stopped = [line for line in output.splitlines() if "Stopping at step" in line]
    assert len(stopped) == 1 and "signal SIGTERM" in stopped[0], output[-3000:]
    stop_step = int(stopped[0].split("Stopping at step ")[1].split(" ")[0])
    assert 1 <= stop_step < 500
    steps = checkpoint_steps(sigterm_run["workdir"])
    assert steps[-1] == stop_step  # the preemption save
    assert f"Trained {stop_step} steps" in output
    leftovers = glob.glob(os.path.join(sigterm_run["workdir"], "checkpoints", "*tmp*"))
    assert leftovers == []


# A CLI subprocess compiles its own train step (~3 min); the loop tests cover it in-process.
@pytest.mark.slow
def test_train_writes_tensorboard_events(sigterm_run):
    import tensorflow as tf

    events = glob.glob(os.path.join(sigterm_run["workdir"], "events.out.tfevents.*"))
    assert len(events) == 1
    scalars, images = {}, set()
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        for value in event.summary.value:
            tensor = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
            if value.metadata.plugin_data.plugin_name == "images":
                images.add((value.tag, event.step))
            elif tensor is not None and tensor.ndim == 0:
                scalars.setdefault(value.tag, []).append((event.step, float(tensor)))
    for tag in ("d/loss", "g/total", "g/adversarial", "scores/real", "mask/mean", "kimg"):
        assert tag in scalars, sorted(scalars)
    # Logged every 2 steps and at the stop step; kimg = step * batch / 1000.
    logged = [step for step, _ in scalars["kimg"]]
    assert logged[0] == 2 and all(step % 2 == 0 for step in logged[:-1])
    for step, kimg in scalars["kimg"]:
        assert kimg == pytest.approx(step * 8 / 1000)
    assert all(np.isfinite(value) for _, value in scalars["d/loss"])
    assert ("samples", 2) in images


# A CLI subprocess compiles its own train step (~3 min); the loop tests cover it in-process.
@pytest.mark.slow
def test_train_writes_sample_png_grids(sigterm_run):
    samples = os.path.join(sigterm_run["workdir"], "samples")
    latest = Image.open(os.path.join(samples, "latest.png"))
    assert latest.format == "PNG" and latest.mode == "RGB"
    grid = np.asarray(latest)
    side = RESOLUTION + 1
    assert grid.shape == (GRID_ROWS * side + 1, NUM_SAMPLE_IMAGES * side + 1, 3)
    # 1-pixel white separators between the tiles.
    assert np.all(grid[::side, :] == 255) and np.all(grid[:, ::side] == 255)
    # Row 5 is the mask, drawn grey (equal channels); the composite row is in colour.
    mask_row = grid[4 * side + 1 : 5 * side].astype(int)
    assert np.array_equal(mask_row[..., 0], mask_row[..., 1])
    assert np.array_equal(mask_row[..., 0], mask_row[..., 2])
    composite_row = grid[1:side].astype(int)
    assert np.abs(composite_row[..., 0] - composite_row[..., 2]).max() > 0
    numbered = sorted(glob.glob(os.path.join(samples, "step_*.png")))
    assert numbered and np.array_equal(np.asarray(Image.open(numbered[-1])), grid)
