"""Prior-coverage initialisation of the layered generator's mask logit.

At the reference initialisation the foreground generator's mean mask coverage depends strongly on
the parameter seed, and the mask losses read it: the binarisation pushes every mask pixel towards
the side of 0.5 it starts on. `calibrate_mask_coverage` removes that dependence by choosing the
mask channel's output bias so that the initial mean coverage is a chosen target, the analogue of a
detection head's prior-probability bias initialisation. The bias stays an ordinary trainable
parameter.

Where the shift goes: the skip synthesis network sums the upsampled ToRGB outputs of all blocks,
the last block's ToRGB adds its bias without any gain or learning-rate multiplier, and the mask is
`sigmoid(rgba[..., 3] + mask_logit_offset)`. Adding `b` to the last ToRGB's mask-channel bias
therefore adds `b` to every pixel's final mask logit, exactly as long as that ToRGB output stays
inside `conv_clamp` (256 by default; initial values are a few units).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ilsgan_jax.models.layered import LayeredGenerator

CONFIG_FIELD = "config.model.initial_mask_coverage"
MASK_CHANNEL = 3  # the foreground generator's RGBA output: RGB, then the mask logit
BISECTION_STEPS = 40


def mask_bias_path(generator: LayeredGenerator) -> tuple[str, ...]:
    """Path in the variables of the mask logit's output bias: the foreground's last ToRGB bias
    `[4]` (its channel `MASK_CHANNEL`)."""
    return ("params", "foreground", "synthesis", f"b{generator.resolution}", "torgb", "bias")


def mask_logits(generator: LayeredGenerator, variables, z: jnp.ndarray, noise_key: jax.Array):
    """The pre-sigmoid mask logits `[N, R, R]` float32 of `generator` at `z: [N, z_dim]`:
    `mask == sigmoid(logits)[..., None]`.

    Runs the whole generator as the train step does (random noise from `noise_key`, no truncation,
    no style mixing) without updating `w_avg`, and reads the foreground generator's RGBA output
    (exact; inverting the returned sigmoid would lose the saturated pixels in float32)."""

    def is_foreground(module: nn.Module, method_name: str) -> bool:
        return method_name == "__call__" and module.scope.path == ("foreground",)

    _, state = generator.apply(
        variables,
        z,
        rngs={"noise": noise_key},
        capture_intermediates=is_foreground,
        mutable=["intermediates"],
    )
    (fg_rgba,) = state["intermediates"]["foreground"]["__call__"]
    return fg_rgba[..., MASK_CHANNEL].astype(jnp.float32) + generator.mask_logit_offset


def bisect_increasing(increasing, target, low, high, steps: int):
    """The `x` in `[low, high]` with `increasing(x) == target`, by `steps` halvings of the
    bracket (which must hold the root). Returns [] float32."""

    def halve(_, bracket):
        low, high = bracket
        middle = 0.5 * (low + high)
        below = increasing(middle) < target
        return jnp.where(below, middle, low), jnp.where(below, high, middle)

    low, high = jax.lax.fori_loop(0, steps, halve, (low, high))
    return 0.5 * (low + high)


def probability_logit(probability) -> jnp.ndarray:
    """log(p / (1 - p)), the inverse of the sigmoid."""
    return jnp.log(probability) - jnp.log1p(-probability)


def coverage_bias(logits: jnp.ndarray, target: float, steps: int = BISECTION_STEPS) -> jnp.ndarray:
    """The scalar `b` with `mean(sigmoid(logits + b)) == target`, by bisection.

    The mean is increasing in `b`; the bracket `[logit(target) - max(logits),
    logit(target) - min(logits)]` holds the root (at its ends every pixel is at most, resp. at
    least, `target`), and `steps` halvings of it reach float32 resolution. `target` may be
    traced. Returns [] float32."""
    logits = logits.astype(jnp.float32)
    target_logit = probability_logit(target)
    return bisect_increasing(
        lambda bias: jnp.mean(jax.nn.sigmoid(logits + bias)),
        target,
        target_logit - jnp.max(logits),
        target_logit - jnp.min(logits),
        steps,
    )


def calibration_inputs(key: jax.Array, latent_shape: tuple[int, ...]):
    """`(z, noise_key)` of a calibration from `key`: z `latent_shape` float32 ~ N(0, I)."""
    z_key, noise_key = jax.random.split(key)
    return jax.random.normal(z_key, latent_shape, jnp.float32), noise_key


def replace_leaf(tree, path: tuple[str, ...], update):
    """A copy of the nested mapping `tree` with `tree[path]` replaced by `update(tree[path])`;
    every other leaf is the same object."""
    if not path:
        return update(tree)
    head, *rest = path
    return type(tree)({**tree, head: replace_leaf(tree[head], tuple(rest), update)})


def calibrate_mask_coverage(
    generator: LayeredGenerator,
    variables,
    key: jax.Array,
    *,
    target: float,
    num_samples: int = 64,
    latent_shape: tuple[int, ...] | None = None,
):
    """Shifts the initial mask logit so that the mean mask coverage is `target`.

    Draws `num_samples` latents z ~ N(0, I), runs the generator once on them (random noise, as the
    train step's G pass; at the reference initialisation every `noise_strength` is 0, so the noise
    does not change the masks), finds the scalar `b` with `mean(sigmoid(logit + b)) == target`
    over all samples and pixels by bisection on those fixed logits, and adds `b` to the mask
    channel of the foreground's last ToRGB bias (`mask_bias_path`), which adds `b` to every final
    mask logit (module docstring). No other variable changes. Pure and jit-compatible (`target`,
    `num_samples` and `latent_shape` are static).

    Args:
      generator: a `LayeredGenerator`.
      variables: its variables, `{'params': ..., 'buffers': ...}` as `generator.init` returns them.
      key: PRNG key of the latents and the noise (`calibration_inputs`).
      target: the mean coverage to start at, a Python float in (0, 1).
      num_samples: latents to average over.
      latent_shape: shape of the latents; None = `[num_samples, z_dim]` with z_dim read from the
        foreground mapping network's first layer.

    Returns:
      `(variables, info)`: the calibrated variables (same structure) and
      `{'initial_coverage', 'calibrated_coverage', 'mask_logit_bias'}`, [] float32 each; the
      coverages are over the calibration latents (the calibrated one from the shifted logits).
    """
    if not isinstance(generator, LayeredGenerator):
        raise ValueError(
            f"{CONFIG_FIELD} needs a generator with one mask logit (LayeredGenerator, the 'ilsgan' "
            f"system), got {type(generator).__name__}; set it to None for this system"
        )
    target = float(target)
    if not 0.0 < target < 1.0:
        raise ValueError(f"{CONFIG_FIELD} must be in (0, 1) or None, got {target}")
    if latent_shape is None:
        z_dim = variables["params"]["foreground"]["mapping"]["fc0"]["weight"].shape[0]
        latent_shape = (num_samples, z_dim)
    z, noise_key = calibration_inputs(key, latent_shape)
    logits = mask_logits(generator, variables, z, noise_key)
    bias = coverage_bias(logits, target)

    def shift_mask_channel(torgb_bias):
        return torgb_bias.at[MASK_CHANNEL].add(bias.astype(torgb_bias.dtype))

    variables = replace_leaf(variables, mask_bias_path(generator), shift_mask_channel)
    info = {
        "initial_coverage": jnp.mean(jax.nn.sigmoid(logits)),
        "calibrated_coverage": jnp.mean(jax.nn.sigmoid(logits + bias)),
        "mask_logit_bias": bias,
    }
    return variables, info
