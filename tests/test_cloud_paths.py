"""Workdirs on a non-local file system, offline: URLs stay URLs and nothing lands in a local folder.

- train -> checkpoint -> resume -> export -> train_segmenter with `--workdir=ram://bucket/run`:
  TensorFlow's in-memory file system, registered with etils.epath as a URL scheme routed to
  epath's tf.io.gfile backend (the backend epath picks for gs://, s3:// and az:// when
  TensorFlow is installed). The TensorBoard events (clu -> tf.summary), sample grids, the export
  (TFRecord shards through tf.io, tfds metadata through epath, PNGs), the reports and previews
  are written there and read back, the process runs in an empty current directory, and that
  directory stays empty.
  Tested on a local path only: what orbax writes, i.e. the train-state checkpoints and the
  segmenter's weights. Orbax writes arrays through TensorStore, whose kvstore drivers are `file`
  and `gcs` (not TensorFlow's file systems), and moves finished checkpoints into place by
  renaming a directory, which TensorFlow's ram:// does not do (it renames the directory entry
  and drops the files under it). The test therefore maps the orbax directories under ram:// to a
  local folder (`saved_pytrees.orbax_path`); on gs:// orbax uses TensorStore's gcs driver and
  commit markers instead of renames. The synthetic data set (tfds data_dir) is local as well:
  tfds prepares a data set by renaming its directory.
- `--workdir` handling: a gs:// URL is kept as it is and probed through epath, never made
  absolute or local; one that cannot be written (no credentials, here a stand-in gs:// backend
  that refuses) fails naming the URL, as does a gs:// URL without the GCS client orbax needs
  there; malformed URLs (`gs:/x`, `gs://`) and unknown schemes fail before anything is compiled,
  through `python -m ilsgan_jax.main` too. No test contacts real GCS.
"""

import io
import os
import subprocess
import sys
import uuid

import jax
import numpy as np
import pytest
import tensorflow as tf
from loop_helpers import CONFIG_PATH, REPO_ROOT, RESOLUTION, tiny_loop_config
from PIL import Image

from ilsgan_jax import files
from ilsgan_jax.train import saved_pytrees

pytestmark = pytest.mark.timeout(900)

SAMPLE_IMAGES = 4  # TINY_OVERRIDES["train.num_sample_images"]


def register_ram_scheme(monkeypatch) -> None:
    """Makes `epath.Path('ram://...')` a URL of TensorFlow's in-memory file system, handled by
    epath's tf.io.gfile backend like gs://."""
    from etils.epath import backend, gpath, register

    monkeypatch.setattr(gpath, "_URI_PREFIXES", (*gpath._URI_PREFIXES, "ram://"))
    monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {"ram"})
    monkeypatch.setitem(gpath._URI_MAP_ROOT, "ram://", "/ram/")
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "ram", backend.tf_backend)
    monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, "ram://", gpath.PosixGPath)


def map_orbax_to_local(monkeypatch, local_root) -> None:
    """Orbax directories under ram:// go to `local_root/<the rest of the URL>` (see above)."""
    original = saved_pytrees.orbax_path

    def orbax_path(directory):
        directory = os.fspath(directory)
        if directory.startswith("ram://"):
            directory = os.path.join(local_root, directory[len("ram://") :])
        return original(directory)

    monkeypatch.setattr(saved_pytrees, "orbax_path", orbax_path)


def read_png(url: str) -> np.ndarray:
    with tf.io.gfile.GFile(url, "rb") as file:
        return np.asarray(Image.open(io.BytesIO(file.read())))


def all_files(url: str) -> list[str]:
    return [os.path.join(root, name) for root, _, names in tf.io.gfile.walk(url) for name in names]


# ----------------------------------------------------------------------------------------------
# train -> checkpoint -> resume -> export -> train_segmenter on ram://
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ram_scheme(tmp_path_factory):
    """ram:// registered with epath, orbax's directories under it mapped to a local folder."""
    orbax_root = tmp_path_factory.mktemp("orbax")
    with pytest.MonkeyPatch.context() as patch:
        register_ram_scheme(patch)
        map_orbax_to_local(patch, str(orbax_root))
        yield orbax_root


