"""The phases of one training iteration, as functions of a frozen `Trainer`.

G main (adversarial loss + the system's terms), D main (adversarial loss, optional WGAN-GP), the
optional estimator phase (a learned ILS conditional), EMA of G and ADA statistics, and lazy R1
(a separate phase, run every `r1_interval` iterations). Phase order, keys and schedules follow
StyleGAN2-ADA / ILSGAN's training loop: each phase draws its own z and perturbation; with
`train.d_step_first` D main runs first, on fakes of the current G, and G main then faces the
updated D (PerturbGAN's loop); the estimator phase, EMA and R1 follow both in either order;
`cur_nimg` (images seen before this step) drives the ILS and EMA schedules; ADA's p is adjusted
when `(step + 1) % interval == 0` from the signs of D(real) in D main and R1.

Nothing here names a system: what differs between systems comes from `trainer.system`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ilsgan_jax.augment.ada import augment
from ilsgan_jax.augment.config import AdaConfig, as_ada_config
from ilsgan_jax.augment.controller import accumulate_real_signs, update_ada_state
from ilsgan_jax.models.synthesis import num_ws
from ilsgan_jax.objectives import gan_losses
from ilsgan_jax.objectives.schedules import default_ema_kimg, ema_beta
from ilsgan_jax.systems import LossInputs, System
from ilsgan_jax.train.builders import Networks, Optimizers, r1_gamma
from ilsgan_jax.train.state import TrainState, generator_variables

Metrics = dict[str, jnp.ndarray]
NAN_TO_NUM = dict(nan=0.0, posinf=1e5, neginf=-1e5)  # the reference's gradient sanitising
NUM_PHASE_KEYS = 8  # keys split from fold_in(state.key, step); R1 uses index 6


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The scalars of the step, read once from the config."""

    batch_size: int
    latent_shape: tuple[int, ...]
    num_ws: int
    adversarial: str  # 'ns_r1' | 'wgan_gp'
    d_step_first: bool  # D main before G main (else G main first)
    r1_gamma: float
    r1_interval: int
    wgan_gp_weight: float
    style_mixing_prob: float
    ema_kimg: float
    ema_rampup: float | None
    ada: AdaConfig

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, system: System) -> "StepSettings":
        batch = config.train.batch_size
        return cls(
            batch_size=batch,
            latent_shape=tuple(system.latent_shape(config, batch)),
            num_ws=num_ws(config.data.resolution),
            adversarial=config.loss.adversarial,
            d_step_first=bool(config.train.d_step_first),
            r1_gamma=r1_gamma(config),
            r1_interval=int(config.loss.r1_interval),
            wgan_gp_weight=float(config.loss.wgan_gp_weight),
            style_mixing_prob=float(config.loss.style_mixing_prob),
            ema_kimg=config.ema.kimg if config.ema.kimg > 0 else default_ema_kimg(batch),
            ema_rampup=config.ema.rampup,
            ada=as_ada_config(config.ada),
        )


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Everything the phases need besides the state: config, system, modules, optimisers."""

    config: ml_collections.ConfigDict
    system: System
    networks: Networks
    optimizers: Optimizers
    settings: StepSettings

    @property
    def has_r1(self) -> bool:
        return self.settings.adversarial == "ns_r1" and self.settings.r1_gamma > 0

    @property
    def has_estimator_phase(self) -> bool:
        return self.networks.estimator is not None and self.system.estimator_loss is not None


def sanitize_gradients(grads):
    """Replaces non-finite gradient entries as the reference does (`nan_to_num`)."""
    return jax.tree.map(lambda g: jnp.nan_to_num(g, **NAN_TO_NUM), grads)


def apply_gradients(optimizer, grads, opt_state, params):
    """One optimiser update with sanitised `grads`: (new params, new optimiser state)."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def generate(trainer: Trainer, g_params, g_buffers, key, update_w_avg=True):
    """G forward for one phase: (layers, layers as D sees them, new buffers)."""
    settings = trainer.settings
    z_key, mix_key, cut_key, prob_key, noise_key, perturb_key = jax.random.split(key, 6)
    z = jax.random.normal(z_key, settings.latent_shape)
    mixing = {}
    if settings.style_mixing_prob > 0:
        cutoff = jax.random.randint(cut_key, (), 1, settings.num_ws)
        use = jax.random.uniform(prob_key, ()) < settings.style_mixing_prob
        mixing = dict(
            mixing_z=jax.random.normal(mix_key, settings.latent_shape),
            mixing_cutoff=jnp.where(use, cutoff, settings.num_ws),
        )
    layers, updates = trainer.networks.generator.apply(
        generator_variables(g_params, g_buffers),
        z,
        update_w_avg=update_w_avg,
        mutable=["buffers"],
        rngs={"noise": noise_key},
        **mixing,
    )
    perturbed = layers
    if trainer.system.perturb is not None:
        perturbed = trainer.system.perturb(trainer.config, perturb_key, layers)
    return layers, perturbed, {**g_buffers, **updates}


