"""Tiny configurations shared by the tests: networks of a few thousand parameters at 16 px.

Plain Python (no JAX work at import), so that helper modules and module-level test code can use
it; tests normally reach it through the `tiny_config` fixture of `conftest.py`.
"""

import importlib
from collections.abc import Mapping
from typing import Any

import ml_collections

from ilsgan_jax.stages.compare_rows import set_field

RESOLUTION = 16

# Module arguments of the tiny generator (LayeredGenerator, Synthesis, ...): 16 channels at 4 and
# 8 px, 8 at 16 px.
TINY_NETWORK_KWARGS = dict(w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)

# The same sizes as config fields, plus z_dim.
TINY_NETWORK_FIELDS = {
    "model.channel_base": TINY_NETWORK_KWARGS["channel_base"],
    "model.channel_max": TINY_NETWORK_KWARGS["channel_max"],
    "model.z_dim": 16,
    "model.w_dim": TINY_NETWORK_KWARGS["w_dim"],
    "model.mapping_layers": TINY_NETWORK_KWARGS["mapping_layers"],
}


def set_fields(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Sets `{'a.b.c': value}` fields in place with `compare_rows.set_field` (a missing field
    raises KeyError naming it); returns `config`."""
    for dotted, value in overrides.items():
        set_field(config, dotted, value)
    return config


def make_tiny_config(
    config_name: str,
    variant: str = f"runlocal,res={RESOLUTION}",
    overrides: Mapping[str, Any] | None = None,
    *,
    mbstd_group_size: int = 2,
) -> ml_collections.ConfigDict:
    """`configs/<config_name>.py:<variant>` with the tiny networks, then `overrides` (dotted).

    mbstd_group_size must divide the per-device batch (2: per-device batches of 2, 4, 8, 16).
    """
    module = importlib.import_module(f"configs.{config_name}")
    config = module.get_config(variant)
    set_fields(config, TINY_NETWORK_FIELDS)
    config.model.mbstd_group_size = mbstd_group_size
    return set_fields(config, overrides or {})
