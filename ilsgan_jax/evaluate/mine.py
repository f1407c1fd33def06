"""MINE diagnostic: mutual information between two sets of paired samples (evaluation only).

As ILSGAN's `eval_MI_MINE.py`: an MLP critic T(x, y) on the concatenated flattened samples
(one hidden layer of 3000 ReLU units), trained with Adam (2e-4, batch 64) to maximise the
Donsker-Varadhan bound

    I(X; Y) >= E_p(x,y)[T] - log E_p(x)p(y)[exp T],

the product of marginals being the batch with y shuffled. Optionally the MINE paper's
moving-average correction of the biased gradient of the log term (`ema_decay`). Differences from
the reference: y is shuffled by a permutation (the reference draws indices with replacement), the
learning rate is constant (the reference lowers it on plateaus), and the final estimate is the DV
bound over all samples at once (the reference averages bounds over batches of 128, which biases
the log term).

For a trained generator, `generator_region_mi(fg, bg, mask)` measures the two terms the ILS
objective minimises: MI(bg * m; f * m) and MI(f * (1 - m); b * (1 - m)).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax


def default_mine_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.hidden_sizes = (3000,)  # Critic MLP hidden widths.
    config.learning_rate = 2e-4  # Adam step size.
    config.batch_size = 64  # Joint samples per step.
    config.num_steps = 20000  # Critic updates (the reference runs up to 100k).
    config.ema_decay = None  # float in (0, 1) for the MINE bias correction; None = plain DV.
    return config


class MineCritic(nn.Module):
    """T(x, y): MLP on [x, y] -> scalar.

    `hidden_sizes`: widths of the ReLU hidden layers.
    """

    hidden_sizes: tuple[int, ...] = (3000,)

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """x: [B, Dx], y: [B, Dy] float32 -> [B] float32."""
        features = jnp.concatenate([x, y], axis=-1)
        for width in self.hidden_sizes:
            features = nn.relu(nn.Dense(width)(features))
        return nn.Dense(1)(features)[:, 0]


def donsker_varadhan_bound(joint_scores: jax.Array, marginal_scores: jax.Array) -> jax.Array:
    """mean(T_joint) - log mean(exp T_marginal), computed stably. Inputs [B], output scalar."""
    log_mean_exp = jax.nn.logsumexp(marginal_scores) - jnp.log(marginal_scores.shape[0])
    return jnp.mean(joint_scores) - log_mean_exp


def estimate_mutual_information(
    key: jax.Array,
    x: np.ndarray,
    y: np.ndarray,
    config: ml_collections.ConfigDict | None = None,
) -> dict[str, float]:
    """Trains a critic on the paired samples and returns the DV estimate of I(X; Y) in nats.

    Args:
      key: PRNG key (initialisation, batches, shuffles).
      x: [N, ...] float32 samples; y: [N, ...] float32, y[i] paired with x[i].
      config: `default_mine_config()` or a modified copy.
    Returns:
      {'mi': estimate on all N samples, 'final_train_bound': mean bound of the last 100 steps}.
    """
    config = config or default_mine_config()
    x = jnp.asarray(x, jnp.float32).reshape(np.shape(x)[0], -1)
    y = jnp.asarray(y, jnp.float32).reshape(np.shape(y)[0], -1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples, y has {y.shape[0]}: they must be paired")
    if x.shape[0] < config.batch_size:
        raise ValueError(f"x: {x.shape[0]} samples, fewer than batch_size={config.batch_size}")
    critic = MineCritic(tuple(config.hidden_sizes))
    init_key, train_key, eval_key = jax.random.split(key, 3)
    params = critic.init(init_key, x[:1], y[:1])
    optimizer = optax.adam(config.learning_rate)
    ema_decay = config.ema_decay

    def loss_fn(params, x_batch, y_batch, y_shuffled, moving_average):
        joint = critic.apply(params, x_batch, y_batch)
        marginal = critic.apply(params, x_batch, y_shuffled)
        bound = donsker_varadhan_bound(joint, marginal)
        if ema_decay is None:
            return -bound, (bound, moving_average)
        # MINE's bias correction: the gradient of log E[e^T] is E[grad e^T] / E[e^T]; divide by a
        # moving average of E[e^T] instead of the batch estimate (stop-gradient surrogate).
        mean_exp = jnp.mean(jnp.exp(marginal))
        moving_average = ema_decay * moving_average + (1 - ema_decay) * jax.lax.stop_gradient(
            mean_exp
        )
        surrogate = jnp.mean(joint) - mean_exp / moving_average
        return -surrogate, (bound, moving_average)

    def train_step(carry, step_key):
        params, opt_state, moving_average = carry
        index_key, shuffle_key = jax.random.split(step_key)
        indices = jax.random.choice(index_key, x.shape[0], (config.batch_size,), replace=False)
        shuffled = jax.random.permutation(shuffle_key, indices)
        grads, (bound, moving_average) = jax.grad(loss_fn, has_aux=True)(
            params, x[indices], y[indices], y[shuffled], moving_average
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, moving_average), bound

    @jax.jit
    def train(params):
        carry = (params, optimizer.init(params), jnp.ones(()))
        step_keys = jax.random.split(train_key, config.num_steps)
        (params, _, _), bounds = jax.lax.scan(train_step, carry, step_keys)
        return params, bounds

    params, bounds = train(params)
    shuffled = jax.random.permutation(eval_key, x.shape[0])
    estimate = donsker_varadhan_bound(
        critic.apply(params, x, y), critic.apply(params, x, y[shuffled])
    )
    return {"mi": float(estimate), "final_train_bound": float(jnp.mean(bounds[-100:]))}


def generator_region_mi(
    key: jax.Array,
    fg_rgb: np.ndarray,
    bg_rgb: np.ndarray,
    mask: np.ndarray,
    config: ml_collections.ConfigDict | None = None,
) -> dict[str, float]:
    """MI between the visible and invisible regions of generated layers (ILSGAN's vis2invis).

    Args:
      fg_rgb, bg_rgb: [N, H, W, 3] float32 in [-1, 1]; mask: [N, H, W, 1] float32 in [0, 1].
    Returns:
      {'mi_bg_invisible_fg_visible': I(b*m; f*m), 'mi_fg_invisible_bg_visible':
       I(f*(1-m); b*(1-m))}, in nats.
    """
    if mask.ndim == 3:
        mask = mask[..., None]
    first_key, second_key = jax.random.split(key)
    fg_visible, bg_invisible = fg_rgb * mask, bg_rgb * mask
    fg_invisible, bg_visible = fg_rgb * (1 - mask), bg_rgb * (1 - mask)
    return {
        "mi_bg_invisible_fg_visible": estimate_mutual_information(
            first_key, bg_invisible, fg_visible, config)["mi"],
        "mi_fg_invisible_bg_visible": estimate_mutual_information(
            second_key, fg_invisible, bg_visible, config)["mi"],
    }
