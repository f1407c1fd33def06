"""Stanford Dogs and Stanford Cars as the DRC release lays them out (Yu et al., NeurIPS 2021).

Expected layout under `data.drc_root` (the DRC download, plus for dogs the original-size images
from DRC's `dogs_raw_data.zip`, as the ILSGAN README asks):

    dogs/                                          <- data.drc_root for data.name='dogs'
      data_tr_sel.npy                              training tokens (1-D array of names)
      data_te_sel.npy                              test tokens
      train_orig/orig/<token>_orig.png             training images, original size
      data_mrcnn/train/resized/<token>_resized.png (used for training if train_orig/ is absent)
      data_mrcnn/test/resized/<token>_resized.png      test images
      data_mrcnn/test/resized/<token>_maskresized.png  test masks
    cars/                                          <- data.drc_root for data.name='cars'
      data_mrcnn_train_select.npy                  training tokens
      data_mrcnn_test_select.npy                   test tokens
      data_mrcnn/train/orig/<token>_orig.png       training images, original size
      data_mrcnn/test/resized/<token>_resized.png      test images
      data_mrcnn/test/resized/<token>_maskresized.png  test masks

Tokens are the array entries formatted with str() (bytes are decoded as UTF-8). Preprocessing, as
in ILSGAN's training/dataset.py (DRCDataset) and eval_segmentation.py (Dog/CarDataset): training
images are the centre square crop resized to R; test images and masks are resized to R x R
(the DRC `resized` files are already square crops around the object).
"""

import dataclasses
import os

import numpy as np
from absl import logging

from ilsgan_jax.data import folder as folder_lib

_SPLIT_FILES = {
    "dogs": {"train": "data_tr_sel.npy", "test": "data_te_sel.npy"},
    "cars": {"train": "data_mrcnn_train_select.npy", "test": "data_mrcnn_test_select.npy"},
}
_TRAIN_IMAGE_PATTERNS = {
    "dogs": ("train_orig/orig/{}_orig.png", "data_mrcnn/train/resized/{}_resized.png"),
    "cars": ("data_mrcnn/train/orig/{}_orig.png",),
}
_TEST_IMAGE_PATTERN = "data_mrcnn/test/resized/{}_resized.png"
_TEST_MASK_PATTERN = "data_mrcnn/test/resized/{}_maskresized.png"


@dataclasses.dataclass(frozen=True)
class DrcListing:
    """image_paths: readable images of the split; mask_paths: parallel list (test) or None."""

    image_paths: tuple[str, ...]
    mask_paths: tuple[str, ...] | None


def read_tokens(path: str) -> list[str]:
    """The names in a DRC split file (.npy, 1-D)."""
    # allow_pickle: DRC's arrays may hold Python strings (object dtype); this is the user's file.
    tokens = np.load(path, allow_pickle=True)
    return [
        token.decode("utf-8") if isinstance(token, bytes) else str(token)
        for token in np.ravel(tokens)
    ]


def list_drc_split(
    name: str, drc_root: str | None, split: str, *, skip_corrupt: bool = True
) -> DrcListing:
    """Lists and checks one split ('train' | 'test') of 'dogs' or 'cars'.

    Raises ValueError for an unknown name/split, a missing root or split file, a listed file
    that does not exist (named), and a corrupt file when not `skip_corrupt`.
    """
    if name not in _SPLIT_FILES:
        raise ValueError(f"data.name must be 'dogs' or 'cars' for a DRC folder, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test' for data.name={name!r}, got {split!r}")
    if not drc_root or not os.path.isdir(drc_root):
        raise ValueError(f"data.drc_root does not exist or is not a directory: {drc_root}")
    split_file = os.path.join(drc_root, _SPLIT_FILES[name][split])
    if not os.path.isfile(split_file):
        raise ValueError(f"DRC split file missing for data.name={name!r}: {split_file}")
    tokens = read_tokens(split_file)
    if not tokens:
        raise ValueError(f"DRC split file lists no images: {split_file}")
    if split == "train":
        pattern = next(
            (
                p
                for p in _TRAIN_IMAGE_PATTERNS[name]
                if os.path.isdir(os.path.join(drc_root, os.path.dirname(p)))
            ),
            _TRAIN_IMAGE_PATTERNS[name][0],
        )
        if pattern != _TRAIN_IMAGE_PATTERNS[name][0]:
            logging.warning(
                "%s: %s not found, training on the DRC resized images in %s",
                name,
                os.path.dirname(_TRAIN_IMAGE_PATTERNS[name][0]),
                os.path.dirname(pattern),
            )
        mask_pattern = None
    else:
        pattern, mask_pattern = _TEST_IMAGE_PATTERN, _TEST_MASK_PATTERN

    image_paths, mask_paths, corrupt = [], [], []
    for token in tokens:
        image_path = os.path.join(drc_root, pattern.format(token))
        mask_path = os.path.join(drc_root, mask_pattern.format(token)) if mask_pattern else None
        for path in (image_path, mask_path):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"File listed in {split_file} is missing: {path}")
        if folder_lib.read_image_size(image_path) is None:
            corrupt.append(image_path)
            continue
        if mask_path is not None:
            if folder_lib.read_image_size(mask_path) is None:
                corrupt.append(mask_path)
                continue
            mask_paths.append(mask_path)
        image_paths.append(image_path)
    folder_lib.report_corrupt(corrupt, skip_corrupt, f"{name} files")
    if not image_paths:
        raise ValueError(f"No readable images for data.name={name!r}, split {split!r}")
    return DrcListing(tuple(image_paths), tuple(mask_paths) if mask_pattern else None)
