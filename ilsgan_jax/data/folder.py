"""Listing and checking a folder of images (the user's own data), optionally with masks.

Layout: `folder/**/<name>.<ext>` with ext in jpg/jpeg/png/webp/bmp/gif (searched recursively,
sorted by relative path); masks, when given, at `mask_folder/<same relative dir>/<same stem>.<ext>`
(any supported extension; 0/255 or 0/1 grayscale, or RGB whose first channel is used).

Every file is opened and fully decoded once with Pillow when the listing is built, so corrupt or
truncated files are found before training starts: they are skipped with a logged count and the
first few names, or raise a ValueError when `skip_corrupt` is False.
"""

import dataclasses
import os

import PIL.Image
from absl import logging

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_NAMES_LOGGED = 5


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """image_paths: sorted paths of readable images; mask_paths: parallel list, or None."""

    image_paths: tuple[str, ...]
    mask_paths: tuple[str, ...] | None


def _find_files(root: str) -> dict[str, str]:
    """Relative path without extension -> path, for every supported file under `root`."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            stem, extension = os.path.splitext(name)
            if extension.lower() not in IMAGE_EXTENSIONS:
                continue
            key = os.path.relpath(os.path.join(directory, stem), root)
            # Two files with one stem (x.jpg, x.png): keep the first in sorted order.
            found.setdefault(key, os.path.join(directory, name))
    return found


def read_image_size(path: str) -> tuple[int, int] | None:
    """(height, width) after a full decode, or None when the file is unreadable or corrupt."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            width, height = image.size
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError):
        return None
    return height, width


def report_corrupt(corrupt: list[str], skip_corrupt: bool, what: str) -> None:
    """Logs the skipped files, or raises a ValueError naming the first one."""
    if not corrupt:
        return
    if not skip_corrupt:
        raise ValueError(
            f"Unreadable or corrupt {what}: {corrupt[0]} ({len(corrupt)} in total;"
            " set data.skip_corrupt=True to skip them)"
        )
    logging.warning(
        "Skipped %d unreadable or corrupt %s, e.g. %s",
        len(corrupt),
        what,
        ", ".join(corrupt[:_NAMES_LOGGED]),
    )


def list_image_folder(
    folder: str | None,
    mask_folder: str | None = None,
    *,
    require_masks: bool = True,
    skip_corrupt: bool = True,
) -> FolderListing:
    """Lists and checks the images (and masks) of a folder.

    Raises ValueError: missing or empty folder (field `data.folder`), missing mask folder
    (`data.mask_folder`), an image without its mask when `require_masks`, a mask whose size
    differs from its image's (naming both files), and a corrupt file when not `skip_corrupt`.
    """
    if not folder:
        raise ValueError("data.folder must be set for data.name='folder'")
    if not os.path.isdir(folder):
        raise ValueError(f"data.folder does not exist or is not a directory: {folder}")
    if mask_folder is not None and not os.path.isdir(mask_folder):
        raise ValueError(f"data.mask_folder does not exist or is not a directory: {mask_folder}")
    images = _find_files(folder)
    if not images:
        raise ValueError(f"data.folder has no images ({', '.join(IMAGE_EXTENSIONS)}): {folder}")
    masks = _find_files(mask_folder) if mask_folder is not None else None

    image_paths, mask_paths, corrupt, unmasked = [], [], [], []
    for key in sorted(images):
        image_path = images[key]
        mask_path = None
        if masks is not None:
            mask_path = masks.get(key)
            if mask_path is None:
                if require_masks:
                    raise ValueError(
                        f"Image {image_path} has no mask in data.mask_folder={mask_folder}"
                        f" (expected {os.path.join(mask_folder, key)}.<ext>)"
                    )
                unmasked.append(image_path)
                continue
        image_size = read_image_size(image_path)
        if image_size is None:
            corrupt.append(image_path)
            continue
        if mask_path is not None:
            mask_size = read_image_size(mask_path)
            if mask_size is None:
                corrupt.append(mask_path)
                continue
            if mask_size != image_size:
                raise ValueError(
                    f"Mask {mask_path} is {mask_size[0]}x{mask_size[1]} (HxW) but its image"
                    f" {image_path} is {image_size[0]}x{image_size[1]}"
                )
            mask_paths.append(mask_path)
        image_paths.append(image_path)
    if unmasked:
        logging.warning(
            "Dropped %d images without a mask, e.g. %s",
            len(unmasked),
            ", ".join(unmasked[:_NAMES_LOGGED]),
        )
    report_corrupt(corrupt, skip_corrupt, "files")
    if not image_paths:
        raise ValueError(f"data.folder has no readable images: {folder}")
    return FolderListing(tuple(image_paths), tuple(mask_paths) if masks is not None else None)
