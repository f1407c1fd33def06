"""FID of the EMA generator during training (`fid10k_full` at `config.train.eval_every_steps`).

Real statistics of the whole training split are computed once and cached per (data set,
resolution, split). Needs the converted Inception weights; without them the evaluator logs the
command that creates them once and returns None (training goes on).
"""

import jax
from absl import logging

from ilsgan_jax.data import input_pipeline
from ilsgan_jax.evaluate import fid as fid_lib
from ilsgan_jax.evaluate import inception
from ilsgan_jax.train.builders import latent_shape_for


def real_images(config):
    """The full training split once, valid rows only: float32 [B, R, R, 3] in [-1, 1]."""
    for batch in input_pipeline.create_eval_iterator(
        config.data,
        split=config.data.train_split,
        batch_size=config.eval.batch_size,
        process_index=0,
        process_count=1,
        with_masks=False,
    ):
        yield batch["image"][batch["valid"]]


def make_fid_evaluator(config, networks):
    """Returns `evaluate(state) -> fid | None` (runs on process 0's view of the replicated
    state; a single-process computation)."""
    try:
        inception_params = inception.load_inception_params()
    except FileNotFoundError as error:
        logging.warning("FID during training is off: %s", error)
        return lambda state: None
    generator = networks.generator

    def evaluate(state):
        params = jax.device_get(state.g_ema_params)
        buffers = jax.device_get(state.g_ema_buffers)

        @jax.jit
        def generate(key, batch_size):
            z = jax.random.normal(key, latent_shape_for(config, batch_size))
            return generator.apply({"params": params, **buffers}, z)["composite"]

        metrics = fid_lib.compute_fid(
            lambda key, batch_size: generate(key, batch_size),
            lambda: real_images(config),
            inception_params,
            config.eval.fid_num_images,
            batch_size=config.eval.batch_size,
            cache_key=(config.data.name, config.data.resolution, config.data.train_split),
            seed=config.seed,
        )
        return float(metrics.fid)

    return evaluate
