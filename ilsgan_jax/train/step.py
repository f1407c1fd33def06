"""The compiled train step: the phases of `train/phases.py` over a `Mesh(('data',))`.

`make_trainer(config)` reads the system once (`config.system`) and builds its networks and
optimisers; `PhasedTrainStep(trainer, mesh)` compiles two functions, the main phase (G main and
D main in the order of `train.d_step_first`, estimator, EMA, ADA) and lazy R1, with the state
replicated and donated and the batch sharded on 'data', and runs R1 after the main phase on
iterations with `step % r1_interval == 0`, dispatched on the host's step counter (no device
sync). XLA inserts the cross-device reductions (batch means, the ILS permutation's gather);
minibatch-std groups are contiguous runs of samples that never straddle a device (see
`minibatch_std`), except group size 0, the whole batch, whose statistics XLA reduces across the
devices.

`main` adjusts ADA's p when `(step + 1) % ada.interval == 0`, which on an R1 iteration (step = 0
mod 16) only happens for `ada.interval == 1`; otherwise counting R1's signs after `main`'s ADA
update equals the reference's order (with interval 1 they count towards the next adjustment).
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilsgan_jax import compiler_options as compiler_options_lib
from ilsgan_jax.systems import System, system_for
from ilsgan_jax.train import phases
from ilsgan_jax.train.builders import build_networks, build_optimizers
from ilsgan_jax.train.phases import StepSettings, Trainer
from ilsgan_jax.train.state import TrainState


def make_trainer(
    config: ml_collections.ConfigDict, system: System | None = None, networks=None, optimizers=None
) -> Trainer:
    """The config's system (default `system_for(config)`), its networks and optimisers (built
    unless given) and the step settings."""
    system = system or system_for(config)
    return Trainer(
        config=config,
        system=system,
        networks=networks or build_networks(config, system),
        optimizers=optimizers or build_optimizers(config),
        settings=StepSettings.from_config(config, system),
    )


class PhasedTrainStep:
    """The compiled phases of an iteration: `step_fn(state, batch, step) -> (state, metrics)`
    with `step` = `state.step` as a host int."""

    def __init__(self, trainer: Trainer, mesh: Mesh, compiler_options: dict | None = None):
        self.trainer = trainer
        self.r1_interval = trainer.settings.r1_interval
        self.main = jit_train_step(
            functools.partial(phases.main_phase, trainer), mesh, compiler_options
        )
        self.r1 = None
        if trainer.has_r1:
            self.r1 = jit_train_step(
                functools.partial(phases.r1_phase, trainer), mesh, compiler_options
            )
        # Reported as the R1 penalty on iterations without R1 (made once: no per-step transfer).
        # Built on the devices by a jitted function: a multi-process `device_put` would compare
        # the host values across processes, and NaN != NaN.
        self._no_r1 = jax.jit(
            lambda: jnp.full((), jnp.nan, jnp.float32),
            out_shardings=NamedSharding(mesh, PartitionSpec()),
        )()

    def __call__(self, state: TrainState, real_images, step: int):
        state, metrics = self.main(state, real_images)
        if self.r1 is None:
            return state, metrics
        if step % self.r1_interval == 0:
            state, r1_metrics = self.r1(state, real_images)
            return state, {**metrics, **r1_metrics}
        return state, {**metrics, "d/r1_penalty": self._no_r1}


def jit_phased_train_step(trainer: Trainer, mesh: Mesh) -> PhasedTrainStep:
    """The training loop's step, compiled with the config's compiler options for the mesh's
    platform (`compiler_options.for_devices`)."""
    options = compiler_options_lib.for_devices(trainer.config, mesh.devices.flat)
    return PhasedTrainStep(trainer, mesh, options)


def jit_train_step(
    train_step, mesh: Mesh, compiler_options: dict | None = None
) -> Callable[[TrainState, Any], tuple]:
    """Compiles a phase: state replicated and donated, batch sharded on 'data', metrics
    replicated; `compiler_options` go to XLA (`jax.jit(compiler_options=...)`)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(
        train_step,
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
        compiler_options=compiler_options or None,
    )
