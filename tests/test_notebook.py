"""The Colab TPU demo notebook: committed clean, and it runs top to bottom on CPU in SMOKE size.

The run executes the notebook in a fresh Jupyter kernel (nbclient) with two simulated CPU devices,
so the trainer's mesh really splits each batch over more than one device, as on a TPU.
"""

import base64
import json
import os
import pathlib
import re
import time
import types

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from ilsgan_jax.evaluate import pair_dataset
from ilsgan_jax.evaluate.samples import GRID_ROWS
from ilsgan_jax.train import builders

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "launch" / "colab_tpu_demo.ipynb"

# The SMOKE sizes the notebook's config cell sets (checked against the files the run writes).
SMOKE_RESOLUTION = 16
SMOKE_NUM_SAMPLE_IMAGES = 16  # config.train.num_sample_images (the runlocal default)
SMOKE_EXPORT_PAIRS = 200
SMOKE_EXPORT_SHARD = 100
SMOKE_TEST_IMAGES = 50
SMOKE_TRAIN_STEPS = 30
KERNEL_DEVICES = 2


def read_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def substitute_parameter(source: str, name: str, value: str) -> str:
    """Replaces the one top-level assignment `name = ...` in the parameter cell."""
    new_source, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", source, flags=re.M)
    if count != 1:
        raise AssertionError(f"parameter cell must assign {name} exactly once, found {count}")
    return new_source


