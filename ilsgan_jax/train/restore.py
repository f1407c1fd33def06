"""Restores a GAN train state from `workdir/checkpoints`, for the stages after training (export,
FID, MINE, the inversion encoder) and for Labels4Free's pretrained generator."""

import jax
import ml_collections
from absl import logging
from etils import epath

from ilsgan_jax import parallel
from ilsgan_jax.train import builders, checkpointing
from ilsgan_jax.train.state import create_train_state


def restore_train_state(config: ml_collections.ConfigDict, workdir: str, *, prefer_best=False):
    """A GAN train state from `workdir/checkpoints`, its step and the networks: with
    `prefer_best`, the kept checkpoint with the lowest FID if any checkpoint has one (DESIGN.md:
    export from the lowest-FID snapshot), else the newest good one. The state's leaves are
    replicated over the mesh of all devices.

    Returns (state, step, networks). Raises FileNotFoundError naming the directory when there is
    no checkpoint."""
    mesh = parallel.create_mesh()
    networks = builders.build_networks(config)
    optimizers = builders.build_optimizers(config)
    abstract = jax.eval_shape(
        lambda key: create_train_state(config, networks, optimizers, key), jax.random.key(0)
    )
    replicated = parallel.replicated_sharding(mesh)
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated), abstract
    )
    directory = epath.Path(workdir) / "checkpoints"
    checkpointer = checkpointing.Checkpointer(directory, save_every_steps=1, keep_last=1000)
    try:
        best_step = checkpointer.best_step() if prefer_best else None
        if best_step is not None:
            state, _ = checkpointer.restore(best_step, abstract)
            logging.info("Using the best-FID checkpoint, step %d", best_step)
            return state, best_step, networks
        restored = checkpointer.restore_latest(abstract)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(
            f"No GAN checkpoint in {directory}; run --mode=train with this --workdir first"
        )
    state, step, _ = restored
    return state, step, networks