def discriminate(trainer: Trainer, d_params, images, key, p):
    """D logits [N] of `images` [N, R, R, 3] through ADA with probability `p`."""
    ada = trainer.settings.ada
    if ada.mode != "noaug":
        images = augment(images, key, p, config=ada)
    return trainer.networks.discriminator.apply({"params": d_params}, images)


def estimator_apply(trainer: Trainer, estimator_params):
    """`conditions -> outputs` of the learned estimator with these parameters, or None."""
    if trainer.networks.estimator is None:
        return None
    return lambda conditions: trainer.networks.estimator.apply(
        {"params": estimator_params}, conditions
    )


def g_main(trainer: Trainer, state: TrainState, keys) -> tuple[dict, Metrics]:
    """G main: the adversarial loss of fakes through D plus the system's terms; one Adam step.
    Returns ({'g_params', 'g_buffers', 'g_opt_state'}, metrics)."""
    g_key, aug_key, loss_key = keys

    def loss_fn(g_params):
        layers, perturbed, buffers = generate(trainer, g_params, state.g_buffers, g_key)
        fake_logits = discriminate(
            trainer, state.d_params, perturbed["composite"], aug_key, state.ada.p
        )
        adversarial = jnp.mean(
            gan_losses.generator_adversarial_loss(
                fake_logits, loss_type=trainer.settings.adversarial
            )
        )
        inputs = LossInputs(
            layers=layers,
            perturbed=perturbed,
            cur_nimg=state.images_seen,
            key=loss_key,
            estimator_apply=estimator_apply(trainer, state.estimator_params),
        )
        system_total, system_metrics = trainer.system.generator_loss(trainer.config, inputs)
        metrics = {
            "g/adversarial": adversarial,
            "scores/fake_g": jnp.mean(fake_logits),
            **system_metrics,
        }
        return adversarial + system_total, (metrics, buffers)

    (total, (metrics, buffers)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    grads = sanitize_gradients(grads)
    g_params, g_opt_state = apply_gradients(
        trainer.optimizers.generator, grads, state.g_opt_state, state.g_params
    )
    metrics.update({"g/total": total, "grad_norm/g": optax.global_norm(grads)})
    return dict(g_params=g_params, g_buffers=buffers, g_opt_state=g_opt_state), metrics


def d_main(trainer: Trainer, state: TrainState, fake_images, real_images, keys):
    """D main on detached fakes and the reals; one Adam step and the real signs for ADA.
    Returns ({'d_params', 'd_opt_state', 'ada'}, metrics)."""
    fake_key, real_key, gp_key = keys
    p, settings = state.ada.p, trainer.settings

    def loss_fn(d_params):
        fake_logits = discriminate(trainer, d_params, fake_images, fake_key, p)
        real_logits = discriminate(trainer, d_params, real_images, real_key, p)
        loss = jnp.mean(
            gan_losses.discriminator_adversarial_loss(
                real_logits, fake_logits, loss_type=settings.adversarial
            )
        )
        if settings.adversarial == "wgan_gp":
            penalty = gan_losses.wgan_gradient_penalty(
                gp_key,
                lambda x: discriminate(trainer, d_params, x, real_key, p),
                real_images,
                fake_images,
            )
            loss = loss + settings.wgan_gp_weight * jnp.mean(penalty)
        return loss, (fake_logits, real_logits)

    (loss, (fake_logits, real_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.d_params
    )
    grads = sanitize_gradients(grads)
    d_params, d_opt_state = apply_gradients(
        trainer.optimizers.discriminator, grads, state.d_opt_state, state.d_params
    )
    metrics = {
        "d/loss": loss,
        "scores/fake": jnp.mean(fake_logits),
        "scores/real": jnp.mean(real_logits),
        "d/accuracy": 0.5 * (jnp.mean(real_logits > 0) + jnp.mean(fake_logits < 0)),
        "signs/real": jnp.mean(jnp.sign(real_logits)),
        "grad_norm/d": optax.global_norm(grads),
    }
    ada = accumulate_real_signs(state.ada, real_logits)
    return dict(d_params=d_params, d_opt_state=d_opt_state, ada=ada), metrics


def estimator_phase(trainer: Trainer, state: TrainState, layers):
    """The learned conditional's loss on the D-phase layers (stop-gradient), D's Adam settings.
    Returns ({'estimator_params', 'estimator_opt_state'}, metrics)."""
    frozen = jax.tree.map(jax.lax.stop_gradient, layers)

    def loss_fn(params):
        return trainer.system.estimator_loss(
            trainer.config, estimator_apply(trainer, params), frozen
        )

    loss, grads = jax.value_and_grad(loss_fn)(state.estimator_params)
    params, opt_state = apply_gradients(
        trainer.optimizers.estimator,
        sanitize_gradients(grads),
        state.estimator_opt_state,
        state.estimator_params,
    )
    return dict(estimator_params=params, estimator_opt_state=opt_state), {"estimator/nll": loss}


def ema_and_counters(trainer: Trainer, before: TrainState, after: TrainState, finite):
    """G's EMA (the ramped half-life), ADA's adjustment, the step and image counters and the
    first non-finite step. `before` is the state at the start of the step."""
    settings = trainer.settings
    beta = ema_beta(
        before.images_seen,
        batch_size=settings.batch_size,
        ema_kimg=settings.ema_kimg,
        ema_rampup=settings.ema_rampup,
    )
    g_ema_params = jax.tree.map(
        lambda param, ema: param + beta * (ema - param), after.g_params, before.g_ema_params
    )
    ada = update_ada_state(
        after.ada, before.step + 1, batch_size=settings.batch_size, config=settings.ada
    )
    nonfinite_step = jnp.where(
        (before.nonfinite_step < 0) & ~finite, before.step, before.nonfinite_step
    )
    state = after.replace(
        step=before.step + 1,
        images_seen=before.images_seen + settings.batch_size,
        g_ema_params=g_ema_params,
        g_ema_buffers=after.g_buffers,  # buffers are copied from G each step (reference)
        ada=ada,
        nonfinite_step=nonfinite_step,
    )
    return state, {"ada/p": ada.p, "ema/beta": beta}


def g_phase(trainer: Trainer, state: TrainState, keys) -> tuple[TrainState, Metrics]:
    """G main against `state`'s D: the state with G's parameters, buffers and Adam updated.
    `keys`: (z, augmentation, loss) keys."""
    g_update, metrics = g_main(trainer, state, keys)
    return state.replace(**g_update), metrics


def d_phase(trainer: Trainer, state: TrainState, real_images, keys):
    """Fakes of `state`'s G (detached), then D main: (state with D, its Adam, G's buffers and
    the ADA statistics updated, the fakes' layers, metrics). `keys`: (z, fake augmentation,
    real augmentation, gradient-penalty) keys."""
    d_key, fake_key, real_key, gp_key = keys
    layers, perturbed, g_buffers = generate(trainer, state.g_params, state.g_buffers, d_key)
    state = state.replace(g_buffers=g_buffers)
    fake_images = jax.lax.stop_gradient(perturbed["composite"])
    d_update, metrics = d_main(
        trainer, state, fake_images, real_images, (fake_key, real_key, gp_key)
    )
    return state.replace(**d_update), layers, metrics


def phase_keys(state: TrainState) -> tuple[tuple, tuple]:
    """The keys of G main (z, augmentation, loss) and of the D phase (z, fake and real
    augmentation, gradient penalty) at `state.step`, whatever their order."""
    keys = jax.random.split(jax.random.fold_in(state.key, state.step), NUM_PHASE_KEYS)
    g_key, g_aug_key, loss_key, d_key, d_aug_fake, d_aug_real, _r1_key, gp_key = keys
    return (g_key, g_aug_key, loss_key), (d_key, d_aug_fake, d_aug_real, gp_key)


def main_phase(trainer: Trainer, state: TrainState, real_images) -> tuple[TrainState, Metrics]:
    """G main then D main on fakes of the updated G (or, with `settings.d_step_first`, D main on
    fakes of the current G then G main against the updated D: each phase sees the other's
    update, as the reference runs them in sequence), the estimator phase, EMA, ADA, counters."""
    g_keys, d_keys = phase_keys(state)
    if trainer.settings.d_step_first:
        after, d_layers, d_metrics = d_phase(trainer, state, real_images, d_keys)
        after, g_metrics = g_phase(trainer, after, g_keys)
    else:
        after, g_metrics = g_phase(trainer, state, g_keys)
        after, d_layers, d_metrics = d_phase(trainer, after, real_images, d_keys)
    metrics = {**g_metrics, **d_metrics}
    if trainer.has_estimator_phase:
        e_update, e_metrics = estimator_phase(trainer, after, d_layers)
        after = after.replace(**e_update)
        metrics.update(e_metrics)
    finite = jnp.isfinite(g_metrics["g/total"]) & jnp.isfinite(d_metrics["d/loss"])
    new_state, counter_metrics = ema_and_counters(trainer, state, after, finite)
    return new_state, {**metrics, **counter_metrics}


def r1_phase(trainer: Trainer, state: TrainState, real_images) -> tuple[TrainState, Metrics]:
    """D reg after the main phase of step `state.step - 1`: R1 on the reals (through ADA), its
    own Adam update of D, the signs of D(real) into the ADA statistics."""
    key = jax.random.fold_in(state.key, state.step - 1)
    r1_aug_key = jax.random.split(key, NUM_PHASE_KEYS)[6]  # the main phase uses the others
    settings = trainer.settings

    def loss_fn(d_params):
        penalty, logits = gan_losses.r1_penalty_and_logits(
            lambda x: discriminate(trainer, d_params, x, r1_aug_key, state.ada.p), real_images
        )
        loss = gan_losses.lazy_r1_loss(
            penalty, gamma=settings.r1_gamma, interval=settings.r1_interval
        )
        return jnp.mean(loss), (jnp.mean(penalty), logits)

    (_, (penalty, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt_state = apply_gradients(
        trainer.optimizers.discriminator,
        sanitize_gradients(grads),
        state.d_opt_state,
        state.d_params,
    )
    new_state = state.replace(
        d_params=d_params, d_opt_state=d_opt_state, ada=accumulate_real_signs(state.ada, logits)
    )
    return new_state, {"d/r1_penalty": penalty}
