"""ADA: the differentiable 'bgc' augmentation pipeline and its p controller."""

from ilsgan_jax.augment.ada import apply_colour, apply_geometric, augment
from ilsgan_jax.augment.config import AdaConfig, as_ada_config, default_ada_config
from ilsgan_jax.augment.controller import (
    AdaState,
    accumulate_real_signs,
    init_ada_state,
    mean_real_sign,
    update_ada_state,
)

__all__ = [
    "AdaConfig",
    "AdaState",
    "accumulate_real_signs",
    "apply_colour",
    "apply_geometric",
    "as_ada_config",
    "augment",
    "default_ada_config",
    "init_ada_state",
    "mean_real_sign",
    "update_ada_state",
]
