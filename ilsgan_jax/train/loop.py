"""The training loop: input, state, sharded step, checkpoints, logging, samples, preemption.

`train_and_evaluate(config, workdir)` is what `python -m ilsgan_jax.main --mode=train` runs and
what the Colab notebook calls. Every process runs the same code; process 0 writes logs.
"""

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath
from jax.experimental import multihost_utils

from ilsgan_jax import files, parallel
from ilsgan_jax.data import input_pipeline, single_image
from ilsgan_jax.evaluate import samples as sample_grids
from ilsgan_jax.train import builders, checkpointing, training_fid
from ilsgan_jax.train.phases import Trainer
from ilsgan_jax.train.preemption import install_preemption_handler
from ilsgan_jax.train.restore import restore_train_state
from ilsgan_jax.train.samples import host_rows, make_sample_fn
from ilsgan_jax.train.state import TrainState, create_train_state
from ilsgan_jax.train.step import jit_phased_train_step, make_trainer


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the message names the step and the last good
    checkpoint."""


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    steps: int  # train iterations completed (including resumed ones)
    images_seen: int  # real images consumed (including resumed steps)
    images_this_run: int  # real images consumed by this invocation (0 if it only resumed)
    wall_time_seconds: float  # this invocation's wall time
    interrupted: bool  # stopped early (preemption or time budget) after a final save
    last_metrics: dict  # the last logged scalars
    sample_png: str | None  # the last sample grid written


def total_train_steps(config: ml_collections.ConfigDict) -> int:
    return math.ceil(config.train.total_kimg * 1000 / config.train.batch_size)


def fid_every_steps(config: ml_collections.ConfigDict) -> int:
    """Steps between FID evaluations (and best-FID checkpoints): `train.eval_every_kimg` at the
    global batch size, rounded up to a whole step; 0 when FID is off."""
    kimg = config.train.eval_every_kimg
    if kimg <= 0:
        return 0
    return max(1, math.ceil(kimg * 1000 / config.train.batch_size))


def check_real_batch(images: np.ndarray, config: ml_collections.ConfigDict, where: str) -> None:
    """Host-side check of a real batch (cheap NumPy; no device work): shape, dtype, range."""
    res = config.data.resolution
    if images.ndim != 4 or images.shape[1:] != (res, res, 3):
        raise ValueError(
            f"{where}: real images must be [B, {res}, {res}, 3] (config.data.resolution={res}), "
            f"got {images.shape}"
        )
    if images.dtype != np.float32:
        raise ValueError(f"{where}: real images must be float32 in [-1, 1], got {images.dtype}")
    if not np.isfinite(images).all():
        raise ValueError(f"{where}: real images contain NaN or Inf values")
    low, high = float(images.min()), float(images.max())
    if low < -1.01 or high > 1.01:
        raise ValueError(f"{where}: real images must lie in [-1, 1], got [{low:.3f}, {high:.3f}]")


def init_state(trainer: Trainer, mesh) -> TrainState:
    """Builds the train state directly on the devices, replicated, then applies the system's
    host-side initialisation (e.g. Labels4Free's pretrained generator)."""
    config = trainer.config
    init = jax.jit(
        lambda key: create_train_state(config, trainer.networks, trainer.optimizers, key),
        out_shardings=parallel.replicated_sharding(mesh),
    )
    state = init(jax.random.key(config.seed))
    if trainer.system.initialize_state is not None:
        state = trainer.system.initialize_state(config, state, restore_train_state)
    return state


def _mean_metrics(history: list[dict]) -> dict[str, float]:
    """Averages the per-step metric dicts (device arrays) with one device->host transfer."""
    stacked = {key: jnp.stack([m[key] for m in history]) for key in history[0]}
    means = jax.device_get({key: jnp.nanmean(value) for key, value in stacked.items()})
    return {key: float(value) for key, value in means.items()}


class _ConsoleProgress:
    """A one-line progress bar (tqdm) for interactive runs on process 0."""

    def __init__(self, enabled: bool, total: int, initial: int):
        self._bar = None
        if enabled and jax.process_index() == 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, step: int, postfix: dict | None = None):
        if self._bar is None:
            return
        self._bar.n = step
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()

    def close(self):
        if self._bar is not None:
            self._bar.close()


