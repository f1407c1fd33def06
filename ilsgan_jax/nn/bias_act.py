"""Fused bias + activation + gain + clamp, as StyleGAN2-ADA's `bias_act` (channel axis last)."""

import math

import jax
import jax.numpy as jnp

# name -> (function, default gain)
_ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (jax.nn.relu, math.sqrt(2)),
    "lrelu": (lambda x: jnp.where(x >= 0, x, x * 0.2), math.sqrt(2)),
    "sigmoid": (jax.nn.sigmoid, 1.0),
}


def default_gain(activation: str) -> float:
    """The gain the reference applies after `activation` (sqrt(2) for lrelu/relu, else 1)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[activation][1]


def bias_act(
    x: jnp.ndarray,
    bias: jnp.ndarray | None = None,
    activation: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
) -> jnp.ndarray:
    """`clamp(act(x + bias) * gain)`.

    Args:
      x: `[..., C]` activations.
      bias: `[C]` or None.
      activation: 'linear' | 'relu' | 'lrelu' (slope 0.2) | 'sigmoid'.
      gain: multiplier after the activation; None = the activation's default (sqrt(2) for lrelu).
      clamp: if not None, the output is clipped to `[-clamp, clamp]`.
    """
    function, def_gain = _ACTIVATIONS.get(activation, (None, None))
    if function is None:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}")
    gain = def_gain if gain is None else gain
    if bias is not None:
        x = x + bias.astype(x.dtype)
    x = function(x)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = jnp.clip(x, -clamp, clamp)
    return x
