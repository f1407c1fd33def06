"""StyleGAN2 mapping network: z -> w, broadcast to `num_ws`, with `w_avg` tracking and
truncation."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ilsgan_jax.nn.layers import EqualizedDense


def normalize_second_moment(x: jnp.ndarray, axis: int = -1, eps: float = 1e-8) -> jnp.ndarray:
    """Scales each vector to unit mean square: `x * rsqrt(mean(x^2) + eps)`."""
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


class MappingNetwork(nn.Module):
    """`z: [N, z_dim] -> ws: [N, num_ws, w_dim]` float32 (the matmuls in `compute_dtype`).

    `w_avg` lives in the mutable 'buffers' collection; it moves towards the batch mean of w with
    `w_avg_beta` whenever the network is applied with `update_w_avg=True` (and 'buffers' mutable).
    """

    w_dim: int  # intermediate latent (W) dimensionality
    num_ws: int  # number of w vectors to broadcast to (the synthesis network's num_ws)
    num_layers: int = 8  # number of FC layers
    layer_features: int | None = None  # hidden width; None = w_dim
    lr_multiplier: float = 0.01  # learning-rate multiplier of the FC layers
    w_avg_beta: float = 0.995  # decay of the running average of w
    compute_dtype: str = "float32"  # matmul operands 'float32' | 'bfloat16' (outputs float32)

    @nn.compact
    def __call__(
        self,
        z: jnp.ndarray,
        truncation_psi: float | jnp.ndarray = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> jnp.ndarray:
        if z.ndim != 2:
            raise ValueError(f"MappingNetwork expects z of shape [N, z_dim], got {z.shape}")
        w_avg = self.variable("buffers", "w_avg", lambda: jnp.zeros([self.w_dim], jnp.float32))
        x = normalize_second_moment(z.astype(jnp.float32))
        hidden = self.layer_features or self.w_dim
        for index in range(self.num_layers):
            features = self.w_dim if index == self.num_layers - 1 else hidden
            x = EqualizedDense(
                features,
                activation="lrelu",
                lr_multiplier=self.lr_multiplier,
                compute_dtype=self.compute_dtype,
                name=f"fc{index}",
            )(x)
        if update_w_avg and not self.is_initializing():
            batch_mean = jax.lax.stop_gradient(jnp.mean(x, axis=0))
            w_avg.value = batch_mean + self.w_avg_beta * (w_avg.value - batch_mean)
        ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
        if isinstance(truncation_psi, (int, float)) and truncation_psi == 1:
            return ws
        truncated = w_avg.value + truncation_psi * (ws - w_avg.value)
        if truncation_cutoff is None:
            return truncated
        layer = jnp.arange(self.num_ws)[None, :, None]
        return jnp.where(layer < truncation_cutoff, truncated, ws)
