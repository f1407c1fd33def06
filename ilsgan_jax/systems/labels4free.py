"""Labels4Free: an alpha network on the features of a frozen, pretrained StyleGAN2, composited
over a background drawn by the same generator (`models.alpha_network.Labels4FreeGenerator`).

The flow: train `configs/stylegan2.py` into workdir A, then `configs/labels4free.py` with
`--config.labels4free.pretrained_workdir=A` (the same dataset/res/runlocal variant, so the
architectures match). At state initialisation the EMA generator of A's newest checkpoint is
written into the 'frozen' collection of `g_buffers` and `g_ema_buffers`, which the train step
never differentiates nor updates. Generator loss: the layered mask terms as configured (the
original: binarisation off, minimum background area on; see `configs/labels4free.py`).
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
from absl import logging

from ilsgan_jax.models.alpha_network import FROZEN_COLLECTION, Labels4FreeGenerator
from ilsgan_jax.systems.base import Config, stylegan_kwargs
from ilsgan_jax.systems.ilsgan import layered_system

PLAIN_GENERATOR_NAME = "generator"  # PlainGenerator's StyleGenerator submodule


def build_generator(config: Config) -> Labels4FreeGenerator:
    return Labels4FreeGenerator(
        config.data.resolution,
        truncation_psi=config.labels4free.truncation_psi,
        min_feature_resolution=config.labels4free.min_feature_resolution,
        **stylegan_kwargs(config),
    )


def pretrained_config(config: Config) -> Config:
    """The `stylegan2` config whose train state holds the pretrained generator: this config with
    the system switched (the model and data fields, which shape the state, are shared)."""
    pretrained = config.copy_and_resolve_references()
    with pretrained.unlocked():
        pretrained.system = "stylegan2"
        pretrained.loss.ils.enabled = False  # no learned estimator in a stylegan2 state
    return pretrained


def load_pretrained_generator(config: Config, restore_run) -> dict:
    """`{'params': ..., 'buffers': ...}` of the EMA generator in
    `config.labels4free.pretrained_workdir` (a `stylegan2` run), through
    `restore_run(config, workdir) -> (state, step, networks)`.

    Raises ValueError when the field is empty or the directory does not exist, and
    FileNotFoundError when it holds no checkpoint."""
    workdir = config.labels4free.pretrained_workdir
    if not workdir:
        raise ValueError(
            "config.labels4free.pretrained_workdir is empty: train configs/stylegan2.py first and "
            "pass its --workdir as --config.labels4free.pretrained_workdir"
        )
    if not os.path.isdir(workdir):
        raise ValueError(f"config.labels4free.pretrained_workdir={workdir!r} is not a directory")
    state, step, _ = restore_run(pretrained_config(config), workdir)
    logging.info("Labels4Free: pretrained generator from %s (step %d)", workdir, step)
    return {
        "params": state.g_ema_params[PLAIN_GENERATOR_NAME],
        "buffers": state.g_ema_buffers["buffers"][PLAIN_GENERATOR_NAME],
    }


def with_pretrained_generator(state, generator_variables: dict):
    """Returns `state` with its frozen generator (in `g_buffers` and `g_ema_buffers`) replaced by
    `generator_variables`, which must match it leaf for leaf in structure, shape and dtype."""
    current = state.g_buffers[FROZEN_COLLECTION][PLAIN_GENERATOR_NAME]
    if jax.tree.structure(generator_variables) != jax.tree.structure(current):
        raise ValueError(
            "pretrained generator variables do not match the Labels4Free generator: check that "
            "config.model and config.data.resolution equal those of the stylegan2 run"
        )
    for path, old, new in zip(
        jax.tree_util.tree_leaves_with_path(current),
        jax.tree.leaves(current),
        jax.tree.leaves(generator_variables),
        strict=True,
    ):
        if old.shape != new.shape or old.dtype != new.dtype:
            raise ValueError(
                f"pretrained generator variable {jax.tree_util.keystr(path[0])} is "
                f"{new.shape} {new.dtype}, the Labels4Free generator expects {old.shape} "
                f"{old.dtype}: config.model / config.data.resolution differ from the stylegan2 run"
            )
    frozen = {PLAIN_GENERATOR_NAME: generator_variables}
    g_buffers = {**state.g_buffers, FROZEN_COLLECTION: frozen}
    g_ema_buffers = {**state.g_ema_buffers, FROZEN_COLLECTION: jax.tree.map(jnp.copy, frozen)}
    return state.replace(g_buffers=g_buffers, g_ema_buffers=g_ema_buffers)


def initialize_state(config: Config, state, restore_run):
    """The frozen generator becomes the pretrained one."""
    return with_pretrained_generator(state, load_pretrained_generator(config, restore_run))


def hard_masks(soft_masks: jnp.ndarray, config: Config) -> jnp.ndarray:
    """Test-time masks: `soft_masks > config.labels4free.mask_threshold` (original: 0.9).

    soft_masks: [N, H, W, 1] float32 in [0, 1] -> [N, H, W, 1] bool."""
    threshold = config.labels4free.mask_threshold
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"config.labels4free.mask_threshold must be in [0, 1), got {threshold}")
    return soft_masks > threshold


# The fg/mask/bg system's terms, with its own generator and state initialisation.
SYSTEM = dataclasses.replace(
    layered_system("labels4free"),
    build_generator=build_generator,
    initialize_state=initialize_state,
)
