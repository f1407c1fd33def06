"""PerturbGAN's segmenter: an encoder E that inverts the frozen EMA generator, masks from G(E(x)).

Training (`train_encoder`) uses generated samples only: `z ~ N(0, I)`, `x = G(z)` composite
(constant noise, truncation 1, no perturbation), loss
`latent_weight * mean (E(x) - z)^2 + reconstruction_weight * mean |G(E(x)) - x|`, Adam; the
generator never changes. Segmentation (`encoder_masks`): `mask(G(E(x))) > 0.5` for real images.
`score_encoder` is the `--mode=train_encoder` stage: restore the GAN, train (or load) E, score
its masks on the real evaluation split with the metrics of the U-Net route, and write
`workdir/encoder/{weights/, report.json, previews.png}` (weights/: an orbax directory; older runs'
`encoder/encoder.msgpack` is still read). The workdir may be local or a URL (gs://...).

The encoder stage runs on one device (the default one): it is small next to the GAN.
"""

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath

from ilsgan_jax.data import cub_split
from ilsgan_jax.data.eval_split import load_eval_split
from ilsgan_jax.evaluate import samples as sample_grids
from ilsgan_jax.evaluate import seg_metrics
from ilsgan_jax.models.encoder import Encoder, build_encoder
from ilsgan_jax.stages import atomic, weights
from ilsgan_jax.train.restore import restore_train_state
from ilsgan_jax.train.state import generator_variables

History = list[dict[str, float]]


def frozen_generator_variables(state) -> dict:
    """The EMA generator's variables as host arrays (`{'params': ..., **buffers}`)."""
    return jax.device_get(generator_variables(state.g_ema_params, state.g_ema_buffers))


def _generator_fn(networks) -> Callable[[dict, jnp.ndarray], dict]:
    """(variables, z [N, z_dim]) -> layers dict; constant noise, so G is deterministic."""

    def generate(variables, z):
        return networks.generator.apply(variables, z, noise_mode="const")

    return generate


def _check_encoder_config(config: ml_collections.ConfigDict) -> None:
    enc = config.encoder
    for field in ("num_steps", "batch_size", "eval_batch_size", "log_every_steps"):
        if enc[field] < 1:
            raise ValueError(f"config.encoder.{field} must be >= 1, got {enc[field]}")
    if enc.learning_rate <= 0:
        raise ValueError(f"config.encoder.learning_rate must be > 0, got {enc.learning_rate}")
    for field in ("latent_weight", "reconstruction_weight"):
        if enc[field] < 0:
            raise ValueError(f"config.encoder.{field} must be >= 0, got {enc[field]}")
    if enc.latent_weight == 0 and enc.reconstruction_weight == 0:
        raise ValueError("config.encoder.latent_weight and reconstruction_weight are both 0")


def make_inversion_losses(encoder: Encoder, networks, *, latent_weight, reconstruction_weight):
    """Returns `losses(encoder_params, g_variables, z) -> (total, metrics)`.

    Args of the returned function:
      encoder_params: E's parameters.
      g_variables: the frozen generator's variables.
      z: [N, z_dim] float32 latents of the training samples.
    Metrics: 'latent_mse' mean_{N,D} (E(x) - z)^2; 'reconstruction_l1' mean |G(E(x)) - x| of the
    composite (x in [-1, 1]); 'mask_iou' per-image IoU of mask(G(E(x))) > 0.5 against
    mask(G(z)) > 0.5, averaged.
    """
    generate = _generator_fn(networks)

    def losses(encoder_params, g_variables, z):
        target = jax.tree.map(jax.lax.stop_gradient, generate(g_variables, z))
        z_hat = encoder.apply({"params": encoder_params}, target["composite"])
        latent_mse = jnp.mean(jnp.square(z_hat - z))
        reconstruction = generate(g_variables, z_hat)
        reconstruction_l1 = jnp.mean(jnp.abs(reconstruction["composite"] - target["composite"]))
        total = latent_weight * latent_mse
        if reconstruction_weight > 0:
            total = total + reconstruction_weight * reconstruction_l1
        mask_iou = jnp.mean(
            seg_metrics.per_image_iou(
                reconstruction["mask"][..., 0] > 0.5, target["mask"][..., 0] > 0.5
            )
        )
        metrics = {
            "loss": total,
            "latent_mse": latent_mse,
            "reconstruction_l1": reconstruction_l1,
            "mask_iou": mask_iou,
        }
        return total, metrics

    return losses


