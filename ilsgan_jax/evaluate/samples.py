"""Sample grids of a layered generator: one image-grid writer for TensorBoard and PNG files."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ilsgan_jax.objectives.perturbation import perturb_layers, sample_perturbation
from ilsgan_jax.train.builders import latent_shape_for

# Rows of the layered grid, top to bottom.
GRID_ROWS = ("composite", "shifted_composite", "fg_rgb", "bg_rgb", "mask", "fg_over_white")


def to_uint8(images: np.ndarray) -> np.ndarray:
    """`[..., C]` float in [-1, 1] -> uint8 in [0, 255] (StyleGAN2's quantisation)."""
    return np.clip(np.floor(np.asarray(images, np.float32) * 127.5 + 128.0), 0, 255).astype(np.uint8)


def layered_rows(layers: dict, eps=None, *, xint_max=0.0, bg_contrast=0.0) -> dict:
    """Builds the grid rows from generator layers (`fg_rgb`, `mask`, `bg_rgb`, `composite`),
    all as `[N, H, W, 3]` in [-1, 1]. The shifted composite uses `eps` if the perturbation is
    on (else it repeats the composite)."""
    if "mask" not in layers:  # a plain generator: the images only
        return {"composite": layers["composite"]}
    if layers["mask"].ndim == 5:  # K instances: composite, background, each instance's layers
        rows = {"composite": layers["composite"], "bg_rgb": layers["bg_rgb"]}
        for k in range(layers["mask"].shape[1]):
            mask_k = layers["mask"][:, k]
            rows[f"fg_over_white_{k}"] = mask_k * layers["fg_rgb"][:, k] + (1.0 - mask_k)
            rows[f"mask_{k}"] = jnp.broadcast_to(mask_k * 2.0 - 1.0, layers["bg_rgb"].shape)
        return rows
    mask = layers["mask"]
    shifted = layers["composite"]
    if eps is not None and (xint_max > 0 or bg_contrast > 0):
        shifted = perturb_layers(layers, eps, xint_max=xint_max, bg_contrast=bg_contrast)[
            "composite"
        ]
    return {
        "composite": layers["composite"],
        "shifted_composite": shifted,
        "fg_rgb": layers["fg_rgb"],
        "bg_rgb": layers["bg_rgb"],
        "mask": jnp.broadcast_to(mask * 2.0 - 1.0, layers["fg_rgb"].shape),
        "fg_over_white": mask * layers["fg_rgb"] + (1.0 - mask),
    }


def make_grid(rows: dict, order=GRID_ROWS, padding: int = 1) -> np.ndarray:
    """Tiles `{name: [N, H, W, 3]}` rows (in `order`) into one uint8 image `[rows*(H+p), ...]`."""
    names = [name for name in order if name in rows] or list(rows)
    first = np.asarray(rows[names[0]])
    count, height, width, _ = first.shape
    grid = np.full(
        (len(names) * (height + padding) + padding, count * (width + padding) + padding, 3),
        255,
        np.uint8,
    )
    for r, name in enumerate(names):
        images = to_uint8(rows[name])
        for c in range(count):
            top, left = padding + r * (height + padding), padding + c * (width + padding)
            grid[top : top + height, left : left + width] = images[c]
    return grid


def save_png(image: np.ndarray, path: str) -> str:
    """Writes a uint8 `[H, W, 3]` (or `[H, W]`) image atomically (temp file + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def make_sample_fn(generator, config, num_images: int, seed: int):
    """Returns a jitted `sample(g_ema_params, g_ema_buffers) -> rows` with fixed latents and
    perturbation (so successive grids are comparable), constant noise, truncation 1."""
    z_key, eps_key = jax.random.split(jax.random.key(seed + 12345))
    z = jax.random.normal(z_key, latent_shape_for(config, num_images))
    loss = config.loss
    eps = None
    if loss.xint_max > 0 or loss.bg_contrast > 0:
        eps = sample_perturbation(
            eps_key, num_images, xint_max=loss.xint_max, bg_contrast=loss.bg_contrast
        )

    @jax.jit
    def sample(params, buffers):
        layers = generator.apply({"params": params, **buffers}, z, noise_mode="const")
        return layered_rows(layers, eps, xint_max=loss.xint_max, bg_contrast=loss.bg_contrast)

    return sample