@pytest.fixture(scope="module")
def cloud_run(ram_scheme, tmp_path_factory):
    from ilsgan_jax.stages import export, segmentation
    from ilsgan_jax.train import loop

    local = tmp_path_factory.mktemp("cloud")
    cwd = local / "cwd"
    cwd.mkdir()
    workdir = f"ram://ilsgan-{uuid.uuid4().hex[:8]}/run1"
    data_dir = str(local / "tfds")
    schedule = dict(log_every=2, sample_every=2, checkpoint_every=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        assert files.prepare_workdir(workdir) == workdir  # what main does first
        first = loop.train_and_evaluate(
            tiny_loop_config(data_dir, num_steps=2, **schedule), workdir
        )
        config = tiny_loop_config(data_dir, num_steps=4, **schedule)
        resumed = loop.train_and_evaluate(config, workdir)
        config.export.png = True
        config.segmenter.num_steps = 16
        config.segmenter.eval_every_steps = 8
        export_dir = export.export_pairs(config, workdir)
        report = segmentation.train_and_score_segmenter(config, workdir)
        variables = segmentation.load_segmenter(config, workdir)
        local_leftovers = sorted(os.listdir(cwd))
    return dict(
        workdir=workdir,
        orbax_root=ram_scheme,
        first=first,
        resumed=resumed,
        export_dir=export_dir,
        report=report,
        variables=variables,
        local_leftovers=local_leftovers,
    )


def test_nothing_is_written_to_the_local_directory(cloud_run):
    assert cloud_run["local_leftovers"] == []
    for result in ("first", "resumed"):
        assert cloud_run[result].sample_png.startswith(cloud_run["workdir"])
    assert cloud_run["export_dir"].startswith(cloud_run["workdir"])


def test_checkpoint_and_resume(cloud_run):
    first, resumed = cloud_run["first"], cloud_run["resumed"]
    assert first.steps == 2 and resumed.steps == 4
    assert resumed.images_this_run == 2 * 8  # two steps of batch 8 after the resume
    checkpoints = cloud_run["orbax_root"] / cloud_run["workdir"][len("ram://") :] / "checkpoints"
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [2, 4]


def test_tensorboard_events_and_samples_on_the_url(cloud_run):
    workdir = cloud_run["workdir"]
    assert tf.io.gfile.glob(f"{workdir}/events.out.tfevents.*")
    names = sorted(tf.io.gfile.listdir(f"{workdir}/samples"))
    assert names == ["latest.png", "step_0000002.png", "step_0000004.png"]
    grid = read_png(f"{workdir}/samples/latest.png")
    assert grid.shape == (6 * (RESOLUTION + 1) + 1, SAMPLE_IMAGES * (RESOLUTION + 1) + 1, 3)
    np.testing.assert_array_equal(grid, read_png(f"{workdir}/samples/step_0000004.png"))


def test_export_is_a_tfds_data_set_on_the_url(cloud_run):
    from ilsgan_jax.evaluate import pair_dataset

    export_dir = cloud_run["export_dir"]
    arrays = pair_dataset.read_arrays(export_dir, keys=("image", "mask"))
    assert arrays["image"].shape == (20, RESOLUTION, RESOLUTION, 3)  # export.num_pairs
    workdir = cloud_run["workdir"]
    assert tf.io.gfile.exists(f"{workdir}/export/export_settings.json")
    mask = read_png(f"{workdir}/export/png/0000019_mask.png")
    np.testing.assert_array_equal(mask, arrays["mask"][19, ..., 0] * 255)


def test_segmenter_report_previews_and_weights(cloud_run):
    workdir, report = cloud_run["workdir"], cloud_run["report"]
    assert tf.io.gfile.exists(f"{workdir}/segmenter/report.json")
    assert report["num_synthetic_pairs"] == 20
    preview = read_png(f"{workdir}/previews/segmentation.png")
    assert preview.shape[0] == 4 * (RESOLUTION + 1) + 1
    weights = cloud_run["orbax_root"] / workdir[len("ram://") :] / "segmenter" / "weights"
    assert weights.is_dir()
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(cloud_run["variables"])]
    assert leaves and all(np.isfinite(leaf).all() for leaf in leaves)


def test_no_temporary_files_are_left_on_the_url(cloud_run):
    leftovers = [
        path
        for path in all_files(cloud_run["workdir"])
        if ".tmp-" in os.path.basename(path) or ".write_probe" in os.path.basename(path)
    ]
    assert leftovers == []


