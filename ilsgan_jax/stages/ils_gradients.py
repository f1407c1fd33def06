"""`--mode=ils_gradients`: how much of the generator's training signal the ILS term carries in a
trained run, and how low the run's layers keep the ILS bound.

For each run (`label=workdir`, the newest checkpoint) and `num_batches` fresh batches of the
training generator (not the EMA: these are the parameters the gradients update), the generator
loss of the G main phase is split into its three parts, each differentiated on its own:

- `adversarial`: softplus(-D(A(x~))) through the run's own D and ADA strength;
- `mask_terms`: the binarisation and minimum-size losses (the system's loss with ILS off);
- `ils`: the ILS bound at weight 1 (its two CLUB pair bounds summed), on the unperturbed layers.

The training gradient is `adversarial + mask_terms + sigma * ils`; the report gives each part's
gradient norm over all generator parameters and per network (`foreground`: the net that also
draws the mask, `background`), the cosine between the ILS and the adversarial gradients, and the
ratio `sigma * |ils| / |adversarial|` at the warm-up weight and at the full weight. The runs are
restored with `config` with ILS switched on, so ILS on and off runs are measured alike.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from ilsgan_jax.objectives import gan_losses
from ilsgan_jax.objectives.ils import ils_term
from ilsgan_jax.stages import atomic
from ilsgan_jax.systems import LossInputs
from ilsgan_jax.train import phases
from ilsgan_jax.train.restore import restore_train_state
from ilsgan_jax.train.step import make_trainer

PARTS = ("adversarial", "mask_terms", "ils")
NETWORKS = ("foreground", "background")  # LayeredGenerator's two StyleGenerators


def _with_ils(config: ml_collections.ConfigDict, enabled: bool) -> ml_collections.ConfigDict:
    copy = ml_collections.ConfigDict(config.to_dict())
    copy.loss.ils.enabled = enabled
    return copy


def loss_parts_fn(config: ml_collections.ConfigDict, trainer: phases.Trainer):
    """`(g_params, g_buffers, d_params, ada_p, key) -> {part: [] float32}` plus the two ILS pair
    bounds ('ils_pairs', [2]): the G main phase's loss split into PARTS, on one batch drawn
    with `key` exactly as `phases.g_main` draws it."""
    no_ils = _with_ils(config, False)
    ils = config.loss.ils

    def parts(g_params, g_buffers, d_params, ada_p, key):
        g_key, aug_key, loss_key = jax.random.split(key, 3)
        layers, perturbed, _ = phases.generate(trainer, g_params, g_buffers, g_key)
        logits = phases.discriminate(trainer, d_params, perturbed["composite"], aug_key, ada_p)
        adversarial = jnp.mean(
            gan_losses.generator_adversarial_loss(logits, loss_type=trainer.settings.adversarial)
        )
        inputs = LossInputs(
            layers=layers,
            perturbed=perturbed,
            cur_nimg=jnp.zeros((), jnp.int32),
            key=loss_key,
            estimator_apply=None,
        )
        mask_terms, _ = trainer.system.generator_loss(no_ils, inputs)
        bound = ils_term(
            loss_key,
            layers["fg_rgb"],
            layers["bg_rgb"],
            layers["mask"],
            sigma=1.0,
            estimator=ils.estimator,
            neg_weight=ils.neg_weight,
        )
        return {
            "adversarial": adversarial,
            "mask_terms": mask_terms,
            "ils": bound.loss,
            "ils_pairs": bound.pair_bounds,
            "mask_coverage": jnp.mean(layers["mask"]),
        }

    return parts


def _norms(grads) -> dict[str, jnp.ndarray]:
    return {
        "all": optax.global_norm(grads),
        **{name: optax.global_norm(grads[name]) for name in NETWORKS if name in grads},
    }


def probe_fn(config: ml_collections.ConfigDict, trainer: phases.Trainer):
    """A jitted `(g_params, g_buffers, d_params, ada_p, key) -> stats` of one batch: each part's
    value, its gradient norms (`_norms`), the cosine of the ILS and adversarial gradients, the
    pair bounds and the mask coverage."""
    parts = loss_parts_fn(config, trainer)

    def one_part(name):
        def value(g_params, *rest):
            out = parts(g_params, *rest)
            return out[name], out

        return jax.value_and_grad(value, has_aux=True)

    @jax.jit
    def probe(g_params, g_buffers, d_params, ada_p, key):
        args = (g_buffers, d_params, ada_p, key)
        grads, stats = {}, {}
        for name in PARTS:
            (_, out), grads[name] = one_part(name)(g_params, *args)
            stats[name] = out[name]
            stats[f"grad_norm/{name}"] = _norms(grads[name])
        flat = {name: _flatten(grads[name]) for name in PARTS}
        stats["cosine/ils_adversarial"] = jnp.dot(flat["ils"], flat["adversarial"]) / (
            jnp.linalg.norm(flat["ils"]) * jnp.linalg.norm(flat["adversarial"]) + 1e-12
        )
        stats["ils_pairs"] = out["ils_pairs"]  # the same batch in every part
        stats["mask_coverage"] = out["mask_coverage"]
        return stats

    return probe


def _flatten(tree) -> jnp.ndarray:
    return jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(tree)])


def _mean(batches: list[dict]) -> dict:
    """The element-wise mean of the batches' stats, as Python floats and lists."""
    mean = jax.tree.map(lambda *values: np.mean(np.stack(values), axis=0), *batches)
    return jax.tree.map(lambda value: value.tolist(), mean)


def probe_run(config: ml_collections.ConfigDict, probe, state, step: int, num_batches: int) -> dict:
    """The report of one run's restored `state` (checkpoint `step`): the means over
    `num_batches` batches of `probe` (`probe_fn`), the checkpoint's step and kimg, and the
    gradient ratios at the schedule's two weights."""
    keys = jax.random.split(jax.random.key(config.seed + 1), num_batches)
    batches = [
        jax.device_get(probe(state.g_params, state.g_buffers, state.d_params, state.ada.p, key))
        for key in keys
    ]
    report = _mean(batches)
    adversarial_norm = report["grad_norm/adversarial"]["all"]
    ils = config.loss.ils
    report["ratio/ils_over_adversarial"] = {
        f"sigma={sigma:g}": sigma * report["grad_norm/ils"]["all"] / adversarial_norm
        for sigma in (ils.initial_sigma, ils.sigma)
    }
    report.update(
        checkpoint_step=int(step),
        kimg=int(jax.device_get(state.images_seen)) / 1000,
        num_batches=num_batches,
        batch_size=int(config.train.batch_size),
    )
    return report


def write_ils_gradients(
    config: ml_collections.ConfigDict, runs: list[tuple[str, str]], output: str, num_batches=8
) -> dict:
    """`probe_run` of every `(label, workdir)` in `runs` (newest checkpoint; one compiled probe
    for all, the runs share `config`'s networks); writes `{label: report}` as JSON to `output`
    and returns it."""
    config = _with_ils(config, True)
    probe, reports = None, {}
    for label, workdir in runs:
        state, step, networks = restore_train_state(config, workdir)
        if probe is None:
            probe = probe_fn(config, make_trainer(config, networks=networks))
        reports[label] = probe_run(config, probe, state, step, num_batches)
        logging.info("%s: %s", label, json.dumps(reports[label]))
    if jax.process_index() == 0:
        atomic.write_json(output, reports)
    return reports
