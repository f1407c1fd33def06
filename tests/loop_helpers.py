"""Shared helpers for the training-program tests (test_train_loop, test_stages_*, test_main_cli).

One tiny ILSGAN configuration, expressed once as `--config.*` overrides so that the in-process
tests (`tiny_loop_config`) and the CLI subprocesses (`tiny_cli_flags`) build the very same
programs and share the persistent compilation cache. Plain Python: no JAX work at import.
"""

import os
import signal

import ml_collections
from tiny_configs import RESOLUTION, TINY_NETWORK_FIELDS, set_fields

from configs import ilsgan as ilsgan_config

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
CONFIG_PATH = os.path.join(REPO_ROOT, "configs", "ilsgan.py")
CONFIG_VARIANT = f"runlocal,res={RESOLUTION}"
BATCH = 8

# Networks of a few thousand parameters at 16 px; batch 8 is one image per simulated device, so
# the minibatch-std group is 1. R1 every 4 steps so that short runs cross lazy-R1 boundaries.
TINY_OVERRIDES = {
    **TINY_NETWORK_FIELDS,
    "model.mbstd_group_size": 1,
    "loss.r1_interval": 4,
    "train.batch_size": BATCH,
    "train.progress_bar": False,
    "train.time_budget_minutes": 0.0,
    "train.num_sample_images": 4,
    "data.synthetic_train_size": 200,
    "data.synthetic_test_size": 50,
    "export.num_pairs": 20,
    "export.shard_size": 8,
    "segmenter.widths": (4, 8),
    "segmenter.batch_size": 16,
    "segmenter.eval_batch_size": 25,
}


def kimg_for_steps(num_steps: int) -> float:
    return num_steps * BATCH / 1000.0


def schedule_overrides(
    num_steps: int, *, log_every: int, sample_every: int, checkpoint_every: int
) -> dict:
    return {
        "train.total_kimg": kimg_for_steps(num_steps),
        "train.log_every_steps": log_every,
        "train.sample_every_steps": sample_every,
        "train.checkpoint_every_steps": checkpoint_every,
    }


def tiny_loop_config(data_dir: str, **schedule) -> ml_collections.ConfigDict:
    """`configs/ilsgan.py:runlocal,res=16` with TINY_OVERRIDES, `data_dir` and the schedule of
    `schedule_overrides(**schedule)` (num_steps, log_every, sample_every, checkpoint_every)."""
    config = ilsgan_config.get_config(CONFIG_VARIANT)
    overrides = {**TINY_OVERRIDES, **schedule_overrides(**schedule), "data.data_dir": data_dir}
    set_fields(config, overrides)
    from ilsgan_jax.train.loop import total_train_steps

    expected = schedule["num_steps"]
    if total_train_steps(config) != expected:
        raise AssertionError(f"total_kimg rounding: {total_train_steps(config)} != {expected}")
    return config


def _flag_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ",".join(str(item) for item in value) + ",)"
    return str(value)


def tiny_cli_flags(data_dir: str, **schedule) -> list[str]:
    """The same configuration as `tiny_loop_config` as `python -m ilsgan_jax.main` flags."""
    overrides = {**TINY_OVERRIDES, **schedule_overrides(**schedule), "data.data_dir": data_dir}
    flags = [f"--config={CONFIG_PATH}:{CONFIG_VARIANT}"]
    flags += [f"--config.{dotted}={_flag_value(value)}" for dotted, value in overrides.items()]
    return flags


class RecordingIterator:
    """Wraps the real training iterator: records each batch's checksum and can send this process
    SIGTERM while producing batch number `sigterm_at_batch` (1-based, counted from the start step),
    or replace batches from number `nan_from_batch` on by NaN images."""

    def __init__(self, inner, start_step, *, sigterm_at_batch=None, nan_from_batch=None):
        self.inner = inner
        self.start_step = start_step
        self.sigterm_at_batch = sigterm_at_batch
        self.nan_from_batch = nan_from_batch
        self.checksums: list[float] = []

    def __iter__(self):
        return self

    def __next__(self):
        import numpy as np

        batch = next(self.inner)
        count = len(self.checksums) + 1
        self.checksums.append(float(np.sum(batch["image"].astype(np.float64) ** 2)))
        if self.nan_from_batch is not None and count >= self.nan_from_batch:
            batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
        if self.sigterm_at_batch is not None and count == self.sigterm_at_batch:
            # Delivered to this (main) thread: the loop's handler has run when raise_signal
            # returns, so the loop stops at exactly this step.
            signal.raise_signal(signal.SIGTERM)
        return batch


def patch_train_iterator(monkeypatch, records: list, **options):
    """Makes the loop's `input_pipeline.create_train_iterator` return RecordingIterators
    (appended to `records`)."""
    from ilsgan_jax.train import loop

    real = loop.input_pipeline.create_train_iterator

    def create(data_config, *, global_batch_size, seed, start_step=0, **kwargs):
        inner = real(
            data_config,
            global_batch_size=global_batch_size,
            seed=seed,
            start_step=start_step,
            **kwargs,
        )
        wrapped = RecordingIterator(inner, start_step, **options)
        records.append(wrapped)
        return wrapped

    monkeypatch.setattr(loop.input_pipeline, "create_train_iterator", create)


def checkpoint_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())
