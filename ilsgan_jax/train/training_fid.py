"""FID of the EMA generator: during training (`fid10k_full` every `config.train.eval_every_kimg`)
and on demand (`--mode=fid`, `stages.diagnostics.run_fid`: fid50k_full and KID), both through
`generator_metrics`.

Real statistics of the whole training split are computed once and cached per (data set,
resolution, split), CUB on DRC's split as 'cub_drc'. Needs the converted Inception weights;
without them the training evaluator logs the command that creates them once and returns None
(training goes on).
"""

import functools

import jax
from absl import logging

from ilsgan_jax.data import cub_split, input_pipeline
from ilsgan_jax.evaluate import fid as fid_lib
from ilsgan_jax.evaluate import inception, inception_features
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


def ema_generate_fn(config, generator, state) -> inception_features.GenerateFn:
    """`(key, batch_size) -> composites [batch_size, R, R, 3]` float32 in [-1, 1] of the EMA
    generator at truncation 1 with random noise (StyleGAN2-ADA's metrics call G with its
    defaults); `key` gives the latents and the noise. Runs on process 0's view of the replicated
    state."""
    variables = {
        "params": jax.device_get(state.g_ema_params),
        **jax.device_get(state.g_ema_buffers),
    }

    @functools.partial(jax.jit, static_argnums=2)
    def generate(variables, key, batch_size):
        latent_key, noise_key = jax.random.split(key)
        z = jax.random.normal(latent_key, latent_shape_for(config, batch_size))
        return generator.apply(variables, z, rngs={"noise": noise_key})["composite"]

    return lambda key, batch_size: generate(variables, key, batch_size)


def generator_metrics(
    config,
    generator,
    state,
    num_images: int,
    *,
    inception_params: dict | None = None,
    with_kid: bool = False,
    feature_extractor: inception_features.FeatureExtractor | None = None,
) -> fid_lib.GenerativeMetrics:
    """FID (and KID) of `num_images` EMA-generator images against the full training split, with
    the real statistics cached per (data set, resolution, split) (`fid_lib.compute_fid`).

    Args:
      inception_params: `inception.load_inception_params()`; unused with `feature_extractor`.
      feature_extractor: replaces Inception (tests).
    """
    return fid_lib.compute_fid(
        ema_generate_fn(config, generator, state),
        lambda: real_images(config),
        inception_params,
        num_images,
        batch_size=config.eval.batch_size,
        cache_key=(
            cub_split.statistics_name(config.data),
            config.data.resolution,
            config.data.train_split,
        ),
        with_kid=with_kid,
        kid_subsets=config.eval.kid_subsets,
        kid_subset_size=config.eval.kid_subset_size,
        seed=config.seed,
        feature_extractor=feature_extractor,
    )


def make_fid_evaluator(config, networks):
    """Returns `evaluate(state) -> fid | None` (`config.eval.fid_num_images` images; runs on
    process 0's view of the replicated state; a single-process computation)."""
    try:
        inception_params = inception.load_inception_params()
    except FileNotFoundError as error:
        logging.warning("FID during training is off: %s", error)
        return lambda state: None

    def evaluate(state):
        metrics = generator_metrics(
            config,
            networks.generator,
            state,
            config.eval.fid_num_images,
            inception_params=inception_params,
        )
        return float(metrics.fid)

    return evaluate
