"""Every data source as encoded records plus a decode function, behind one interface.

A `SourceSplit` gives a cheap, fixed-order tf.data.Dataset of encoded records for one process's
share of a split (tfds.even_splits for tfds sources, the same contiguous even slices for file
lists), and a decode function turning a record into
`{'image': uint8 [R, R, 3], 'mask': uint8 [R, R, 1] in [0, 255]}` ('mask' only when the split has
masks and they are asked for). Shuffling and skipping happen on records, before decoding.
"""

import dataclasses
import os
from collections.abc import Callable

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from ilsgan_jax import runtime
from ilsgan_jax.data import cub_split, drc, folder, preprocess, synthetic_builder
from ilsgan_jax.data.config import DATA_SOURCES

Record = dict[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class SourceSplit:
    """One process's share of a split.

    records: fixed-order dataset of encoded records (this process's share).
    num_records: len(records); total_records: size of the whole split (all processes).
    has_masks: whether decode(record, with_mask=True) yields a 'mask'.
    decode: (record, with_mask) -> {'image': uint8 [R, R, 3], 'mask'?: uint8 [R, R, 1]}.
    decode_before_shuffle: records are already decoded (tfds default decoding), so the train
      pipeline decodes/resizes before shuffling, keeping only R x R images in the buffer.
    """

    records: tf.data.Dataset
    num_records: int
    total_records: int
    has_masks: bool
    decode: Callable[[Record, bool], dict[str, tf.Tensor]]
    decode_before_shuffle: bool = False


def data_dir_of(data_config) -> str:
    """The tfds data_dir: `data.data_dir` or <cache>/tensorflow_datasets."""
    return data_config.data_dir or os.path.join(runtime.cache_dir(), "tensorflow_datasets")


def even_slice(count: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, stop) of process `process_index`'s contiguous share of `count` items."""
    return (process_index * count // process_count, (process_index + 1) * count // process_count)


def check_resolution(data_config) -> int:
    resolution = int(data_config.resolution)
    if resolution not in (16, 32, 64, 128, 256):
        raise ValueError(f"data.resolution must be a power of two in 16..256, got {resolution}")
    return resolution


# ---------------------------------------------------------------------------- synthetic


def synthetic_builder_of(data_config) -> synthetic_builder.SyntheticObjects:
    config = synthetic_builder.make_builder_config(
        check_resolution(data_config),
        int(data_config.synthetic_train_size),
        int(data_config.synthetic_test_size),
        int(data_config.synthetic_seed),
        float(data_config.synthetic_background_noise),
        str(data_config.synthetic_background),
    )
    return synthetic_builder.SyntheticObjects(config=config, data_dir=data_dir_of(data_config))


def prepare_synthetic(data_config) -> str:
    """Renders and writes the synthetic data set into the data_dir (no-op when already there).

    Returns the prepared data set's directory.
    """
    builder = synthetic_builder_of(data_config)
    builder.download_and_prepare()
    return str(builder.data_dir)


def _decode_png_pair(record: Record, with_mask: bool, resolution: int) -> dict[str, tf.Tensor]:
    example = {
        "image": tf.ensure_shape(
            tf.io.decode_png(record["image"], channels=3), (resolution, resolution, 3)
        )
    }
    if with_mask:
        example["mask"] = tf.ensure_shape(
            tf.io.decode_png(record["mask"], channels=1), (resolution, resolution, 1)
        )
    return example


def _tfds_split(
    builder, split: str, process_index: int, process_count: int, decoders: dict | None
) -> tuple[tf.data.Dataset, int, int]:
    splits = builder.info.splits
    if splits and split not in splits:
        raise ValueError(f"Unknown split {split!r} for {builder.name}; has {sorted(splits)}")
    read_config = tfds.ReadConfig(interleave_cycle_length=1)
    shard = tfds.even_splits(split, process_count)[process_index]
    records = builder.as_dataset(
        split=shard, shuffle_files=False, decoders=decoders, read_config=read_config
    )
    if splits:
        total = splits[split].num_examples
    else:  # No metadata (e.g. tfds.testing.mock_data): count the records.
        total = int(
            builder.as_dataset(
                split=split, shuffle_files=False, decoders=decoders, read_config=read_config
            ).cardinality()
        )
    return records, int(records.cardinality()), total


def _synthetic_split(data_config, split, process_index, process_count) -> SourceSplit:
    builder = synthetic_builder_of(data_config)
    builder.download_and_prepare()
    resolution = builder.builder_config.resolution
    records, count, total = _tfds_split(
        builder,
        split,
        process_index,
        process_count,
        {"image": tfds.decode.SkipDecoding(), "mask": tfds.decode.SkipDecoding()},
    )
    return SourceSplit(
        records,
        count,
        total,
        True,
        lambda record, with_mask: _decode_png_pair(record, with_mask, resolution),
    )


# ---------------------------------------------------------------------------- CUB


def _relative_name(filename: tf.Tensor) -> tf.Tensor:
    """`cub_split.relative_name` in TensorFlow: the last two parts of a tfds image path."""
    parts = tf.strings.split(tf.strings.regex_replace(filename, r"\\", "/"), "/")
    return tf.strings.reduce_join(parts[-2:], separator="/")


def _cub_drc_records(builder, data_config, split, process_index, process_count):
    """(records, count, total) of DRC's `split`, read from the union of tfds's train and test."""
    images_file = cub_split.images_file_of(data_config, data_dir_of(data_config))
    names = cub_split.split_names(data_config.cub_split_file, images_file, split)
    read_config = tfds.ReadConfig(interleave_cycle_length=1)
    stored = builder.as_dataset(
        split="train+test",
        shuffle_files=False,
        read_config=read_config,
        decoders=tfds.decode.PartialDecoding({"image/filename": True}),
    )
    wanted = set(names)
    matched = sum(
        cub_split.relative_name(name.decode("utf-8")) in wanted
        for name in tfds.as_numpy(stored.map(lambda record: record["image/filename"]))
    )
    if matched < len(names):
        logging.warning(
            "CUB: %d of the %d images of DRC split %r are not in the tfds data",
            len(names) - matched,
            len(names),
            split,
        )
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(names), tf.ones(len(names), tf.bool)),
        default_value=False,
    )
    # tfds' own decoding (no SkipDecoding): tfds mock data can only serve decoded examples
    # (encoding its random boxes fails), so the pipeline crops/resizes before shuffling.
    everything = builder.as_dataset(
        split="train+test", shuffle_files=False, read_config=read_config
    )
    selected = everything.filter(
        lambda record: table.lookup(_relative_name(record["image/filename"]))
    )
    start, stop = even_slice(matched, process_index, process_count)
    return selected.skip(start).take(stop - start), stop - start, matched


