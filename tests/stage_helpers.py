"""Shared setup for the stage tests (test_stages_*): the tiny 16 px config with a short segmenter
schedule, and a 2-step GAN run with its checkpoint. Plain Python: no JAX work at import."""

import ml_collections
from loop_helpers import checkpoint_steps, tiny_loop_config


def stage_config(data_dir: str) -> ml_collections.ConfigDict:
    """`tiny_loop_config` for 2 GAN steps (checkpoint at step 2) and a U-Net trained for 240
    steps, validated every 80."""
    config = tiny_loop_config(
        data_dir, num_steps=2, log_every=2, sample_every=0, checkpoint_every=2
    )
    config.segmenter.num_steps = 240
    config.segmenter.eval_every_steps = 80
    config.segmenter.lr_decay_steps = 1000
    return config


def train_tiny_gan(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains `config` into `workdir`; returns `{'workdir', 'result'}` (the loop's result, whose
    `state` equals the step-2 checkpoint)."""
    from ilsgan_jax.train import loop

    result = loop.train_and_evaluate(config, workdir)
    assert checkpoint_steps(workdir) == [2]
    return dict(workdir=workdir, result=result)