def train_encoder(
    config: ml_collections.ConfigDict, state, networks, *, steps: int | None = None, seed: int = 0
) -> tuple[dict, History]:
    """Trains E against the frozen EMA generator of `state` on generated samples.

    Args:
      config: with `config.encoder` (configs/perturbgan.py), `config.model.z_dim`,
        `config.data.resolution`.
      state: a GAN train state (its `g_ema_params`, `g_ema_buffers` are used, never changed).
      networks: `builders.build_networks(config)` (its layered generator).
      steps: Adam steps; None -> `config.encoder.num_steps`.
      seed: seed of E's initialisation, the training latents and the held-out latents.

    Returns:
      (`{'params': ...}` of E as host arrays, history): one entry at step 0, every
      `config.encoder.log_every_steps` and at the last step, each with 'step' and the metrics of
      `make_inversion_losses` on a fixed held-out batch of `config.encoder.eval_batch_size`
      generated samples.
    """
    _check_encoder_config(config)
    enc = config.encoder
    steps = enc.num_steps if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    encoder = build_encoder(config)
    z_dim, resolution = config.model.z_dim, config.data.resolution
    g_variables = frozen_generator_variables(state)
    losses = make_inversion_losses(
        encoder,
        networks,
        latent_weight=enc.latent_weight,
        reconstruction_weight=enc.reconstruction_weight,
    )
    optimizer = optax.adam(enc.learning_rate, b1=enc.beta1, b2=enc.beta2)
    init_key, train_key, eval_key = jax.random.split(jax.random.key(seed), 3)
    params = jax.jit(encoder.init)(init_key, jnp.zeros((1, resolution, resolution, 3)))["params"]
    opt_state = optimizer.init(params)
    eval_z = jax.random.normal(eval_key, (enc.eval_batch_size, z_dim))

    def train_step(params, opt_state, g_variables, step):
        z = jax.random.normal(jax.random.fold_in(train_key, step), (enc.batch_size, z_dim))
        grads, metrics = jax.grad(losses, has_aux=True)(params, g_variables, z)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    train_step = jax.jit(train_step, donate_argnums=(0, 1))
    evaluate = jax.jit(lambda params, g_variables: losses(params, g_variables, eval_z)[1])

    history: History = []

    def record(step):
        metrics = jax.device_get(evaluate(params, g_variables))
        entry = {"step": step, **{name: float(value) for name, value in metrics.items()}}
        history.append(entry)
        logging.info(
            "encoder step %d: latent_mse %.4f, reconstruction_l1 %.4f, mask_iou %.3f",
            step, entry["latent_mse"], entry["reconstruction_l1"], entry["mask_iou"],
        )

    record(0)
    for step in range(steps):
        params, opt_state, _ = train_step(params, opt_state, g_variables, jnp.int32(step))
        done = step + 1
        if done % enc.log_every_steps == 0 or done == steps:
            record(done)
    return {"params": jax.device_get(params)}, history