def test_notebook_is_committed_clean_and_valid():
    notebook = read_notebook()
    nbformat.validate(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == [], f"cell {cell.get('id')} has stored outputs"
        assert cell.execution_count is None, f"cell {cell.get('id')} has an execution count"
    assert "widgets" not in notebook.metadata
    parameters = code_cells(notebook)[0]
    assert "parameters" in parameters.metadata.get("tags", [])
    # A Colab user gets the full run; CI flips SMOKE.
    assert re.search(r"^SMOKE = False\b", parameters.source, flags=re.M)
    assert re.search(r"^RUN_CUB = False\b", parameters.source, flags=re.M)
    # The CUB section must never run in SMOKE size.
    cub_cells = [cell for cell in code_cells(notebook) if "'cub'" in cell.source]
    assert len(cub_cells) == 1
    assert cub_cells[0].source.startswith("if not SMOKE and RUN_CUB:")


@pytest.mark.parametrize(
    "smoke, backend, num_devices, resolution, batch_size",
    [
        (False, "tpu", 8, 64, 256),  # Colab TPU v2-8: paper widths, 32 per core
        (False, "tpu", 4, 64, 128),
        (False, "cpu", 1, 32, 32),  # CPU runtime: the `make demo` config
        (True, "tpu", 8, 16, 32),  # SMOKE on a TPU: 4 per core
        (True, "cpu", 1, 16, 8),
    ],
)
def test_config_cell_gives_a_valid_config_for_each_runtime(
    smoke, backend, num_devices, resolution, batch_size
):
    """Runs the parameter and config cells in-process with a stand-in for `jax` that reports the
    runtime's backend and device count; the trainer's own check must accept the result."""
    cells = {cell.get("id"): cell for cell in code_cells(read_notebook())}
    namespace = {}
    exec(cells["parameters"].source, namespace)
    namespace["SMOKE"] = smoke
    namespace["jax"] = types.SimpleNamespace(
        device_count=lambda: num_devices, default_backend=lambda: backend
    )
    exec(cells["config"].source, namespace)
    config = namespace["config"]
    builders.validate_config(config, num_devices)
    assert config.data.name == "synthetic"
    assert config.data.resolution == resolution
    assert config.train.batch_size == batch_size
    assert config.data.data_dir is None  # DATA_DIR's default
    if smoke:
        assert config.train.total_kimg * 1000 / batch_size == pytest.approx(SMOKE_TRAIN_STEPS)
        assert config.export.num_pairs == SMOKE_EXPORT_PAIRS
    elif backend == "tpu":
        assert (config.model.channel_base, config.model.channel_max) == (16384, 256)
        assert config.ada.mode != "noaug"
        assert config.train.time_budget_minutes > 0


def displayed_pngs(cell) -> list[bytes]:
    return [
        base64.b64decode(output["data"]["image/png"])
        for output in cell.outputs
        if output.get("output_type") == "display_data" and "image/png" in output.get("data", {})
    ]


def stdout_of(cell) -> str:
    return "".join(
        output.get("text", "")
        for output in cell.outputs
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )


def cell_seconds(notebook) -> dict[str, float]:
    """Wall time of each executed code cell (nbclient's timing metadata)."""
    from datetime import datetime

    times = {}
    for cell in code_cells(notebook):
        timing = cell.metadata.get("execution", {})
        if "iopub.status.busy" in timing and "shell.execute_reply" in timing:
            begin = datetime.fromisoformat(timing["iopub.status.busy"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            times[cell.get("id")] = round((end - begin).total_seconds(), 1)
    return times


def test_notebook_runs_top_to_bottom_in_smoke_size(tmp_path, monkeypatch):
    notebook = read_notebook()
    workdir = tmp_path / "workdir"
    parameters = code_cells(notebook)[0]
    source = substitute_parameter(parameters.source, "SMOKE", "True")
    source = substitute_parameter(source, "WORKDIR", repr(str(workdir)))
    source = substitute_parameter(source, "DATA_DIR", repr(str(tmp_path / "tfds")))
    parameters.source = source

    # The kernel inherits this environment: two CPU devices for the mesh (conftest's eight would
    # give one image per device, below the minibatch-std group), conftest's LLVM level kept.
    opt_level = [
        flag
        for flag in os.environ["XLA_FLAGS"].split()
        if flag.startswith("--xla_backend_optimization_level")
    ]
    kernel_flags = [f"--xla_force_host_platform_device_count={KERNEL_DEVICES}", *opt_level]
    monkeypatch.setenv("XLA_FLAGS", " ".join(kernel_flags))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # not the repo: configs found anyway
    )
    start = time.time()
    client.execute()
    seconds = time.time() - start
    print(f"notebook executed in {seconds:.0f} s; per cell: {cell_seconds(notebook)}")

    cells = {cell.get("id"): cell for cell in code_cells(notebook)}
    assert "skipping installation" in stdout_of(cells["install"])
    assert f"{KERNEL_DEVICES} device(s) in 1 process(es)" in stdout_of(cells["devices"])
    assert re.search(r"^data\.resolution\s+16$", stdout_of(cells["config"]), flags=re.M)

    # Training: the configured number of steps, a checkpoint at the last one, a sample grid of the
    # layered rows, and the grid shown inline is the file on disk.
    assert re.search(rf"^{SMOKE_TRAIN_STEPS} steps, 0\.24 kimg", stdout_of(cells["train"]), re.M)
    checkpoint_steps = sorted(
        int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit()
    )
    assert checkpoint_steps and checkpoint_steps[-1] == SMOKE_TRAIN_STEPS
    latest = workdir / "samples" / "latest.png"
    grid = np.asarray(Image.open(latest))
    pad = 1
    assert grid.shape == (
        len(GRID_ROWS) * (SMOKE_RESOLUTION + pad) + pad,
        SMOKE_NUM_SAMPLE_IMAGES * (SMOKE_RESOLUTION + pad) + pad,
        3,
    )
    assert grid.std() > 0  # not a blank canvas
    assert displayed_pngs(cells["train"]) == [latest.read_bytes()]

    # Export: a tfds data set of the configured number of pairs with binary masks.
    export_dir = pair_dataset.dataset_dir(str(workdir / "export"))
    shards = sorted(pathlib.Path(export_dir).glob(f"{pair_dataset.DATASET_NAME}-train.tfrecord-*"))
    assert len(shards) == SMOKE_EXPORT_PAIRS // SMOKE_EXPORT_SHARD
    pairs = pair_dataset.read_arrays(export_dir, keys=("image", "mask"))
    assert pairs["image"].shape == (SMOKE_EXPORT_PAIRS, 16, 16, 3)
    assert set(np.unique(pairs["mask"])) <= {0, 1}

    # Segmenter report: written to the workdir, consistent with the data and with the table the
    # notebook printed.
    report = json.loads((workdir / "segmenter" / "report.json").read_text())
    assert report["data"] == "synthetic"
    assert report["resolution"] == SMOKE_RESOLUTION
    assert report["num_synthetic_pairs"] == SMOKE_EXPORT_PAIRS
    assert report["num_test_images"] == SMOKE_TEST_IMAGES
    for name in ("drc_iou", "drc_dice", "miou", "pixel_accuracy"):
        assert 0.0 <= report["test"][name] <= 1.0, name
    assert 0.0 < report["all_foreground_iou"] < 1.0
    printed = stdout_of(cells["segment"])
    assert f"per-image IoU (DRC)      {report['test']['drc_iou']:.3f}" in printed
    previews = workdir / "previews" / "segmentation.png"
    preview = np.asarray(Image.open(previews))
    tile = SMOKE_RESOLUTION + pad
    assert preview.shape == (4 * tile + pad, 16 * tile + pad, 3)  # 4 rows of 16 test images
    assert displayed_pngs(cells["segment"]) == [previews.read_bytes()]

    assert stdout_of(cells["cub"]).startswith("Skipped")
    assert not (tmp_path / "tfds" / "caltech_birds2011").exists()