def _cub_records(builder, data_config, split, process_index, process_count):
    """(records, count, total) of `split` on `data.cub_split`: DRC's (the paper's) or tfds's."""
    if data_config.cub_split == "drc":
        return _cub_drc_records(builder, data_config, split, process_index, process_count)
    if data_config.cub_split != "tfds":
        raise ValueError(
            f"data.cub_split must be one of {cub_split.SPLITS}, got {data_config.cub_split!r}"
        )
    logging.warning(cub_split.TFDS_SPLIT_WARNING)
    return _tfds_split(builder, split, process_index, process_count, None)


def _cub_decoder(is_train: bool, resolution: int):
    """`(record, with_mask) -> example` of CUB with DRC's crops (training: the centre square of
    the whole image; test: the square around the bounding box)."""

    def decode(record: Record, with_mask: bool) -> dict[str, tf.Tensor]:
        image = record["image"]
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        if is_train:
            box = preprocess.center_square_box(height, width)
        else:
            box = preprocess.cub_test_box(record["bbox"], height, width)
        example = {"image": preprocess.to_uint8(preprocess.crop_and_resize(image, box, resolution))}
        if with_mask:
            mask = preprocess.resize_mask_to(record["segmentation_mask"], height, width)
            scale = preprocess.mask_scale(mask)
            resized = preprocess.crop_and_resize(mask, box, resolution) * (255.0 / scale)
            example["mask"] = preprocess.to_uint8(resized)
        return example

    return decode