def _open_train_iterator(config: ml_collections.ConfigDict, start_step: int):
    """The sharded, resumable iterator of real batches (`{'image': [B/P, R, R, 3]}` per process);
    prepares the synthetic data set on process 0 first."""
    if config.data.name == "synthetic":
        if jax.process_index() == 0:
            input_pipeline.prepare_synthetic(config.data)
        if jax.process_count() > 1:
            # The others open the data set only once process 0 has written it: concurrent
            # tfds preparations of one data_dir collide when renaming their directories.
            multihost_utils.sync_global_devices("ilsgan_jax: synthetic data prepared")
    make_iterator = input_pipeline.create_train_iterator
    if config.data.name == "single_image":  # the independence-prior one-image setting
        make_iterator = single_image.create_single_image_iterator
    return make_iterator(
        config.data,
        global_batch_size=config.train.batch_size,
        seed=config.seed,
        start_step=start_step,
    )


@dataclasses.dataclass
class _LoopHooks:
    """What the loop does besides the step: logs, the progress bar, sample grids, FID,
    checkpoints and the non-finite check. Process 0 writes the files."""

    config: ml_collections.ConfigDict
    workdir: str
    writer: metric_writers.MetricWriter
    checkpointer: checkpointing.Checkpointer
    sample_fn: object
    evaluate_fid: object  # `state -> fid | None`, or None when FID is off
    console: _ConsoleProgress
    budget_seconds: float

    def check_finite(self, state: TrainState, step: int) -> None:
        first_bad = int(jax.device_get(state.nonfinite_step))
        if first_bad < 0:
            return
        # An asynchronous save started at an earlier step holds a state that passed this check
        # then; let it finish so that the message names it (else it reads "none saved" while
        # the checkpoint appears on disk a moment later).
        self.checkpointer.wait_until_finished()
        good = self.checkpointer.latest_good_step()
        where = (
            f"step {good} in {self.checkpointer.directory}" if good is not None else "none saved"
        )
        raise NonFiniteLossError(
            f"Non-finite loss at step {first_bad} (detected by step {step}); "
            f"last good checkpoint: {where}. Lower the learning rate or check the data."
        )

    def log(self, state: TrainState, step: int, history: list[dict], elapsed: float) -> dict:
        """Writes the mean of the metrics since the last log; returns them (with 'kimg')."""
        metrics = _mean_metrics(history)
        self.check_finite(state, step)
        metrics["kimg"] = step * self.config.train.batch_size / 1000.0
        self.writer.write_scalars(step, metrics)
        postfix = {"kimg": f"{metrics['kimg']:.1f}", "D acc": f"{metrics['d/accuracy']:.2f}"}
        if "mask/mean" in metrics:  # the systems that draw a mask
            postfix["mask"] = f"{metrics['mask/mean']:.2f}"
        if self.budget_seconds > 0:  # the bar counts to total_kimg; the budget may end first
            postfix["budget left"] = f"{max(0.0, self.budget_seconds - elapsed) / 60:.1f} min"
        self.console.update(step, postfix)
        return metrics

    def write_samples(self, state: TrainState, step: int) -> str | None:
        grid = sample_grids.make_grid(host_rows(self.sample_fn, state))
        path = None
        if jax.process_index() == 0:
            samples = epath.Path(self.workdir) / "samples"
            path = sample_grids.save_png(grid, samples / f"step_{step:07d}.png")
            sample_grids.save_png(grid, samples / "latest.png")
        self.writer.write_images(step, {"samples": grid[None]})
        return path

    def fid(self, state: TrainState, step: int) -> dict | None:
        """`{'fid': value}` on FID steps (when the Inception weights exist), else None."""
        if self.evaluate_fid is None or step % fid_every_steps(self.config):
            return None
        fid = self.evaluate_fid(state)
        if fid is None:
            return None
        self.writer.write_scalars(step, {"fid10k_full": fid})
        return {"fid": fid}

    def save(self, state: TrainState, step: int, fid_metrics: dict | None) -> None:
        self.check_finite(state, step)
        self.checkpointer.save(  # the best-FID checkpoint is kept besides the last K
            step,
            state,
            extra={"images_seen": step * self.config.train.batch_size, "data_step": step},
            metrics=fid_metrics,
            force=True,
        )


def _initial_or_restored_state(trainer: Trainer, mesh, checkpointer) -> tuple[TrainState, int]:
    """The newest good checkpoint's state and step, else the initial state and step 0."""
    state = init_state(trainer, mesh)
    restored = checkpointer.restore_latest(checkpointing.abstract_like(state))
    if restored is None:
        return state, 0
    state, start_step, _ = restored
    logging.info("Resumed from %s at step %d", checkpointer.directory, start_step)
    return state, start_step


