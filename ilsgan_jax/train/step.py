"""The ILSGAN train step: G main, D main, lazy R1 (every `r1_interval`), EMA, ADA statistics.

`make_train_step(config, networks, optimizers)` returns a pure function
`train_step(state, real_images) -> (state, metrics)`; `jit_train_step` compiles it over a
`Mesh(('data',))` with the state replicated and donated and the batch sharded on 'data'. XLA
inserts the cross-device reductions (batch means, the ILS permutation's gather); minibatch-std
groups are contiguous runs of samples that never straddle a device (see `minibatch_std`).

Phase order, keys and schedules follow StyleGAN2-ADA / ILSGAN's training loop: each phase draws
its own z and perturbation; `cur_nimg` (images seen before this step) drives the ILS sigma and EMA
schedules; the R1 phase runs when `step % r1_interval == 0` with its own Adam update; ADA's p is
adjusted when `(step + 1) % interval == 0` from the signs of D(real) in D main and R1.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilsgan_jax import compiler_options as compiler_options_lib
from ilsgan_jax.augment.ada import augment
from ilsgan_jax.augment.config import as_ada_config
from ilsgan_jax.augment.controller import accumulate_real_signs, update_ada_state
from ilsgan_jax.evaluate import seg_metrics
from ilsgan_jax.models.synthesis import num_ws
from ilsgan_jax.objectives import gan_losses, instance_losses, mask_losses
from ilsgan_jax.objectives.ils import estimator_nll, ils_term
from ilsgan_jax.objectives.perturbation import perturb_layers, sample_perturbation
from ilsgan_jax.objectives.schedules import (
    ILS_WARMUP_KIMG,
    default_ema_kimg,
    ema_beta,
    ils_sigma,
)
from ilsgan_jax.train.builders import Networks, Optimizers, latent_shape_for, r1_gamma
from ilsgan_jax.train.state import TrainState, generator_variables

Metrics = dict[str, jnp.ndarray]
NAN_TO_NUM = dict(nan=0.0, posinf=1e5, neginf=-1e5)  # the reference's gradient sanitising


def sanitize_gradients(grads):
    """Replaces non-finite gradient entries as the reference does (`nan_to_num`)."""
    return jax.tree.map(lambda g: jnp.nan_to_num(g, **NAN_TO_NUM), grads)


def global_norm(tree) -> jnp.ndarray:
    return optax.global_norm(tree)


def mask_metrics(mask: jnp.ndarray) -> Metrics:
    """Logged statistics of generated masks [N, H, W, 1] in [0, 1]: 'mask/mean' (coverage),
    'mask/binariness' (mean min(m, 1 - m): 0 binary, 0.5 all 0.5) and the fractions of empty
    (coverage < 1%) and full (> 99%) masks, the two ways layered GANs collapse."""
    stats = seg_metrics.mask_statistics(mask)
    return {"mask/mean": stats["coverage"], "mask/binariness": stats["binariness"],
            "mask/empty_fraction": stats["empty_fraction"],
            "mask/full_fraction": stats["full_fraction"]}


def make_train_phases(
    config: ml_collections.ConfigDict, networks: Networks, optimizers: Optimizers
) -> "TrainPhases":
    """Builds the pure phase functions of an iteration for every system of the framework."""
    loss_cfg, ils_cfg = config.loss, config.loss.ils
    ada_cfg = as_ada_config(config.ada)
    batch = config.train.batch_size
    resolution = config.data.resolution
    perturb = loss_cfg.xint_max > 0 or loss_cfg.bg_contrast > 0
    gamma = r1_gamma(config)
    r1_interval = int(loss_cfg.r1_interval)
    adversarial = loss_cfg.adversarial
    ema_kimg = config.ema.kimg if config.ema.kimg > 0 else default_ema_kimg(batch)
    n_ws = num_ws(resolution)
    system = config.get("system", "ilsgan")
    layered = system != "stylegan2"  # fg/mask/bg layers exist
    instances = system == "independence_prior"  # K instance layers: [N, K, ...]
    latent_shape = latent_shape_for(config, batch)
    # Background min-size term inside min_size_loss: the ILSGAN reference adds it when the
    # perturbation is off; Labels4Free has only the foreground term (its own background-area term
    # is `bg_area_weight * relu(bg_area - (1 - mean m))` below).
    symmetric_min_size = {"auto": not perturb, "on": True, "off": False}[
        loss_cfg.get("background_min_size", "auto")
    ]
    bg_area_weight = loss_cfg.get("bg_area_weight", 0.0)

    def generate(g_params, g_buffers, key, update_w_avg=True):
        """G forward for one phase: unperturbed layers, perturbed layers, new buffers."""
        z_key, mix_key, cut_key, prob_key, noise_key, eps_key = jax.random.split(key, 6)
        z = jax.random.normal(z_key, latent_shape)
        mixing = {}
        if loss_cfg.style_mixing_prob > 0:
            cutoff = jax.random.randint(cut_key, (), 1, n_ws)
            use = jax.random.uniform(prob_key, ()) < loss_cfg.style_mixing_prob
            mixing = dict(
                mixing_z=jax.random.normal(mix_key, latent_shape),
                mixing_cutoff=jnp.where(use, cutoff, n_ws),
            )
        layers, updates = networks.generator.apply(
            generator_variables(g_params, g_buffers),
            z,
            update_w_avg=update_w_avg,
            mutable=["buffers"],
            rngs={"noise": noise_key},
            **mixing,
        )
        perturbed = layers
        if perturb and layered and not instances:
            eps = sample_perturbation(
                eps_key, batch, xint_max=loss_cfg.xint_max, bg_contrast=loss_cfg.bg_contrast
            )
            perturbed = perturb_layers(
                layers, eps, xint_max=loss_cfg.xint_max, bg_contrast=loss_cfg.bg_contrast
            )
        return layers, perturbed, {**g_buffers, **updates}

    def discriminate(d_params, images, key, p):
        if ada_cfg.mode != "noaug":
            images = augment(images, key, p, config=ada_cfg)
        return networks.discriminator.apply({"params": d_params}, images)

    def estimator_fn(estimator_params):
        if networks.estimator is None:
            return None
        return lambda conditions: networks.estimator.apply(
            {"params": estimator_params}, conditions
        )

    def layer_losses(layers, perturbed, sigma, estimator_params, ils_key):
        """Mask regularisers and ILS for the layered systems: (scalar total, logged terms)."""
        zero = jnp.zeros((), jnp.float32)
        aux = {"g/binarisation": zero, "g/min_size": zero, "g/ils": zero,
               "g/ils_bg_invis_given_fg_vis": zero, "g/ils_fg_invis_given_bg_vis": zero,
               "mask/mean": zero, "mask/binariness": zero, "mask/empty_fraction": zero,
               "mask/full_fraction": zero}
        if not layered:
            return zero, aux
        if instances:
            return instance_layer_losses(layers, sigma, estimator_params, ils_key, aux)
        mask = perturbed["mask"]  # the regularisers see the perturbed mask (reference)
        bin_loss = mask_losses.binarisation_loss(mask)
        size_loss = mask_losses.min_size_loss(
            mask, min_size=loss_cfg.min_msize, symmetric=symmetric_min_size
        )
        total = jnp.mean(loss_cfg.bin_weight * bin_loss + loss_cfg.msize_weight * size_loss)
        if bg_area_weight > 0:  # Labels4Free's minimum background area
            bg_area_loss = jax.nn.relu(loss_cfg.bg_area - (1.0 - jnp.mean(mask, axis=(1, 2, 3))))
            total = total + bg_area_weight * jnp.mean(bg_area_loss)
            aux["g/bg_area"] = jnp.mean(bg_area_loss)
        aux.update({"g/binarisation": jnp.mean(bin_loss), "g/min_size": jnp.mean(size_loss),
                    **mask_metrics(layers["mask"])})
        if ils_cfg.enabled:  # on the unperturbed layers
            ils = ils_term(
                ils_key,
                layers["fg_rgb"],
                layers["bg_rgb"],
                layers["mask"],
                sigma=sigma,
                estimator=ils_cfg.estimator,
                neg_weight=ils_cfg.neg_weight,
                estimator_fn=estimator_fn(estimator_params),
            )
            total = total + ils.loss
            aux.update({"g/ils": ils.loss, "g/ils_bg_invis_given_fg_vis": ils.pair_bounds[0],
                        "g/ils_fg_invis_given_bg_vis": ils.pair_bounds[1]})
        return total, aux

    def instance_layer_losses(layers, sigma, estimator_params, ils_key, aux):
        """Independence-prior GAN: area penalty per instance (+ options) on K instance masks."""
        area_source = layers["provider_mask" if loss_cfg.area_mask == "provider" else "mask"]
        total = jnp.mean(instance_losses.area_penalty(area_source, weight=loss_cfg.area_weight))
        aux["g/area"] = total
        if loss_cfg.instance_bin_weight > 0:
            bin_loss = instance_losses.instance_binarisation(layers["mask"])
            total = total + loss_cfg.instance_bin_weight * jnp.mean(bin_loss)
            aux["g/binarisation"] = jnp.mean(bin_loss)
        union = layers["union_mask"]
        if loss_cfg.bin_weight > 0 or loss_cfg.msize_weight > 0:
            bin_union = mask_losses.binarisation_loss(union)
            size_union = mask_losses.min_size_loss(union, min_size=loss_cfg.min_msize)
            total = total + jnp.mean(
                loss_cfg.bin_weight * bin_union + loss_cfg.msize_weight * size_union
            )
            aux["g/min_size"] = jnp.mean(size_union)
        if ils_cfg.enabled:
            ils_loss, _ = instance_losses.pairwise_ils(
                ils_key,
                layers["bg_rgb"],
                layers["fg_rgb"],
                layers["mask"],
                sigma=sigma,
                estimator=ils_cfg.estimator,
                neg_weight=ils_cfg.neg_weight,
                estimator_fn=estimator_fn(estimator_params),
            )
            total = total + ils_loss
            aux["g/ils"] = ils_loss
        areas = instance_losses.instance_areas(layers["mask"]).mean(axis=0)
        for k in range(areas.shape[0]):
            aux[f"mask/area_instance{k}"] = areas[k]
        aux.update(mask_metrics(union))
        return total, aux

    def train_step(state: TrainState, real_images: jnp.ndarray):
        key = jax.random.fold_in(state.key, state.step)
        g_key, g_aug_key, ils_key, d_key, d_aug_fake, d_aug_real, _r1_key, gp_key = (
            jax.random.split(key, 8)
        )
        cur_nimg = state.images_seen
        p = state.ada.p
        sigma = (
            ils_sigma(
                cur_nimg,
                initial_sigma=ils_cfg.initial_sigma,
                sigma=ils_cfg.sigma,
                strategy=ils_cfg.strategy,
                warmup_kimg=ils_cfg.get("warmup_kimg", ILS_WARMUP_KIMG),
            )
            if ils_cfg.enabled
            else jnp.zeros((), jnp.float32)
        )
        metrics: Metrics = {}

        # --- G main -------------------------------------------------------------------------
        def g_loss_fn(g_params):
            layers, perturbed, buffers = generate(g_params, state.g_buffers, g_key)
            fake_logits = discriminate(state.d_params, perturbed["composite"], g_aug_key, p)
            adv = gan_losses.generator_adversarial_loss(fake_logits, loss_type=adversarial)
            layer_total, layer_aux = layer_losses(
                layers, perturbed, sigma, state.estimator_params, ils_key
            )
            total = jnp.mean(adv) + layer_total
            aux = {
                "g/adversarial": jnp.mean(adv),
                "scores/fake_g": jnp.mean(fake_logits),
                **layer_aux,
            }
            return total, (aux, buffers)

        (g_total, (g_aux, g_buffers)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
            state.g_params
        )
        g_grads = sanitize_gradients(g_grads)
        g_updates, g_opt_state = optimizers.generator.update(
            g_grads, state.g_opt_state, state.g_params
        )
        g_params = optax.apply_updates(state.g_params, g_updates)
        metrics.update(g_aux)
        metrics["g/total"] = g_total
        metrics["grad_norm/g"] = global_norm(g_grads)

        # --- D main -------------------------------------------------------------------------
        # The fakes come from the updated G (the reference runs the phases in sequence).
        d_layers, d_perturbed, g_buffers = generate(g_params, g_buffers, d_key)
        fake_images = jax.lax.stop_gradient(d_perturbed["composite"])

        def d_loss_fn(d_params):
            fake_logits = discriminate(d_params, fake_images, d_aug_fake, p)
            real_logits = discriminate(d_params, real_images, d_aug_real, p)
            loss = gan_losses.discriminator_adversarial_loss(
                real_logits, fake_logits, loss_type=adversarial
            )
            loss = jnp.mean(loss)
            if adversarial == "wgan_gp":
                penalty = gan_losses.wgan_gradient_penalty(
                    gp_key,
                    lambda x: discriminate(d_params, x, d_aug_real, p),
                    real_images,
                    fake_images,
                )
                loss = loss + loss_cfg.wgan_gp_weight * jnp.mean(penalty)
            return loss, (fake_logits, real_logits)

        (d_loss, (fake_logits, real_logits)), d_grads = jax.value_and_grad(
            d_loss_fn, has_aux=True
        )(state.d_params)
        d_grads = sanitize_gradients(d_grads)
        d_updates, d_opt_state = optimizers.discriminator.update(
            d_grads, state.d_opt_state, state.d_params
        )
        d_params = optax.apply_updates(state.d_params, d_updates)
        ada = accumulate_real_signs(state.ada, real_logits)
        metrics.update(
            {
                "d/loss": d_loss,
                "scores/fake": jnp.mean(fake_logits),
                "scores/real": jnp.mean(real_logits),
                "d/accuracy": 0.5 * (jnp.mean(real_logits > 0) + jnp.mean(fake_logits < 0)),
                "signs/real": jnp.mean(jnp.sign(real_logits)),
                "grad_norm/d": global_norm(d_grads),
            }
        )

        # Learned ILS conditional: its NLL on the D-phase layers, D's hyperparameters.
        estimator_params, estimator_opt_state = state.estimator_params, state.estimator_opt_state
        if networks.estimator is not None and layered and not instances:
            frozen = jax.tree.map(jax.lax.stop_gradient, d_layers)

            def nll_fn(params):
                return estimator_nll(
                    frozen["fg_rgb"],
                    frozen["bg_rgb"],
                    frozen["mask"],
                    estimator_fn(params),
                    estimator=ils_cfg.estimator,
                    weight=ils_cfg.nll_weight,
                )

            nll, e_grads = jax.value_and_grad(nll_fn)(estimator_params)
            e_updates, estimator_opt_state = optimizers.estimator.update(
                sanitize_gradients(e_grads), estimator_opt_state, estimator_params
            )
            estimator_params = optax.apply_updates(estimator_params, e_updates)
            metrics["estimator/nll"] = nll

        # --- EMA, ADA, counters -------------------------------------------------------------
        beta = ema_beta(cur_nimg, batch_size=batch, ema_kimg=ema_kimg, ema_rampup=config.ema.rampup)
        g_ema_params = jax.tree.map(
            lambda param, ema: param + beta * (ema - param), g_params, state.g_ema_params
        )
        ada = update_ada_state(ada, state.step + 1, batch_size=batch, config=ada_cfg)
        finite = jnp.isfinite(g_total) & jnp.isfinite(d_loss)
        nonfinite_step = jnp.where(
            (state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step
        )
        metrics.update({"ada/p": ada.p, "ils/sigma": sigma, "ema/beta": beta})
        new_state = state.replace(
            step=state.step + 1,
            images_seen=state.images_seen + batch,
            g_params=g_params,
            g_buffers=g_buffers,
            g_ema_params=g_ema_params,
            g_ema_buffers=g_buffers,
            d_params=d_params,
            estimator_params=estimator_params,
            g_opt_state=g_opt_state,
            d_opt_state=d_opt_state,
            estimator_opt_state=estimator_opt_state,
            ada=ada,
            nonfinite_step=nonfinite_step,
        )
        return new_state, metrics

    r1_phase = None
    if adversarial == "ns_r1" and gamma > 0:

        def r1_phase(state: TrainState, real_images: jnp.ndarray):
            """D reg after the main phases of step `state.step - 1`: R1 on the reals (through
            ADA), its own Adam update of D, the signs of D(real) into the ADA statistics."""
            key = jax.random.fold_in(state.key, state.step - 1)
            r1_aug_key = jax.random.split(key, 8)[6]  # the main phases use the other keys
            p = state.ada.p

            def r1_loss_fn(params):
                penalty, logits = gan_losses.r1_penalty_and_logits(
                    lambda x: discriminate(params, x, r1_aug_key, p), real_images
                )
                loss = gan_losses.lazy_r1_loss(penalty, gamma=gamma, interval=r1_interval)
                return jnp.mean(loss), (jnp.mean(penalty), logits)

            (_, (penalty, logits)), grads = jax.value_and_grad(r1_loss_fn, has_aux=True)(
                state.d_params
            )
            updates, d_opt_state = optimizers.discriminator.update(
                sanitize_gradients(grads), state.d_opt_state, state.d_params
            )
            new_state = state.replace(
                d_params=optax.apply_updates(state.d_params, updates),
                d_opt_state=d_opt_state,
                ada=accumulate_real_signs(state.ada, logits),
            )
            return new_state, {"d/r1_penalty": penalty}

    return TrainPhases(main=train_step, r1=r1_phase, r1_interval=r1_interval)


class TrainPhases(NamedTuple):
    """The pure phase functions of one iteration.

    main: `(state, real_images) -> (state, metrics)`: G main, D main, (estimator), EMA, ADA.
    r1: `(state, real_images) -> (state, {'d/r1_penalty'})` run after `main` on iterations with
      `step % r1_interval == 0` (None when the loss has no lazy R1). `main` adjusts ADA's p when
      `(step + 1) % ada.interval == 0`, which on an R1 iteration (step = 0 mod 16) only happens
      for `ada.interval == 1`; otherwise counting R1's signs after `main`'s ADA update equals the
      reference's order (with interval 1 they count towards the next adjustment instead).
    """

    main: Callable
    r1: Callable | None
    r1_interval: int


def make_train_step(
    config: ml_collections.ConfigDict, networks: Networks, optimizers: Optimizers
) -> Callable[[TrainState, jnp.ndarray], tuple[TrainState, Metrics]]:
    """One pure function for a whole iteration, R1 selected with `lax.cond` on `state.step`
    (for tests and tracing). The training loop runs the phases as two compiled functions
    instead (`jit_phased_train_step`): XLA:CPU runs the `cond` version ~1.6x slower."""
    phases = make_train_phases(config, networks, optimizers)
    if phases.r1 is None:
        return phases.main

    def train_step(state: TrainState, real_images: jnp.ndarray):
        new_state, metrics = phases.main(state, real_images)

        def with_r1(current):
            updated, r1_metrics = phases.r1(current, real_images)
            return updated, r1_metrics["d/r1_penalty"]

        def without_r1(current):
            return current, jnp.full((), jnp.nan, jnp.float32)

        new_state, penalty = jax.lax.cond(
            state.step % phases.r1_interval == 0, with_r1, without_r1, new_state
        )
        return new_state, {**metrics, "d/r1_penalty": penalty}

    return train_step


class PhasedTrainStep:
    """The compiled phases of an iteration, dispatched on the host's step counter (no device
    sync): `step_fn(state, batch, step) -> (state, metrics)` with `step` = `state.step`."""

    def __init__(self, phases: TrainPhases, mesh: Mesh, compiler_options: dict | None = None):
        self._phases = phases
        self.main = jit_train_step(phases.main, mesh, compiler_options)
        self.r1 = (
            jit_train_step(phases.r1, mesh, compiler_options) if phases.r1 is not None else None
        )
        # Reported as the R1 penalty on iterations without R1 (made once: no per-step transfer).
        # Built on the devices by a jitted function: a multi-process `device_put` would compare
        # the host values across processes, and NaN != NaN.
        self._no_r1 = jax.jit(
            lambda: jnp.full((), jnp.nan, jnp.float32),
            out_shardings=NamedSharding(mesh, PartitionSpec()),
        )()

    def __call__(self, state: TrainState, real_images, step: int):
        state, metrics = self.main(state, real_images)
        if self.r1 is None:
            return state, metrics
        if step % self._phases.r1_interval == 0:
            state, r1_metrics = self.r1(state, real_images)
            return state, {**metrics, **r1_metrics}
        return state, {**metrics, "d/r1_penalty": self._no_r1}


def jit_phased_train_step(config, networks: Networks, optimizers: Optimizers, mesh: Mesh):
    """The training loop's step: `PhasedTrainStep` over `make_train_phases`, compiled with the
    config's compiler options for the mesh's platform (`compiler_options.for_devices`)."""
    return PhasedTrainStep(
        make_train_phases(config, networks, optimizers),
        mesh,
        compiler_options_lib.for_devices(config, mesh.devices.flat),
    )


def jit_train_step(
    train_step, mesh: Mesh, compiler_options: dict | None = None
) -> Callable[[TrainState, Any], tuple]:
    """Compiles the step: state replicated and donated, batch sharded on 'data', metrics
    replicated; `compiler_options` go to XLA (`jax.jit(compiler_options=...)`)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(
        train_step,
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
        compiler_options=compiler_options or None,
    )
