"""ADA configuration: the 'bgc' pipeline flags, their strengths and the p-controller settings.

`AdaConfig` is the typed, hashable form the augmentation and controller functions use (it can be
closed over by or passed statically to `jax.jit`). `default_ada_config()` returns the same fields as
an `ml_collections.ConfigDict` so the main experiment config can embed it as `config.ada`;
`as_ada_config` turns either form into an `AdaConfig` and validates it.

Defaults are StyleGAN2-ADA's: pipeline 'bgc' (train.py `augpipe_specs['bgc']`) with the default
strengths of `AugmentPipe`, ADA target 0.6, adjustment every 4 iterations, speed 500 kimg.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

ADA_MODES = ("ada", "fixed", "noaug")


@dataclasses.dataclass(frozen=True)
class AdaConfig:
    """Adaptive discriminator augmentation settings (all probabilities are multipliers of p)."""

    # --- p and its controller ---
    mode: str = "ada"  # 'ada': p adapted to E[sign(D(real))]; 'fixed': p = initial_p; 'noaug': off.
    initial_p: float = 0.0  # Starting p ('ada') or the constant p ('fixed'), in [0, 1].
    target: float = 0.6  # ADA target for E[sign(D(real))] (r_t in the paper), in (-1, 1).
    interval: int = 4  # Adjust p every this many train iterations.
    speed_kimg: float = 500.0  # Thousands of images over which p can move by 1 (0 -> 1).

    # --- pixel blitting ---
    xflip: float = 1.0  # Probability multiplier for a horizontal flip.
    rotate90: float = 1.0  # Probability multiplier for a rotation by a multiple of 90 degrees.
    xint: float = 1.0  # Probability multiplier for integer translation.
    xint_max: float = 0.125  # Range of integer translation, fraction of the image width/height.

    # --- general geometric transformations ---
    scale: float = 1.0  # Probability multiplier for isotropic scaling.
    rotate: float = 1.0  # Probability multiplier for arbitrary rotation (split pre/post aniso).
    aniso: float = 1.0  # Probability multiplier for anisotropic scaling.
    xfrac: float = 1.0  # Probability multiplier for fractional translation.
    scale_std: float = 0.2  # Log2 standard deviation of isotropic scaling.
    rotate_max: float = 1.0  # Range of arbitrary rotation, 1 = full circle.
    aniso_std: float = 0.2  # Log2 standard deviation of anisotropic scaling.
    xfrac_std: float = 0.125  # Std of fractional translation, fraction of the image width/height.

    # --- colour transformations ---
    brightness: float = 1.0  # Probability multiplier for a brightness offset.
    contrast: float = 1.0  # Probability multiplier for a contrast scale.
    lumaflip: float = 1.0  # Probability multiplier for a luma flip (Householder reflection).
    hue: float = 1.0  # Probability multiplier for a hue rotation around the luma axis.
    saturation: float = 1.0  # Probability multiplier for a saturation scale.
    brightness_std: float = 0.2  # Standard deviation of the brightness offset (image units).
    contrast_std: float = 0.5  # Log2 standard deviation of the contrast scale.
    hue_max: float = 1.0  # Range of hue rotation, 1 = full circle.
    saturation_std: float = 1.0  # Log2 standard deviation of the saturation scale.

    def __post_init__(self):
        if self.mode not in ADA_MODES:
            raise ValueError(f"ada.mode must be one of {ADA_MODES}, got {self.mode!r}")
        if not 0.0 <= self.initial_p <= 1.0:
            raise ValueError(f"ada.initial_p must be in [0, 1], got {self.initial_p}")
        if not -1.0 < self.target < 1.0:
            raise ValueError(f"ada.target must be in (-1, 1), got {self.target}")
        if int(self.interval) != self.interval or self.interval < 1:
            raise ValueError(f"ada.interval must be a positive integer, got {self.interval}")
        if self.speed_kimg <= 0:
            raise ValueError(f"ada.speed_kimg must be positive, got {self.speed_kimg}")
        for name in GEOMETRIC_FLAGS + COLOUR_FLAGS:
            if getattr(self, name) < 0:
                raise ValueError(f"ada.{name} must be >= 0, got {getattr(self, name)}")
        for name in STRENGTHS:
            if getattr(self, name) < 0:
                raise ValueError(f"ada.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def has_geometric(self) -> bool:
        """True when any geometric transform can be drawn (static: decides what is traced)."""
        return any(getattr(self, name) > 0 for name in GEOMETRIC_FLAGS)

    @property
    def has_colour(self) -> bool:
        """True when any colour transform can be drawn (static: decides what is traced)."""
        return any(getattr(self, name) > 0 for name in COLOUR_FLAGS)


GEOMETRIC_FLAGS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR_FLAGS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
STRENGTHS = (
    "xint_max",
    "scale_std",
    "rotate_max",
    "aniso_std",
    "xfrac_std",
    "brightness_std",
    "contrast_std",
    "hue_max",
    "saturation_std",
)


def default_ada_config() -> ml_collections.ConfigDict:
    """The default ('bgc', adaptive) settings as a ConfigDict, to embed as `config.ada`."""
    return ml_collections.ConfigDict(dataclasses.asdict(AdaConfig()))


def only(*enabled: str, **overrides: Any) -> AdaConfig:
    """An `AdaConfig` with every transform off except `enabled` (probability multiplier 1).

    Example: `only('xflip')` flips with probability p and does nothing else.
    """
    unknown = set(enabled) - set(GEOMETRIC_FLAGS + COLOUR_FLAGS)
    if unknown:
        raise ValueError(f"unknown ADA transform(s) {sorted(unknown)}")
    flags = {name: float(name in enabled) for name in GEOMETRIC_FLAGS + COLOUR_FLAGS}
    return AdaConfig(**{**flags, **overrides})


def as_ada_config(config: AdaConfig | Mapping[str, Any] | ml_collections.ConfigDict) -> AdaConfig:
    """Returns `config` as a validated `AdaConfig`; raises ValueError naming an unknown field."""
    if isinstance(config, AdaConfig):
        return config
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ValueError(f"ada config must be an AdaConfig or a mapping, got {type(config)}")
    known = {field.name for field in dataclasses.fields(AdaConfig)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"unknown ada config field(s) {sorted(unknown)}")
    return AdaConfig(**config)
