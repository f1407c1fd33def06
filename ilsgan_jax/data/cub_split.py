"""DRC's CUB split, the one the paper scores on, and the note that reports on tfds's split carry.

The split file (`<image id> <0|1|2>` per line: train, val, test) ships with the package:
`cub_split/train_val_test_split.txt`, ReDO's file, which DRC and ILSGAN read (10,000 / 788 /
1,000 images; CC BY-NC 4.0, see the README.md next to it). Its ids name images through CUB's own
`images.txt` (`<image id> <class>/<name>.jpg`), part of the CUB archive and not shipped here: tfds
extracts it under `<data_dir>/downloads` when it prepares `caltech_birds2011`, and
`data.cub_images_file` may point to another copy (e.g. in DRC's `birds` folder).
"""

import glob
import os
from collections.abc import Callable

SPLITS = ("drc", "tfds")  # the values of data.cub_split
SPLIT_VALUES = {"train": 0, "val": 1, "test": 2}  # split name -> the split file's second column
SHIPPED_SPLIT_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "cub_split", "train_val_test_split.txt"
)
NUM_IMAGES = 11_788  # images of CUB-200-2011, one line each in both files
TFDS_SPLIT_WARNING = (
    "CUB is on tfds's train/test split (data.cub_split='tfds'): scores are not comparable with "
    "the paper's, which use DRC's split (data.cub_split='drc')"
)


def relative_name(filename: str) -> str:
    """`class/name.jpg`: the last two parts of an image path (tfds stores the archive path,
    e.g. `CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg`)."""
    return "/".join(filename.replace("\\", "/").split("/")[-2:])


def _split_value(text: str) -> int:
    value = int(text)
    if value not in SPLIT_VALUES.values():
        raise ValueError(text)
    return value


def _image_name(text: str) -> str:
    if "/" not in text:
        raise ValueError(text)
    return text


def _parse_line(path: str, number: int, line: str, expected: str, parse_value) -> tuple:
    """(image id, value) of one line; ValueError naming the file, the line number and the line."""
    fields = line.split()
    try:
        if len(fields) != 2:
            raise ValueError(line)
        return int(fields[0]), parse_value(fields[1])
    except ValueError:
        shown = line.rstrip("\n")
        raise ValueError(
            f"{path}, line {number}: expected '<image id> {expected}', got {shown!r}"
        ) from None


def read_table(path: str, expected: str, parse_value: Callable[[str], object]) -> dict:
    """{image id: value} of a CUB table (`<image id> <value>` per line, blank lines skipped).

    Raises ValueError naming the file, the line number and the line when a line does not hold
    an integer id and a value `parse_value` accepts (`expected` describes it), or repeats an id.
    """
    if not os.path.isfile(path):
        raise ValueError(f"CUB split: no such file {path}")
    table = {}
    with open(path) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            image_id, value = _parse_line(path, number, line, expected, parse_value)
            if image_id in table:
                shown = line.rstrip("\n")
                raise ValueError(f"{path}, line {number}: image id {image_id} again, {shown!r}")
            table[image_id] = value
    return table


def read_split_file(path: str) -> dict[int, int]:
    """{image id: 0 (train) | 1 (val) | 2 (test)} of DRC's `train_val_test_split.txt`."""
    return read_table(path, "<0|1|2>", _split_value)


def read_images_file(path: str) -> dict[int, str]:
    """{image id: 'class/name.jpg'} of CUB's `images.txt`."""
    return read_table(path, "<class>/<name>.jpg", _image_name)


def tfds_images_file(data_dir: str) -> str | None:
    """CUB's `images.txt` in tfds's extracted CUB download under `data_dir`, or None."""
    pattern = os.path.join(data_dir, "downloads", "extracted", "*", "CUB_200_2011", "images.txt")
    found = sorted(glob.glob(pattern))
    return found[0] if found else None


def images_file_of(data_config, data_dir: str) -> str:
    """`data.cub_images_file`, else the `images.txt` of tfds's CUB download in `data_dir`.

    Raises ValueError saying where to get it when there is none."""
    if data_config.cub_images_file:
        return data_config.cub_images_file
    found = tfds_images_file(data_dir)
    if found is None:
        raise ValueError(
            "DRC's CUB split (data.cub_split='drc', the paper's) names images by the ids of "
            f"CUB's images.txt, which is not under {data_dir}/downloads/extracted (tfds leaves "
            "it there when it prepares caltech_birds2011 in that data_dir). Pass "
            "--config.data.cub_images_file=PATH (it is CUB_200_2011/images.txt in "
            "CUB_200_2011.tgz, https://www.vision.caltech.edu/datasets/cub_200_2011/), or "
            "--config.data.cub_split=tfds (scores not comparable with the paper's)."
        )
    return found


def split_names(split_file: str, images_file: str, split: str) -> list[str]:
    """Image names (`class/name.jpg`) of DRC's `split` ('train', 'val' or 'test'), by id."""
    if split not in SPLIT_VALUES:
        raise ValueError(f"split must be one of {tuple(SPLIT_VALUES)} on DRC's, got {split!r}")
    values, names = read_split_file(split_file), read_images_file(images_file)
    missing = sorted(set(values) - set(names))
    if missing:
        raise ValueError(
            f"{images_file} lacks {len(missing)} image ids of {split_file} (first: {missing[:5]})"
        )
    wanted = SPLIT_VALUES[split]
    return [names[image_id] for image_id in sorted(values) if values[image_id] == wanted]


def report_fields(data_config) -> dict:
    """What a report of scores on `data_config` records about the split: for CUB,
    `cub_split` ('drc' or 'tfds') and, on tfds's split, `split_warning`; nothing otherwise."""
    if data_config.name != "cub":
        return {}
    fields = {"cub_split": data_config.cub_split}
    if data_config.cub_split == "tfds":
        fields["split_warning"] = TFDS_SPLIT_WARNING
    return fields


def statistics_name(data_config) -> str:
    """The data set's name in caches of statistics over a split: `data.name`, with CUB on DRC's
    split as 'cub_drc' (its splits are not tfds's, which keep 'cub')."""
    if data_config.name == "cub" and data_config.cub_split == "drc":
        return "cub_drc"
    return data_config.name