def encoder_masks(
    config: ml_collections.ConfigDict,
    encoder_variables: dict,
    state,
    networks,
    images: np.ndarray,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Foreground masks of real images read from the generator: `mask(G(E(x))) > 0.5`.

    Args:
      images: [N, R, R, 3] float32 in [-1, 1], R = config.data.resolution.
      batch_size: images per jitted call (the last batch is padded); None ->
        `config.encoder.eval_batch_size`.
    Returns:
      [N, R, R] bool.
    """
    encoder = build_encoder(config)
    resolution = config.data.resolution
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (resolution, resolution, 3):
        raise ValueError(
            f"images must be [N, {resolution}, {resolution}, 3] (config.data.resolution), "
            f"got {images.shape}"
        )
    batch_size = batch_size or config.encoder.eval_batch_size
    g_variables = frozen_generator_variables(state)
    generate = _generator_fn(networks)

    @jax.jit
    def predict(encoder_params, g_variables, batch):
        z_hat = encoder.apply({"params": encoder_params}, batch)
        return generate(g_variables, z_hat)["mask"][..., 0] > 0.5

    masks = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        count = batch.shape[0]
        if count < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - count, *batch.shape[1:]),
                                                    np.float32)])
        masks.append(np.asarray(predict(encoder_variables["params"], g_variables, batch))[:count])
    return np.concatenate(masks) if masks else np.zeros((0, resolution, resolution), bool)


# ----------------------------------------------------------------------------------------------
# Stage: --mode=train_encoder
# ----------------------------------------------------------------------------------------------
def _encoder_dir(workdir: str) -> epath.Path:
    return epath.Path(workdir) / "encoder"


def encoder_weights_dir(workdir: str) -> epath.Path:
    """`workdir/encoder/weights`: the orbax directory of E's variables."""
    return _encoder_dir(workdir) / "weights"


def _legacy_encoder_file(workdir: str) -> epath.Path:
    return _encoder_dir(workdir) / "encoder.msgpack"


def save_encoder(workdir: str, encoder_variables: dict) -> str:
    """Writes E's variables into `encoder_weights_dir(workdir)` with orbax (atomically; every
    process calls it); returns the directory."""
    return weights.save(encoder_weights_dir(workdir), encoder_variables)


def load_encoder(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """E's variables (NumPy leaves) from `encoder_weights_dir(workdir)`, or from an older run's
    `encoder/encoder.msgpack`. FileNotFoundError if there are none; ValueError naming the path
    if they cannot be read."""
    resolution = config.data.resolution
    template = jax.eval_shape(
        build_encoder(config).init, jax.random.key(0), jnp.zeros((1, resolution, resolution, 3))
    )
    return weights.load(
        encoder_weights_dir(workdir),
        _legacy_encoder_file(workdir),
        template,
        what="encoder",
        remedy="--mode=train_encoder --overwrite",
    )


def score_encoder(
    config: ml_collections.ConfigDict, workdir: str, *, retrain: bool = False
) -> dict:
    """Restores the GAN from `workdir`, trains E (or loads its saved weights unless `retrain`),
    scores `mask(G(E(x)))` on the real evaluation split with the U-Net route's metrics
    (`SegmentationAccumulator`) and writes `encoder/report.json` (and
    `encoder/previews.png`: test images, ground truth, predicted masks, reconstructions).
    Returns the report."""
    start = time.time()
    state, gan_step, networks = restore_train_state(config, workdir)
    history: History = []
    saved = weights.exist(encoder_weights_dir(workdir), _legacy_encoder_file(workdir))
    if saved and not retrain:
        encoder_variables = load_encoder(config, workdir)
        logging.info("Loaded the encoder from %s", _encoder_dir(workdir))
    else:
        encoder_variables, history = train_encoder(
            config, state, networks, seed=config.encoder.seed
        )
        save_encoder(workdir, encoder_variables)  # every process: orbax synchronises them
    test_images, test_masks = load_eval_split(config)
    predicted = encoder_masks(config, encoder_variables, state, networks, test_images)
    accumulator = seg_metrics.SegmentationAccumulator()
    accumulator.add(predicted, test_masks)
    report = {
        "data": config.data.name,
        "resolution": config.data.resolution,
        "gan_step": int(gan_step),
        "num_test_images": int(test_images.shape[0]),
        "encoder_steps": int(history[-1]["step"]) if history else None,
        "encoder_history": history,
        "test": {name: float(value) for name, value in accumulator.result().items()},
        "all_foreground_iou": seg_metrics.all_foreground_baseline(test_masks),
        "encoder_seconds": time.time() - start,
        **cub_split.report_fields(config.data),
    }
    if jax.process_index() == 0:
        _write_previews(config, workdir, encoder_variables, state, networks, test_images[:16],
                        test_masks[:16], predicted[:16])
        atomic.write_json(_encoder_dir(workdir) / "report.json", report)
    return report


def _write_previews(config, workdir, encoder_variables, state, networks, images, masks, predicted):
    encoder, generate = build_encoder(config), _generator_fn(networks)
    reconstruct = jax.jit(
        lambda e_vars, g_vars, x: generate(g_vars, encoder.apply(e_vars, x))["composite"]
    )
    reconstruction = jax.device_get(
        reconstruct(encoder_variables, frozen_generator_variables(state), jnp.asarray(images))
    )
    def as_rgb(mask):
        return np.repeat(np.asarray(mask, np.float32)[..., None] * 2 - 1, 3, axis=-1)
    rows = {
        "image": images,
        "ground_truth": as_rgb(masks > 0.5),
        "prediction": as_rgb(predicted),
        "reconstruction": np.clip(reconstruction, -1, 1),
    }
    grid = sample_grids.make_grid(rows, order=tuple(rows))
    return sample_grids.save_png(grid, _encoder_dir(workdir) / "previews.png")