# ----------------------------------------------------------------------------------------------
# --workdir handling
# ----------------------------------------------------------------------------------------------
class StandInGcs:
    """A gs:// backend for epath that keeps files in a dict (`refuse`: every call raises, like
    GCS without credentials)."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.files: dict[str, bytes] = {}
        self.directories: set[str] = set()
        self.calls: list[str] = []

    def _check(self, name, path):
        self.calls.append(f"{name} {path}")
        if self.refuse:
            raise PermissionError(f"401 Anonymous caller does not have storage access to {path}")

    def makedirs(self, path, *, exist_ok=False, mode=None):
        self._check("makedirs", path)
        self.directories.add(os.fspath(path))

    def open(self, path, mode):
        self._check("open", path)
        assert mode == "wb", mode
        backend = self

        class Writer(io.BytesIO):
            def close(self):
                backend.files[os.fspath(path)] = self.getvalue()
                super().close()

        return Writer()

    def remove(self, path):
        self._check("remove", path)
        del self.files[os.fspath(path)]


@pytest.fixture
def stand_in_gcs(monkeypatch, tmp_path):
    """Routes gs:// paths of epath to a StandInGcs (returned as a factory) and runs the test in
    an empty current directory."""
    from etils.epath import backend

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files, "SCHEME_PACKAGES", {})  # google-cloud-storage is not needed here

    def install(refuse=False):
        gcs = StandInGcs(refuse)
        monkeypatch.setattr(backend, "tf_backend", gcs)
        return gcs

    return install


def test_gs_workdir_is_probed_through_epath_and_kept_a_url(stand_in_gcs, tmp_path):
    gcs = stand_in_gcs()
    assert files.prepare_workdir("gs://bucket/run1") == "gs://bucket/run1"
    assert gcs.directories == {"gs://bucket/run1"}
    assert any(call.startswith("open gs://bucket/run1/.write_probe-") for call in gcs.calls)
    assert gcs.files == {}  # the probe file is deleted again
    assert list(tmp_path.iterdir()) == []


def test_gs_workdir_that_cannot_be_written_fails_naming_it(stand_in_gcs, tmp_path):
    stand_in_gcs(refuse=True)
    with pytest.raises(ValueError) as raised:
        files.prepare_workdir("gs://bucket/run1")
    message = str(raised.value)
    assert message.startswith("--workdir=gs://bucket/run1: cannot write there (PermissionError")
    assert "401 Anonymous caller" in message
    assert list(tmp_path.iterdir()) == []


def test_gs_workdir_without_the_gcs_client_fails_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(files.SCHEME_PACKAGES, "gs", ("ilsgan_no_such.module", "ilsgan_jax[gcs]"))
    with pytest.raises(ValueError) as raised:
        files.prepare_workdir("gs://bucket/run1")
    assert str(raised.value) == (
        "--workdir=gs://bucket/run1: gs:// needs the Python module ilsgan_no_such.module "
        "(pip install 'ilsgan_jax[gcs]')"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "workdir, expected",
    [
        ("gs:/bucket/run1", "malformed URL"),
        ("gs://", "malformed URL"),
        ("gs:///run1", "malformed URL"),
        ("nosuch://bucket/run1", "unsupported scheme nosuch://"),
    ],
)
def test_bad_urls_fail_naming_them(workdir, expected, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"^--workdir={workdir}: {expected}"):
        files.prepare_workdir(workdir)
    assert list(tmp_path.iterdir()) == []


def test_local_paths_are_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert files.prepare_workdir("run1") == str(tmp_path / "run1")
    assert sorted(os.listdir(tmp_path / "run1")) == []  # the probe file is deleted again
    assert files.resolve("gs://bucket/run1") == "gs://bucket/run1"


def test_unwritable_local_workdir_fails_naming_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=f"^--workdir={blocker}/run: cannot write there"):
        files.prepare_workdir(str(blocker / "run"))


@pytest.mark.parametrize(
    "workdir, expected",
    [("gs:/bucket/run1", "malformed URL"), ("nosuch://bucket/run1", "unsupported scheme")],
)
def test_main_fails_before_compiling_on_a_bad_workdir(workdir, expected, tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ilsgan_jax.main",
            f"--config={CONFIG_PATH}:runlocal,res=16",
            f"--workdir={workdir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
    )
    assert completed.returncode != 0
    assert f"--workdir={workdir}: {expected}" in completed.stderr, completed.stderr[-2000:]
    assert "JAX process" not in completed.stderr  # failed before JAX started
    assert list(tmp_path.iterdir()) == []
