"""The exported synthetic pairs as a tfds data set (TFRecord shards of tf.train.Examples).

Layout, tfds's own (so `tfds.builder_from_directory` and `tfds.load(..., data_dir=...)` read it):

    <export_dir>/ilsgan_pairs/1.0.0/
        ilsgan_pairs-train.tfrecord-00000-of-00050   # shard i: pairs [i * S, (i + 1) * S)
        ...
        dataset_info.json, features.json             # written once every shard exists

Each example holds uint8 images encoded losslessly as PNG by `tfds.features.Image`: `image` (the
composite) [R, R, 3], `mask` [R, R, 1] in {0, 1}, `fg_rgb` and `bg_rgb` [R, R, 3] and `soft_mask`
[R, R, 1] (round(255 m)).

The export directory may be local or a URL (gs://...): shards are written by tf.io (TFRecord),
the rest through etils.epath, and tfds reads both.
"""

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

DATASET_NAME = "ilsgan_pairs"  # tfds name of the export
DATASET_VERSION = "1.0.0"  # tfds version directory
SPLIT = "train"  # the one split; the segmenter makes its own 90/10 split
PAIR_KEYS = ("image", "mask", "fg_rgb", "bg_rgb", "soft_mask")
_CHANNELS = {"image": 3, "mask": 1, "fg_rgb": 3, "bg_rgb": 3, "soft_mask": 1}


def dataset_dir(export_dir: str | os.PathLike) -> str:
    """`<export_dir>/ilsgan_pairs/1.0.0`: the directory for `tfds.builder_from_directory`."""
    return str(epath.Path(export_dir) / DATASET_NAME / DATASET_VERSION)


def pair_features(resolution: int) -> tfds.features.FeaturesDict:
    """The feature spec of one pair at `resolution` px (all uint8 images, PNG-encoded)."""
    return tfds.features.FeaturesDict(
        {
            key: tfds.features.Image(shape=(resolution, resolution, channels), dtype=np.uint8)
            for key, channels in _CHANNELS.items()
        }
    )


def shard_filename(shard: int, num_shards: int) -> str:
    """tfds's default template `{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}`."""
    return f"{DATASET_NAME}-{SPLIT}.tfrecord-{shard:05d}-of-{num_shards:05d}"


def _check_arrays(arrays: dict, resolution: int) -> int:
    missing = set(PAIR_KEYS) - set(arrays)
    if missing:
        raise ValueError(f"arrays: missing {sorted(missing)} (need {PAIR_KEYS})")
    count = arrays["image"].shape[0]
    for key, channels in _CHANNELS.items():
        expected = (count, resolution, resolution, channels)
        if arrays[key].shape != expected or arrays[key].dtype != np.uint8:
            raise ValueError(
                f"arrays[{key!r}]: expected uint8 {expected}, got "
                f"{arrays[key].dtype} {arrays[key].shape}"
            )
    if arrays["mask"].max(initial=0) > 1:
        raise ValueError("arrays['mask']: values must be 0 or 1")
    return count


def write_shard(path: str | os.PathLike, arrays: dict[str, np.ndarray], resolution: int) -> int:
    """Writes one shard atomically (a hidden temporary file renamed into place).

    Args:
      path: the shard file (`dataset_dir(...)/shard_filename(...)`).
      arrays: PAIR_KEYS -> uint8 [S, R, R, C] (see the module docstring).
    Returns:
      The number of examples S.
    """
    count = _check_arrays(arrays, resolution)
    features = pair_features(resolution)
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot keeps the temporary file out of tfds's filename pattern.
    temporary = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with tf.io.TFRecordWriter(str(temporary)) as writer:
        for index in range(count):
            writer.write(features.serialize_example({k: arrays[k][index] for k in PAIR_KEYS}))
    temporary.replace(path)
    return count


def write_metadata(directory: str | os.PathLike, resolution: int, shard_lengths: list[int]) -> None:
    """Writes tfds's `dataset_info.json` and `features.json` for the shards in `directory`.

    Raises ValueError naming the first missing shard file."""
    num_shards = len(shard_lengths)
    paths = [epath.Path(directory) / shard_filename(i, num_shards) for i in range(num_shards)]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{path}: missing shard; the export is incomplete")
    num_bytes = sum(path.stat().length for path in paths)
    split = tfds.core.SplitInfo(name=SPLIT, shard_lengths=list(shard_lengths), num_bytes=num_bytes)
    tfds.folder_dataset.write_metadata(
        data_dir=directory,
        features=pair_features(resolution),
        split_infos=[split],
        version=DATASET_VERSION,
        check_data=False,
        description="Synthetic (composite, mask) pairs from an ILSGAN EMA generator "
        "(truncation 1, constant noise); fg/bg/soft mask for inspection.",
    )


def load_dataset(directory: str | os.PathLike) -> tf.data.Dataset:
    """The pairs in export order as a tf.data.Dataset of uint8 feature dicts (PAIR_KEYS)."""
    if not (epath.Path(directory) / "dataset_info.json").is_file():
        raise FileNotFoundError(
            f"No exported data set in {directory} (no dataset_info.json); run --mode=export first"
        )
    builder = tfds.builder_from_directory(directory)
    # One file at a time: tfds interleaves 16 files by default, which reorders the pairs.
    read_config = tfds.ReadConfig(interleave_cycle_length=1)
    return builder.as_dataset(split=SPLIT, shuffle_files=False, read_config=read_config)


def read_arrays(directory: str, keys=("image", "mask"), batch_size: int = 256) -> dict:
    """`keys` of every pair in export order, read through tf.data: uint8 [N, R, R, C] each."""
    dataset = load_dataset(directory).map(
        lambda example: {key: example[key] for key in keys}, num_parallel_calls=tf.data.AUTOTUNE
    )
    batches = list(tfds.as_numpy(dataset.batch(batch_size).prefetch(2)))
    if not batches:
        raise ValueError(f"{directory}: the exported data set is empty")
    return {key: np.concatenate([batch[key] for batch in batches]) for key in keys}
