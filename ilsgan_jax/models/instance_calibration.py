"""Prior-coverage initialisation of the independence-prior generator's instance masks.

The K providers of `InstanceLayeredGenerator` start, at the reference initialisation, with soft
masks over their whole frames: at the comparison's 32 px size the K = 3 masks together cover
most of the image at first and about half of it after the first 50 steps, far above what the
objects of a picture cover. `calibrate_union_coverage` shifts each provider's mask logit (the
mask channel of its last ToRGB bias, as `mask_calibration` does for the layered generator) so
that every instance starts with the same mean coverage `c`, and `c` is chosen so that the union
of the K masks, `1 - prod_k (1 - m_k)`, covers `target` on average.

It reads the masks as the providers draw them (`provider_mask`). At initialisation the layout
network outputs zeros, which is the identity layout, so these are also the laid-out masks, but
for the presence gate (a factor sigmoid(2) = 0.88, when `presence_gate` is on) and the frame
taper (`mask_border_taper`), neither of which the calibration counts.
"""

import jax
import jax.numpy as jnp

from ilsgan_jax.models.instances import InstanceLayeredGenerator
from ilsgan_jax.models.mask_calibration import (
    BISECTION_STEPS,
    CONFIG_FIELD,
    MASK_CHANNEL,
    bisect_increasing,
    calibration_inputs,
    coverage_bias,
    replace_leaf,
)


def provider_names(generator: InstanceLayeredGenerator) -> tuple[str, ...]:
    """The provider modules 'provider0' ... 'provider{K-1}' (one provider per instance)."""
    return tuple(f"provider{index}" for index in range(generator.num_instances))


def provider_bias_paths(generator: InstanceLayeredGenerator) -> tuple[tuple[str, ...], ...]:
    """Per provider module, the path of its last ToRGB bias in the variables (the mask logit is
    its channel `MASK_CHANNEL`)."""
    last_block = f"b{generator.resolution}"
    return tuple(
        ("params", name, "synthesis", last_block, "torgb", "bias")
        for name in provider_names(generator)
    )


def provider_mask_logits(
    generator: InstanceLayeredGenerator, variables, z: jnp.ndarray, noise_key: jax.Array
) -> jnp.ndarray:
    """The providers' pre-sigmoid mask logits `[N, K, R, R]` float32 at `z: [N, K + 1, z_dim]`:
    `provider_mask == sigmoid(logits)[..., None]` (times the frame taper, if any).

    Runs the whole generator as the train step does (random noise from `noise_key`) and reads
    the providers' RGBA outputs (exact, where inverting the sigmoid would lose saturated pixels).
    """
    names = provider_names(generator)

    def is_provider_synthesis(module, method_name: str) -> bool:
        path = module.scope.path
        return method_name == "__call__" and len(path) == 2 and path[0] in names and (
            path[1] == "synthesis"
        )

    _, state = generator.apply(
        variables,
        z,
        rngs={"noise": noise_key},
        capture_intermediates=is_provider_synthesis,
        mutable=["intermediates"],
    )
    outputs = state["intermediates"]
    rgba = jnp.stack([outputs[name]["synthesis"]["__call__"][0] for name in names], axis=1)
    return rgba[..., MASK_CHANNEL].astype(jnp.float32)


def union_coverage(logits: jnp.ndarray, biases: jnp.ndarray) -> jnp.ndarray:
    """Mean of the union `1 - prod_k (1 - sigmoid(logits_k + biases_k))` over N and pixels.

    logits: [N, K, R, R]; biases: [K]. Returns [] float32, increasing in every bias."""
    masks = jax.nn.sigmoid(logits + biases[:, None, None])
    return jnp.mean(1.0 - jnp.prod(1.0 - masks, axis=1))


def union_coverage_biases(
    logits: jnp.ndarray, target: float, steps: int = BISECTION_STEPS
) -> jnp.ndarray:
    """Biases `[K]` with `union_coverage(logits, biases) == target` and every instance at the
    same mean coverage `c`.

    `coverage_bias` gives each instance's bias for a coverage `c`, and `c` is found by bisection
    in `[target / K, target]`: the bracket holds the root, since the union covers at most the sum
    of the K coverages and at least any one of them.
    """
    logits = logits.astype(jnp.float32)
    num_instances = logits.shape[1]

    def equal_coverage_biases(coverage):
        return jax.vmap(lambda instance: coverage_bias(instance, coverage, steps), in_axes=1)(
            logits
        )

    coverage = bisect_increasing(
        lambda c: union_coverage(logits, equal_coverage_biases(c)),
        target,
        jnp.float32(target / num_instances),
        jnp.float32(target),
        steps,
    )
    return equal_coverage_biases(coverage)


def calibrate_union_coverage(
    generator: InstanceLayeredGenerator,
    variables,
    key: jax.Array,
    *,
    target: float,
    num_samples: int = 64,
):
    """Shifts the providers' initial mask logits so that the union of the instance masks covers
    `target` on average, every instance the same share (module docstring).

    Draws `num_samples` latents `[num_samples, K + 1, z_dim]` ~ N(0, I) and noise from `key`,
    runs the generator once, finds the biases on those fixed logits (`union_coverage_biases`)
    and adds each to its provider's mask channel (`provider_bias_paths`). No other variable
    changes. Pure and jit-compatible (`target`, `num_samples` static).

    Returns:
      `(variables, info)`: the calibrated variables (same structure) and
      `{'initial_coverage', 'calibrated_coverage'}` ([] float32, the union's mean over the
      calibration latents before and after), 'instance_coverage' [K] and 'mask_logit_bias' [K].
    """
    if not isinstance(generator, InstanceLayeredGenerator):
        raise ValueError(
            f"calibrate_union_coverage needs an InstanceLayeredGenerator, got "
            f"{type(generator).__name__}"
        )
    if generator.share_providers:
        raise ValueError(
            f"{CONFIG_FIELD} needs one provider per instance (config.model.share_providers="
            "False): a shared provider has one mask bias for all instances, which cannot give "
            "them equal shares; set it to None"
        )
    target = float(target)
    if not 0.0 < target < 1.0:
        raise ValueError(f"{CONFIG_FIELD} must be in (0, 1) or None, got {target}")
    z_dim = variables["params"]["background"]["mapping"]["fc0"]["weight"].shape[0]
    z, noise_key = calibration_inputs(key, (num_samples, generator.num_instances + 1, z_dim))
    logits = provider_mask_logits(generator, variables, z, noise_key)
    biases = union_coverage_biases(logits, target)

    for index, path in enumerate(provider_bias_paths(generator)):
        bias = biases[index]
        variables = replace_leaf(
            variables, path, lambda torgb_bias, b=bias: torgb_bias.at[MASK_CHANNEL].add(
                b.astype(torgb_bias.dtype)
            )
        )
    info = {
        "initial_coverage": union_coverage(logits, jnp.zeros_like(biases)),
        "calibrated_coverage": union_coverage(logits, biases),
        "instance_coverage": jnp.mean(jax.nn.sigmoid(logits + biases[:, None, None]), (0, 2, 3)),
        "mask_logit_bias": biases,
    }
    return variables, info
