"""Saved models besides the train state (the segmenter's and the inversion encoder's weights):
one pytree per orbax directory, `save_pytree` / `restore_pytree`, atomic like the train state's
checkpoints (see `checkpointing`).

Directories are local paths (made absolute) or URLs (gs://bucket/run/weights), kept as they are;
orbax reads and writes both through etils.epath and TensorStore. `orbax_path` is also where the
train state's `checkpointing.Checkpointer` puts its directory.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from ilsgan_jax import files

PyTree = Any


def orbax_path(directory: str | os.PathLike) -> epath.Path:
    """Where orbax reads and writes `directory`: a local path made absolute (TensorStore needs
    absolute paths), a URL unchanged."""
    return epath.Path(files.resolve(directory, "checkpoint directory"))


def save_pytree(directory: str | os.PathLike, tree: PyTree) -> str:
    """Writes a pytree of arrays (e.g. a network's variables) into `directory` with orbax
    (StandardSave), replacing an earlier save there.

    Atomic like the train state's steps: orbax writes a temporary directory and renames it (on
    GCS: a commit marker), so a reader sees the old tree, no tree, or the whole new one. The
    leaves are copied to the host first; every process must call it (orbax synchronises them)
    and process 0 writes. Returns the directory.
    """
    path = orbax_path(directory)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.StandardSave(jax.device_get(tree)), force=True)
    return str(path)


def has_pytree(directory: str | os.PathLike) -> bool:
    """Whether `save_pytree` has written `directory`."""
    return orbax_path(directory).is_dir()


def restore_pytree(directory: str | os.PathLike, template: PyTree) -> PyTree:
    """Reads what `save_pytree` wrote into `directory`, checked against `template`.

    Args:
      template: the expected tree: arrays or `jax.ShapeDtypeStruct` leaves; their shapes and
        dtypes are what is read.
    Returns:
      The tree with NumPy array leaves.
    Raises:
      ValueError naming the first array whose saved shape differs from the template's (orbax
      reads NumPy arrays in their saved shape); whatever orbax raises for a missing, corrupt or
      otherwise mismatched directory.
    """
    target = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), template)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        tree = checkpointer.restore(orbax_path(directory), args=ocp.args.StandardRestore(target))
    check_shapes_like(tree, template)
    return tree


def check_shapes_like(tree: PyTree, template: PyTree) -> None:
    """Raises ValueError unless `tree` has the structure and leaf shapes of `template`."""
    if jax.tree.structure(tree) != jax.tree.structure(template):
        raise ValueError(
            f"the tree structure differs from the expected one: {jax.tree.structure(tree)} vs "
            f"{jax.tree.structure(template)}"
        )
    for (path, expected), leaf in zip(
        jax.tree_util.tree_leaves_with_path(template), jax.tree.leaves(tree), strict=True
    ):
        if tuple(np.shape(leaf)) != tuple(expected.shape):
            raise ValueError(
                f"{jax.tree_util.keystr(path)} has shape {tuple(np.shape(leaf))}, expected "
                f"{tuple(expected.shape)}"
            )
