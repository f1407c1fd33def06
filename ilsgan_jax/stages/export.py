"""`--mode=export`: (composite, mask) pairs from the EMA generator, written as the tfds data set
`workdir/export/ilsgan_pairs/1.0.0` (see `evaluate.pair_dataset`), plus fg/bg/soft mask and
optional PNGs in `workdir/export/png/`. Deterministic from `config.export.seed`, resumable, and
split over processes by shard. The workdir may be local or a URL (gs://...)."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from ilsgan_jax.evaluate import pair_dataset
from ilsgan_jax.evaluate import samples as sample_grids
from ilsgan_jax.stages import atomic
from ilsgan_jax.systems import system_for
from ilsgan_jax.train.restore import restore_train_state

EXPORT_KEYS = pair_dataset.PAIR_KEYS


def layers_generate_fn(config, generator, batch_size: int):
    """`generate(params, buffers, key) -> layers` (jitted): `batch_size` latents from `key`, the
    EMA generator at truncation 1 with constant noise, no perturbation. Returns float32 `image`,
    `fg_rgb`, `bg_rgb` [B, R, R, 3] in [-1, 1], `soft_mask` [B, R, R, 1] in [0, 1] and uint8
    `mask` (soft_mask > 0.5), as the system's `export_layers` defines them. Used by the export
    (B = shard size) and the MINE report. Raises ValueError for a system without a mask."""
    system = system_for(config)
    if system.export_layers is None:
        raise ValueError(
            f"config.system={config.system!r} draws no mask: there are no (image, mask) pairs to "
            "export; train a layered system or Labels4Free on top of it"
        )

    @jax.jit
    def generate(params, buffers, key):
        z = jax.random.normal(key, system.latent_shape(config, batch_size))
        layers = generator.apply({"params": params, **buffers}, z, noise_mode="const")
        exported = system.export_layers(layers)
        return {**exported, "mask": (exported["soft_mask"] > 0.5).astype(jnp.uint8)}

    return generate


def _export_settings(config, step) -> dict:
    export = config.export
    return {
        "seed": int(export.seed),
        "num_pairs": int(export.num_pairs),
        "shard_size": int(export.shard_size),
        "resolution": int(config.data.resolution),
        "checkpoint_step": None if step is None else int(step),
    }


def _check_or_record_settings(out_dir: epath.Path, settings: dict) -> None:
    """Refuses to resume an export made with other settings (its shards would mix in)."""
    path = out_dir / "export_settings.json"
    if path.is_file():
        recorded = json.loads(path.read_text())
        for name, value in settings.items():
            if recorded.get(name) != value and not (name == "checkpoint_step" and value is None):
                raise ValueError(
                    f"{out_dir} holds an export with {name}={recorded.get(name)!r}, this one has "
                    f"{name}={value!r}; pass --overwrite to replace it (or use another --workdir)"
                )
        return
    atomic.write_json(path, settings)


def _shard_arrays(layers: dict, count: int) -> dict[str, np.ndarray]:
    """The first `count` pairs of `layers_generate_fn`'s host output as the export's uint8
    arrays: image, fg_rgb, bg_rgb [count, R, R, 3], mask [count, R, R, 1] in {0, 1} and
    soft_mask [count, R, R, 1] = round(255 m)."""
    return {
        "image": sample_grids.to_uint8(layers["image"][:count]),
        "mask": layers["mask"][:count],
        "fg_rgb": sample_grids.to_uint8(layers["fg_rgb"][:count]),
        "bg_rgb": sample_grids.to_uint8(layers["bg_rgb"][:count]),
        "soft_mask": np.round(layers["soft_mask"][:count] * 255).astype(np.uint8),
    }


def write_export_shards(
    config, out_dir: epath.PathLike, state, networks, *, process_index: int, process_count: int
) -> list[int]:
    """Writes the missing shards `i` with `i % process_count == process_index` of the export
    into `pair_dataset.dataset_dir(out_dir)` (and PNGs if `config.export.png`). Shard i holds
    pairs [i * S, min((i + 1) * S, N)) from the latents `fold_in(key(export.seed), i)`, so each
    shard's content depends only on the generator and the seed. Returns the shards written."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    export = config.export
    shard_size = export.shard_size
    num_shards = -(-export.num_pairs // shard_size)
    directory = epath.Path(pair_dataset.dataset_dir(out_dir))
    generate = layers_generate_fn(config, networks.generator, shard_size)
    params = jax.device_get(state.g_ema_params)
    buffers = jax.device_get(state.g_ema_buffers)
    base_key = jax.random.key(export.seed)
    written = []
    for shard in range(process_index, num_shards, process_count):
        path = directory / pair_dataset.shard_filename(shard, num_shards)
        if path.exists():
            continue
        layers = jax.device_get(generate(params, buffers, jax.random.fold_in(base_key, shard)))
        arrays = _shard_arrays(layers, min(shard_size, export.num_pairs - shard * shard_size))
        pair_dataset.write_shard(path, arrays, config.data.resolution)
        if export.png:
            write_pngs(out_dir, shard * shard_size, arrays)
        written.append(shard)
    return written


def export_shard_lengths(config) -> list[int]:
    """Pairs per shard: S for all but the last, which holds the remainder."""
    num_pairs, shard_size = config.export.num_pairs, config.export.shard_size
    return [min(shard_size, num_pairs - start) for start in range(0, num_pairs, shard_size)]


def export_pairs(
    config: ml_collections.ConfigDict, workdir: str, *, state=None, networks=None, overwrite=False
) -> str:
    """Writes `config.export.num_pairs` (composite, mask > 0.5) pairs, plus fg/bg/soft mask, from
    the EMA generator (of the best-FID checkpoint if one is kept, else the newest) as a tfds data
    set in `workdir/export/ilsgan_pairs/1.0.0` (see `pair_dataset`). Deterministic from
    `export.seed`; resumable (finished shards are skipped; writes are atomic); process p of P
    writes the shards with `i % P == p`, then process 0 writes the tfds metadata. Returns the
    data set directory (for `tfds.builder_from_directory`)."""
    out_dir = epath.Path(workdir) / "export"
    directory = pair_dataset.dataset_dir(out_dir)
    if config.export.num_pairs < 1 or config.export.shard_size < 1:
        raise ValueError(
            f"config.export.num_pairs={config.export.num_pairs} and config.export.shard_size="
            f"{config.export.shard_size} must be >= 1"
        )
    if overwrite and jax.process_index() == 0:
        out_dir.rmtree(missing_ok=True)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("export: old export removed")
    step = None
    if state is None:
        state, step, networks = restore_train_state(config, workdir, prefer_best=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_or_record_settings(out_dir, _export_settings(config, step))
    written = write_export_shards(
        config,
        out_dir,
        state,
        networks,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("export: all shards written")
    if jax.process_index() == 0:
        pair_dataset.write_metadata(directory, config.data.resolution, export_shard_lengths(config))
    logging.info("Exported %d new shards into %s", len(written), directory)
    return directory


def write_pngs(out_dir: epath.PathLike, first_index: int, arrays: dict) -> None:
    """`out_dir/png/<index>.png` (composite) and `<index>_mask.png` (0/255) for each pair of
    `arrays` (`_shard_arrays`' uint8 arrays), numbered from `first_index`."""
    png_dir = epath.Path(out_dir) / "png"
    for offset in range(arrays["image"].shape[0]):
        index = first_index + offset
        sample_grids.save_png(arrays["image"][offset], png_dir / f"{index:07d}.png")
        sample_grids.save_png(
            arrays["mask"][offset, ..., 0] * 255, png_dir / f"{index:07d}_mask.png"
        )


def load_pairs(dataset_directory: str) -> tuple[np.ndarray, np.ndarray]:
    """All exported pairs in export order, read with tf.data from the tfds data set
    (`pair_dataset.dataset_dir(workdir/export)`): images float32 [N, R, R, 3] in [-1, 1], masks
    float32 [N, R, R] in {0, 1}."""
    arrays = pair_dataset.read_arrays(dataset_directory, keys=("image", "mask"))
    images = arrays["image"].astype(np.float32) / 127.5 - 1.0
    return images, arrays["mask"][..., 0].astype(np.float32)
