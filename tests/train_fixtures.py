"""Shared helpers for the train-step tests: tiny ILSGAN configs, host copies of the state.

Everything here is plain Python / NumPy; JAX work happens only when a test calls a helper.
The train step donates its state argument, so tests keep the state on the host (NumPy leaves)
and hand the step a fresh device copy each time (`run_step`).
"""

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tiny_configs import RESOLUTION, make_tiny_config

from ilsgan_jax.data.synthetic_render import render_synthetic_objects
from ilsgan_jax.train.state import TrainState, create_train_state
from ilsgan_jax.train.step import PhasedTrainStep, make_trainer

BATCH = 16
MBSTD_GROUP = 2  # divides the per-device batch on 1 device (16) and on 8 devices (2)


def tiny_config(
    *,
    ada_mode: str = "noaug",
    estimator: str = "laplace",
    r1_gamma: float = -1.0,
    style_mixing_prob: float = 0.0,
    batch: int = BATCH,
) -> ml_collections.ConfigDict:
    """`runlocal,res=16` with the tiny networks of `tiny_configs` and an 8 px MI estimator."""
    return make_tiny_config(
        "ilsgan",
        f"runlocal,res={RESOLUTION},estimator={estimator}",
        {
            "loss.r1_gamma": r1_gamma,
            "loss.style_mixing_prob": style_mixing_prob,
            "loss.ils.estimator_resolution": 8,
            "loss.ils.estimator_widths": (4, 8),
            "ada.mode": ada_mode,
            "train.batch_size": batch,
        },
        mbstd_group_size=MBSTD_GROUP,
    )


def one_device_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:1]), ("data",))


def all_devices_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


class StepUnderTest:
    """One config's trainer, host initial state and compiled phased steps per mesh."""

    def __init__(self, config: ml_collections.ConfigDict, seed: int = 0):
        self.config = config
        self.trainer = make_trainer(config)
        self.networks, self.optimizers = self.trainer.networks, self.trainer.optimizers
        init = jax.jit(lambda key: create_train_state(config, self.networks, self.optimizers, key))
        self.initial_state: TrainState = to_host(init(jax.random.key(seed)))
        self._compiled: dict[int, Any] = {}

    def jitted(self, mesh: Mesh) -> PhasedTrainStep:
        if id(mesh) not in self._compiled:
            self._compiled[id(mesh)] = (mesh, PhasedTrainStep(self.trainer, mesh))
        return self._compiled[id(mesh)][1]

    def run(self, mesh: Mesh, state: TrainState, images: np.ndarray):
        """One iteration (R1 included when `state.step % r1_interval == 0`) from a host state;
        returns (new host state, host metrics as floats)."""
        step = int(state.step)
        new_state, metrics = self.jitted(mesh)(*on_mesh(mesh, state, images), step)
        return to_host(new_state), {name: float(value) for name, value in metrics.items()}


def on_mesh(mesh: Mesh, state, images: np.ndarray):
    """Copies of the state (replicated) and the batch (sharded on 'data') placed as the jitted
    step expects them, so its outputs can be fed back without compiling a second time."""
    replicated = NamedSharding(mesh, PartitionSpec())
    state = jax.device_put(jax.tree.map(np.array, state), replicated)
    return state, jax.device_put(images, NamedSharding(mesh, PartitionSpec("data")))


def to_host(tree):
    """Device pytree -> NumPy pytree (a copy that the donating step cannot invalidate)."""
    return jax.tree.map(np.array, jax.device_get(tree))


def with_p(state: TrainState, p: float) -> TrainState:
    return state.replace(ada=state.ada.replace(p=np.float32(p)))


def synthetic_reals(num_images: int, seed: int = 0) -> np.ndarray:
    """[N, 16, 16, 3] float32 in [-1, 1] from the synthetic renderer."""
    rendered = render_synthetic_objects(np.random.default_rng(seed), num_images, RESOLUTION)
    return (rendered["image"].astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def leaves_with_paths(tree) -> list[tuple[str, np.ndarray]]:
    return [
        (jax.tree_util.keystr(path), np.asarray(leaf))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]
