"""Throughput of the input pipeline alone (no model): training images per second.

Sources: 'synthetic' (the built-in tfds data set, PNG records) and 'folder' (a folder of JPEG
files of 320x256 pixels, about the size of CUB/Dogs photos, decoded, centre-cropped and resized
with antialiasing on the fly). Each measurement builds the training iterator, pulls a few warm-up
batches, then times `num_batches` batches.

    python launch/benchmark_input.py --resolutions=64,128 --sources=synthetic,folder \
        --num_images=1024 --num_batches=20 --json_out=/tmp/input_benchmark.json

`benchmark_input(...)` returns the rows as dicts for launch/benchmark.py to include.
"""

import json
import os
import tempfile
import time

import numpy as np
import PIL.Image
from absl import app, flags

from ilsgan_jax.data import config as config_lib
from ilsgan_jax.data import input_pipeline, synthetic_render

_FOLDER_IMAGE_SIZE = (320, 256)  # (width, height) of the JPEG files of the folder source.


def _write_folder(directory: str, num_images: int, seed: int = 0) -> None:
    """Writes `num_images` JPEG files (320x256) rendered by the synthetic renderer."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = 0
    while written < num_images:
        count = min(64, num_images - written)
        images = synthetic_render.render_synthetic_objects(rng, count, 256)["image"]
        for image in images:
            resized = PIL.Image.fromarray(image).resize(_FOLDER_IMAGE_SIZE, PIL.Image.BILINEAR)
            resized.save(os.path.join(directory, f"{written:06d}.jpg"), quality=90)
            written += 1


def _time_iterator(iterator, batch_size: int, num_batches: int, warmup_batches: int) -> float:
    for _ in range(warmup_batches):
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    return batch_size * num_batches / (time.perf_counter() - start)


def benchmark_input(
    resolutions=(64, 128),
    sources=("synthetic", "folder"),
    *,
    num_images: int = 1024,
    batch_size: int = 32,
    num_batches: int = 20,
    warmup_batches: int = 3,
    work_dir: str | None = None,
) -> list[dict]:
    """Measures training-pipeline throughput; one row per (source, resolution).

    Row keys: 'source', 'resolution', 'batch_size', 'images_per_second' (training iterator),
    'prepare_seconds' (synthetic: rendering and writing `num_images` images; folder: listing and
    checking the files, which the pipeline does once at start-up), 'num_images'.
    """
    work_dir = work_dir or tempfile.mkdtemp(prefix="ilsgan_input_benchmark_")
    folder = os.path.join(work_dir, "folder")
    if "folder" in sources and not os.path.isdir(folder):
        _write_folder(folder, num_images)
    rows = []
    for source in sources:
        for resolution in resolutions:
            data_config = config_lib.default_data_config()
            data_config.name = source
            data_config.resolution = int(resolution)
            data_config.data_dir = os.path.join(work_dir, "tfds")
            data_config.synthetic_train_size = num_images
            data_config.synthetic_test_size = 16
            data_config.folder = folder
            start = time.perf_counter()
            if source == "synthetic":
                input_pipeline.prepare_synthetic(data_config)
            iterator = input_pipeline.create_train_iterator(
                data_config, global_batch_size=batch_size, seed=0, process_index=0, process_count=1
            )
            prepare_seconds = time.perf_counter() - start
            images_per_second = _time_iterator(iterator, batch_size, num_batches, warmup_batches)
            rows.append(
                {
                    "source": source,
                    "resolution": int(resolution),
                    "batch_size": batch_size,
                    "num_images": num_images,
                    "images_per_second": round(images_per_second, 1),
                    "prepare_seconds": round(prepare_seconds, 2),
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'source':<10} {'res':>4} {'images/s':>10} {'prepare s':>10}"]
    lines += [
        f"{row['source']:<10} {row['resolution']:>4} {row['images_per_second']:>10.1f} "
        f"{row['prepare_seconds']:>10.2f}"
        for row in rows
    ]
    return "\n".join(lines)


_RESOLUTIONS = flags.DEFINE_list("resolutions", ["64", "128"], "Image sides to measure.")
_SOURCES = flags.DEFINE_list("sources", ["synthetic", "folder"], "Sources to measure.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1024, "Images in each data set.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 20, "Timed batches per measurement.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where to write the data sets (temp dir).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Optional path of a JSON file of the rows.")


def main(argv):
    del argv
    from ilsgan_jax import runtime

    runtime.hide_accelerators_from_tensorflow()
    rows = benchmark_input(
        [int(r) for r in _RESOLUTIONS.value],
        tuple(_SOURCES.value),
        num_images=_NUM_IMAGES.value,
        batch_size=_BATCH_SIZE.value,
        num_batches=_NUM_BATCHES.value,
        work_dir=_WORK_DIR.value,
    )
    print(format_table(rows))
    if _JSON_OUT.value:
        with open(_JSON_OUT.value, "w") as json_file:
            json.dump(rows, json_file, indent=2)


if __name__ == "__main__":
    app.run(main)
