"""The systems of the layered-GAN family, by `config.system`.

Each module declares one `System` (`systems/base.py`); the trainer reads `system_for(config)`
once and holds no system names. Adding a system: one module and one entry in `REGISTRY`.
"""

from ilsgan_jax.systems import ilsgan, independence_prior, labels4free, perturbgan, stylegan2
from ilsgan_jax.systems.base import Config, LossInputs, System

REGISTRY: dict[str, System] = {
    module.SYSTEM.name: module.SYSTEM
    for module in (ilsgan, perturbgan, stylegan2, labels4free, independence_prior)
}


def get_system(name: str) -> System:
    """The registered system called `name`; a ValueError lists the known ones."""
    if name not in REGISTRY:
        raise ValueError(
            f"config.system={name!r} is not a known system; use one of {sorted(REGISTRY)}"
        )
    return REGISTRY[name]


def system_for(config: Config) -> System:
    return get_system(config.system)


__all__ = ["REGISTRY", "LossInputs", "System", "get_system", "system_for"]
