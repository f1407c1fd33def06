"""Mixed precision: the compute dtype of the networks' convolutions and matmuls.

Every network takes a `compute_dtype` name ('float32' or 'bfloat16'). Parameters are created
and stored in float32 (so are the optimiser state and the EMA); a layer casts its weights and its
input activations to the compute dtype where it uses them, as StyleGAN2-ADA does with float16 for
its top resolutions. bfloat16 has float32's exponent range, so no loss scaling is needed and
every resolution can use it. Statistics (demodulation norms, minibatch-std, normalisation
moments) and each network's outputs stay float32. With 'float32' every cast is the identity.
"""

import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str, field: str = "compute_dtype") -> jnp.dtype:
    """The dtype called `name`; a ValueError names `field` and the allowed values otherwise."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"{field} must be one of {COMPUTE_DTYPES}, got {name!r}")
    return jnp.dtype(name)


def dense(x: jnp.ndarray, weight: jnp.ndarray, dtype: jnp.dtype) -> jnp.ndarray:
    """`x @ weight` with both operands cast to `dtype`, accumulated and returned in float32.

    Args:
      x: `[..., Cin]`; weight: `[Cin, Cout]` (any float dtypes).
      dtype: the compute dtype.

    Returns:
      `[..., Cout]` float32.
    """
    return jnp.matmul(x.astype(dtype), weight.astype(dtype), preferred_element_type=jnp.float32)
