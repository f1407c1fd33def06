"""XLA compiler options of the convolution-heavy programs (the GAN train step, the segmenter).

On the CPU, jaxlib 0.10's XLA hands convolutions, dots and reductions to YNNPACK. At the channel
counts of CPU-sized runs (32-64), YNNPACK's convolution weight gradients run 2-3x slower than
XLA's own (Eigen) convolutions, while its dots and reductions are the faster ones. Keeping YNNPACK
for dots and reductions only made the runlocal train step 1.4x faster and the segmenter's step
1.2x faster (interleaved in one process on a 2-core Xeon; `launch/benchmark.py
--compare_compiler_options` measures it on your machine). Convolutions stay float32 either way;
only the kernel library changes, so results agree to float32 rounding.

The setting is `config.compiler.xla_cpu_ynn_fusion_types`: a comma-separated list of XLA's
`LIBRARY_FUSION_TYPE_*` names, or 'default' for the installed jaxlib's own choice. It only
applies on CPU devices; GPU and TPU compilations get no extra option.
"""

import functools

import jax
import jax.numpy as jnp
from absl import logging

YNN_FUSION_TYPES_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# XLA's LibraryFusionType names that YNNPACK may take (xla/xla.proto).
YNN_FUSION_TYPES = (
    "LIBRARY_FUSION_TYPE_DOT",
    "LIBRARY_FUSION_TYPE_ELTWISE",
    "LIBRARY_FUSION_TYPE_REDUCE",
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
)
# The config's default: YNNPACK for single dots and reductions, XLA's Eigen for convolutions.
DOTS_AND_REDUCTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
JAXLIB_DEFAULT = "default"


def parse_ynn_fusion_types(value: str) -> tuple[str, ...] | None:
    """'default' -> None; 'A,B' -> ('A', 'B') after checking every name; '' -> () (no YNNPACK)."""
    if value is None or value.strip() == JAXLIB_DEFAULT:
        return None
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in YNN_FUSION_TYPES]
    if unknown:
        raise ValueError(
            f"compiler.xla_cpu_ynn_fusion_types: unknown fusion type(s) {unknown}; use "
            f"'{JAXLIB_DEFAULT}' or a comma-separated subset of {list(YNN_FUSION_TYPES)}"
        )
    return names


@functools.cache
def _cpu_accepts(option: str, value: str) -> bool:
    """Whether the installed jaxlib's XLA:CPU compiles with `option=value` (older jaxlibs lack
    the YNNPACK options). Cached per process: the answer depends only on the jaxlib."""
    cpu = jax.devices("cpu")[0]
    try:
        jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(
            jax.ShapeDtypeStruct((), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(cpu))
        ).compile()
    except Exception as error:  # noqa: BLE001 - XLA reports unknown options as a runtime error
        logging.warning(
            "This jaxlib does not take the XLA:CPU option %s=%r (%s); compiling with its defaults.",
            option,
            value,
            str(error).splitlines()[0],
        )
        return False
    return True


def for_platform(config, platform: str) -> dict[str, str]:
    """The `jax.jit(compiler_options=...)` of the heavy programs for devices of `platform`.

    Args:
      config: the experiment config (reads `config.compiler.xla_cpu_ynn_fusion_types`, which every
        config file defines).
      platform: 'cpu', 'gpu', 'tpu', ... (`jax.Device.platform`).

    Returns:
      {} off the CPU, for 'default', or when the jaxlib does not know the option.
    """
    names = parse_ynn_fusion_types(config.compiler.xla_cpu_ynn_fusion_types)
    if platform != "cpu" or names is None:
        return {}
    joined = ",".join(names)
    if not _cpu_accepts(YNN_FUSION_TYPES_OPTION, joined):
        return {}
    return {YNN_FUSION_TYPES_OPTION: joined}


def for_devices(config, devices) -> dict[str, str]:
    """`for_platform` for the platform of `devices` (a mesh's or `jax.devices()`)."""
    devices = list(devices)
    return for_platform(config, devices[0].platform) if devices else {}
