"""tfds builder of the synthetic objects data set (see synthetic_render.py); no download.

Each combination of (resolution, train size, test size, seed, background noise, background type)
is its own BuilderConfig, named `r{R}_train{N}_test{M}_seed{S}` plus `_noise{X}` when the
background noise is not x1 and `_structured` for the structured backgrounds (e.g.
`r32_train10000_test500_seed0_noise0.25_structured`), so several variants live side by side in
one data_dir.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ilsgan_jax.data import synthetic_render

_CHUNK_SIZE = 256
_SPLIT_STREAMS = {"train": 0, "test": 1}


@dataclasses.dataclass
class SyntheticObjectsConfig(tfds.core.BuilderConfig):
    """resolution: image side in pixels (power of two, 16..256); sizes in images; seed: int;
    background_noise: amplitude multiplier of the backgrounds' band-limited noise (>= 0);
    background_type: one of synthetic_render.BACKGROUND_TYPES ('noise', 'structured')."""

    resolution: int = 64
    train_size: int = 20_000
    test_size: int = 1_000
    seed: int = 0
    background_noise: float = 1.0
    background_type: str = "noise"


def make_builder_config(
    resolution: int,
    train_size: int,
    test_size: int,
    seed: int,
    background_noise: float = 1.0,
    background_type: str = "noise",
) -> SyntheticObjectsConfig:
    """The BuilderConfig for one variant, validated (ValueError naming the bad field)."""
    if resolution not in (16, 32, 64, 128, 256):
        raise ValueError(f"data.resolution must be a power of two in 16..256, got {resolution}")
    for field, value in (("synthetic_train_size", train_size), ("synthetic_test_size", test_size)):
        if value < 1:
            raise ValueError(f"data.{field} must be >= 1, got {value}")
    if seed < 0:
        raise ValueError(f"data.synthetic_seed must be >= 0, got {seed}")
    if not background_noise >= 0.0:  # also rejects NaN
        raise ValueError(f"data.synthetic_background_noise must be >= 0, got {background_noise}")
    if background_type not in synthetic_render.BACKGROUND_TYPES:
        raise ValueError(
            f"data.synthetic_background must be one of {synthetic_render.BACKGROUND_TYPES}, "
            f"got {background_type!r}"
        )
    # The noise level and the background type are part of the name (and so of the cache path)
    # unless they are the defaults.
    noise_suffix = "" if background_noise == 1.0 else f"_noise{background_noise:g}"
    type_suffix = "" if background_type == "noise" else f"_{background_type}"
    return SyntheticObjectsConfig(
        name=(
            f"r{resolution}_train{train_size}_test{test_size}_seed{seed}{noise_suffix}{type_suffix}"
        ),
        description=(
            f"{resolution}px, {train_size} train / {test_size} test images, seed {seed}, "
            f"background noise x{background_noise:g}"
            + ("" if background_type == "noise" else f", {background_type} backgrounds")
        ),
        resolution=resolution,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
        background_noise=float(background_noise),
        background_type=background_type,
    )


def render_split_chunk(
    config: SyntheticObjectsConfig, split: str, chunk_index: int
) -> dict[str, np.ndarray]:
    """Renders images [chunk_index * 256, ...) of a split; a pure function of its arguments."""
    size = config.train_size if split == "train" else config.test_size
    start = chunk_index * _CHUNK_SIZE
    count = min(_CHUNK_SIZE, size - start)
    rng = np.random.default_rng([config.seed, _SPLIT_STREAMS[split], chunk_index])
    return synthetic_render.render_synthetic_objects(
        rng,
        count,
        config.resolution,
        background_noise=config.background_noise,
        background_type=config.background_type,
    )


class SyntheticObjects(tfds.core.GeneratorBasedBuilder):
    """One textured object over a textured background per image, with its exact mask."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [make_builder_config(64, 20_000, 1_000, 0)]

    # tfds finds a builder's code through importlib resources, which needs the optional
    # `importlib_resources` package for editable installs; this file's path is all it needs.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        side = self.builder_config.resolution
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(side, side, 3), encoding_format="png"),
                    "mask": tfds.features.Image(shape=(side, side, 1), encoding_format="png"),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/ilsgan_jax",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in _SPLIT_STREAMS}

    def _generate_examples(self, split: str):
        config = self.builder_config
        size = config.train_size if split == "train" else config.test_size
        for chunk_index in range((size + _CHUNK_SIZE - 1) // _CHUNK_SIZE):
            chunk = render_split_chunk(config, split, chunk_index)
            for offset in range(chunk["image"].shape[0]):
                index = chunk_index * _CHUNK_SIZE + offset
                yield index, {"image": chunk["image"][offset], "mask": chunk["mask"][offset]}