def _make_hooks(trainer: Trainer, workdir, writer, checkpointer, total_steps, start_step):
    config = trainer.config
    evaluate_fid = None
    if fid_every_steps(config):
        evaluate_fid = training_fid.make_fid_evaluator(config, trainer.networks)
    return _LoopHooks(
        config=config,
        workdir=workdir,
        writer=writer,
        checkpointer=checkpointer,
        sample_fn=make_sample_fn(trainer, config.train.num_sample_images, config.seed),
        evaluate_fid=evaluate_fid,
        console=_ConsoleProgress(config.train.progress_bar, total_steps, start_step),
        budget_seconds=config.train.time_budget_minutes * 60.0,
    )


def _log_stop(step: int, over_budget: bool, preemption) -> None:
    # Multi-process, JAX's preemption service takes SIGTERM: no signal name is recorded.
    signal_name = preemption.signal_name or "SIGTERM (preemption sync point)"
    reason = "time budget" if over_budget else f"signal {signal_name}"
    logging.info("Stopping at step %d (%s); checkpoint saved.", step, reason)


def _close(step: int, hooks: _LoopHooks, preemption) -> None:
    """Closes the progress bar, waits for the last checkpoint, flushes the logs."""
    hooks.console.close()
    closing_start = time.time()
    hooks.checkpointer.wait_until_finished()
    hooks.checkpointer.close()
    preemption.close()
    hooks.writer.flush()
    logging.info(
        "Loop ended at step %d; checkpoints and logs closed in %.1f s",
        step,
        time.time() - closing_start,
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
    """Trains (resuming from `workdir/checkpoints` if present) until `config.train.total_kimg`,
    the time budget or a preemption signal. Returns a `TrainResult`."""
    start_time = time.time()
    # ----- Logging, mesh and config checks --------------------------------------------------
    workdir = files.resolve(workdir, "workdir")
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    writer = metric_writers.create_default_writer(  # TensorBoard files through tf.io.gfile
        workdir, just_logging=jax.process_index() > 0, asynchronous=True
    )
    parallel.log_topology()
    mesh = parallel.create_mesh()
    builders.validate_config(config, mesh.size)
    if config.train.batch_size % jax.process_count():
        raise ValueError("config.train.batch_size must be a multiple of the process count")

    # ----- System, state, checkpoint --------------------------------------------------------
    trainer = make_trainer(config)
    checkpointer = checkpointing.Checkpointer(
        epath.Path(workdir) / "checkpoints",
        save_every_steps=config.train.checkpoint_every_steps,
        keep_last=config.train.keep_checkpoints,
    )
    state, start_step = _initial_or_restored_state(trainer, mesh, checkpointer)
    total_steps = total_train_steps(config)

    # ----- Input, update step, hooks --------------------------------------------------------
    train_iter = _open_train_iterator(config, start_step)
    train_step = jit_phased_train_step(trainer, mesh)
    hooks = _make_hooks(trainer, workdir, writer, checkpointer, total_steps, start_step)
    report_progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
    preemption = install_preemption_handler()
    history, last_metrics, sample_png, interrupted = [], {}, None, False
    step = start_step

    # ----- Loop -------------------------------------------------------------------------------
    try:
        with metric_writers.ensure_flushes(writer):
            while step < total_steps:
                batch = next(train_iter)
                check_real_batch(batch["image"], config, "input pipeline batch")
                with jax.transfer_guard("disallow"):
                    global_batch = parallel.make_global_batch(mesh, batch)
                    state, metrics = train_step(state, global_batch["image"], step)
                history.append(metrics)
                step += 1
                report_progress(step)
                last = step == total_steps
                elapsed = time.time() - start_time
                over_budget = hooks.budget_seconds > 0 and elapsed > hooks.budget_seconds
                stop = preemption.should_stop(step) or over_budget
                if step % config.train.log_every_steps == 0 or last or stop:
                    last_metrics, history = hooks.log(state, step, history, elapsed), []
                every = config.train.sample_every_steps
                if every and (step % every == 0 or last or stop):
                    sample_png = hooks.write_samples(state, step) or sample_png
                fid_metrics = hooks.fid(state, step)
                if checkpointer.should_save(step) or last or stop or fid_metrics:
                    hooks.save(state, step, fid_metrics)
                if stop:
                    interrupted = True
                    _log_stop(step, over_budget, preemption)
                    break
    finally:
        _close(step, hooks, preemption)
    return TrainResult(
        state=state,
        steps=step,
        images_seen=step * config.train.batch_size,
        images_this_run=(step - start_step) * config.train.batch_size,
        wall_time_seconds=time.time() - start_time,
        interrupted=interrupted,
        last_metrics=last_metrics,
        sample_png=sample_png,
    )