def prepare_cub(builder) -> None:
    """Downloads and prepares tfds's `caltech_birds2011` (1.2 GB) into the builder's data dir on
    first use. tfds decodes CUB's masks with OpenCV: without it, a RuntimeError says what to
    install (the download stays in tfds's cache for the next try)."""
    if builder.is_prepared():
        return
    logging.info("CUB: downloading and preparing caltech_birds2011 into %s", builder.data_dir)
    try:
        builder.download_and_prepare()
    except ImportError as error:
        raise RuntimeError(
            f"preparing CUB in {builder.data_dir} failed on a missing module ({error}); tfds "
            "needs OpenCV for CUB's masks: pip install -e '.[cub]'"
        ) from error


def _cub_split(data_config, split, process_index, process_count) -> SourceSplit:
    resolution = check_resolution(data_config)
    builder = tfds.builder("caltech_birds2011", data_dir=data_dir_of(data_config))
    prepare_cub(builder)
    records, count, total = _cub_records(builder, data_config, split, process_index, process_count)
    decode = _cub_decoder(split == "train", resolution)
    return SourceSplit(records, count, total, True, decode, decode_before_shuffle=True)


# ---------------------------------------------------------------------------- file lists


def _file_list_split(
    image_paths, mask_paths, process_index, process_count, resolution, center_crop: bool
) -> SourceSplit:
    start, stop = even_slice(len(image_paths), process_index, process_count)
    columns = {"image_path": list(image_paths[start:stop])}
    if mask_paths is not None:
        columns["mask_path"] = list(mask_paths[start:stop])
    records = tf.data.Dataset.from_tensor_slices(
        {key: tf.constant(value, tf.string) for key, value in columns.items()}
        if stop > start
        else {key: tf.constant([], tf.string) for key in columns}
    )

    def decode(record: Record, with_mask: bool) -> dict[str, tf.Tensor]:
        image = tf.io.decode_image(
            tf.io.read_file(record["image_path"]), channels=3, expand_animations=False
        )
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        if center_crop:
            box = preprocess.center_square_box(height, width)
        else:
            box = (0, 0, height, width)
        example = {"image": preprocess.to_uint8(preprocess.crop_and_resize(image, box, resolution))}
        if with_mask:
            mask = tf.io.decode_image(
                tf.io.read_file(record["mask_path"]), channels=1, expand_animations=False
            )
            mask_box = box if center_crop else (0, 0, tf.shape(mask)[0], tf.shape(mask)[1])
            scale = preprocess.mask_scale(mask)
            resized = preprocess.crop_and_resize(mask, mask_box, resolution) * (255.0 / scale)
            example["mask"] = preprocess.to_uint8(resized)
        return example

    return SourceSplit(records, stop - start, len(image_paths), mask_paths is not None, decode)


def _folder_split(data_config, split, process_index, process_count) -> SourceSplit:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test' for data.name='folder', got {split!r}")
    # A folder has one set of images: 'train' and 'test' both read all of it (unsupervised
    # training; the masks, if any, are only used for scoring).
    listing = folder.list_image_folder(
        data_config.folder,
        data_config.mask_folder,
        require_masks=data_config.require_masks,
        skip_corrupt=data_config.skip_corrupt,
    )
    return _file_list_split(
        listing.image_paths,
        listing.mask_paths,
        process_index,
        process_count,
        check_resolution(data_config),
        center_crop=True,
    )


def _drc_split(data_config, split, process_index, process_count) -> SourceSplit:
    listing = drc.list_drc_split(
        data_config.name, data_config.drc_root, split, skip_corrupt=data_config.skip_corrupt
    )
    return _file_list_split(
        listing.image_paths,
        listing.mask_paths,
        process_index,
        process_count,
        check_resolution(data_config),
        center_crop=split == "train",
    )


def source_split(data_config, split: str, process_index: int, process_count: int) -> SourceSplit:
    """The records and decoder of `split` for one process (see SourceSplit)."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    builders = {
        "synthetic": _synthetic_split,
        "cub": _cub_split,
        "dogs": _drc_split,
        "cars": _drc_split,
        "folder": _folder_split,
    }
    if data_config.name not in builders:
        raise ValueError(f"data.name must be one of {DATA_SOURCES}, got {data_config.name!r}")
    source = builders[data_config.name](data_config, split, process_index, process_count)
    logging.info(
        "data %s/%s: process %d of %d reads %d of %d examples",
        data_config.name,
        split,
        process_index,
        process_count,
        source.num_records,
        source.total_records,
    )
    return source
