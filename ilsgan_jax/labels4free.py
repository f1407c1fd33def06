"""Labels4Free: puts a pretrained `stylegan2` generator into a `labels4free` train state.

The flow: train `configs/stylegan2.py` into workdir A, then train `configs/labels4free.py` with
`--config.labels4free.pretrained_workdir=A` (same dataset/res/runlocal variant, so the generator
architectures match). `load_pretrained_generator` restores A's newest checkpoint and takes its
EMA generator (params + buffers); `with_pretrained_generator` writes them into the 'frozen'
collection of the Labels4Free state (`g_buffers` and `g_ema_buffers`), which the train step never
differentiates nor updates.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from ilsgan_jax.models.alpha_network import FROZEN_COLLECTION
from ilsgan_jax.train.restore import restore_train_state
from ilsgan_jax.train.state import TrainState

PLAIN_GENERATOR_NAME = "generator"  # PlainGenerator's StyleGenerator submodule


def pretrained_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `stylegan2` config whose train state holds the pretrained generator: this config with
    the system switched (the model and data fields, which shape the state, are shared)."""
    pretrained = config.copy_and_resolve_references()
    with pretrained.unlocked():
        pretrained.system = "stylegan2"
        pretrained.loss.ils.enabled = False  # no learned estimator in a stylegan2 state
    return pretrained


def load_pretrained_generator(config: ml_collections.ConfigDict) -> dict:
    """`{'params': ..., 'buffers': ...}` of the EMA generator in
    `config.labels4free.pretrained_workdir` (a `stylegan2` run), replicated over the mesh.

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
    state, step, _ = restore_train_state(pretrained_config(config), workdir)
    logging.info("Labels4Free: pretrained generator from %s (step %d)", workdir, step)
    return {
        "params": state.g_ema_params[PLAIN_GENERATOR_NAME],
        "buffers": state.g_ema_buffers["buffers"][PLAIN_GENERATOR_NAME],
    }


def with_pretrained_generator(state: TrainState, generator_variables: dict) -> TrainState:
    """Returns `state` with its frozen generator (in `g_buffers` and `g_ema_buffers`) replaced by
    `generator_variables`, which must match it leaf for leaf in structure, shape and dtype."""
    current = state.g_buffers[FROZEN_COLLECTION][PLAIN_GENERATOR_NAME]
    expected = jax.tree.structure(current)
    if jax.tree.structure(generator_variables) != expected:
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
    g_ema_buffers = {
        **state.g_ema_buffers,
        FROZEN_COLLECTION: jax.tree.map(jnp.copy, frozen),
    }
    return state.replace(g_buffers=g_buffers, g_ema_buffers=g_ema_buffers)


def hard_masks(soft_masks: jnp.ndarray, config: ml_collections.ConfigDict) -> jnp.ndarray:
    """Test-time masks: `soft_masks > config.labels4free.mask_threshold` (reference: 0.9).

    soft_masks: [N, H, W, 1] float32 in [0, 1] -> [N, H, W, 1] bool."""
    threshold = config.labels4free.mask_threshold
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"config.labels4free.mask_threshold must be in [0, 1), got {threshold}")
    return soft_masks > threshold
