"""`--mode=layer_figure` (`stages.layer_figure`) on two real (2-step) GAN runs at 16 px, ILS on and
ILS off, in process: the figure's size is blocks x rows x columns x resolution; the ILS-on block
equals the rows recomputed here from the trained state and the seed; the blocks of the two runs
differ; a run without checkpoints fails naming the path. The ablation table of fixture reports.
`--mode=ils_gradients` on the same two runs.
"""

import json
import os

import numpy as np
import pytest
from loop_helpers import RESOLUTION
from PIL import Image
from stage_helpers import stage_config, train_tiny_gan

from ilsgan_jax.stages import layer_figure, modes

pytestmark = pytest.mark.timeout(900)

COLUMNS = 8  # the mode's defaults
SCALE = 2
CELL = SCALE * RESOLUTION + 1  # an image and its padding
BLOCK_HEIGHT = layer_figure.LABEL_HEIGHT + len(layer_figure.FIGURE_ROWS) * CELL + 1


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return stage_config(str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def runs(config, tmp_path_factory):
    """Two 2-step runs from the same seed: ILS on (the tiny config) and ILS off."""
    off_config = config.copy_and_resolve_references()
    off_config.loss.ils.enabled = False
    return {
        "on": train_tiny_gan(config, str(tmp_path_factory.mktemp("on"))),
        "off": train_tiny_gan(off_config, str(tmp_path_factory.mktemp("off"))),
    }


@pytest.fixture(scope="module")
def figure(config, runs, tmp_path_factory):
    """The mode's figure of [ILS on, ILS off] at its default path: uint8 [H, W, 3] and caption."""
    workdir = str(tmp_path_factory.mktemp("figure"))
    specs = [f"ILS on={runs['on']['workdir']}", f"ILS off={runs['off']['workdir']}"]
    modes.run_mode("layer_figure", config, workdir, runs=specs)
    path = os.path.join(workdir, "layer_figure.png")
    with open(os.path.join(workdir, "layer_figure.json")) as file:
        caption = json.load(file)
    return np.asarray(Image.open(path).convert("RGB")), caption


def expected_rows(config, state) -> list[np.ndarray]:
    """The ILS-on block's rows recomputed from the state: z ~ N(0, 1) [COLUMNS, z_dim] from the
    first half of split(key(seed + 12345)), the EMA generator with constant noise; uint8
    [COLUMNS, R, R, 3] per row (composite, fg, bg, mask 0 -> 0 and 1 -> 255)."""
    import jax

    from ilsgan_jax.evaluate.samples import to_uint8
    from ilsgan_jax.train import builders

    z_key, _ = jax.random.split(jax.random.key(config.seed + 12345))
    z = jax.random.normal(z_key, (COLUMNS, config.model.z_dim))
    generator = builders.build_networks(config).generator
    variables = {"params": state.g_ema_params, **state.g_ema_buffers}
    apply = jax.jit(lambda variables, z: generator.apply(variables, z, noise_mode="const"))
    layers = jax.device_get(apply(variables, z))
    mask = np.broadcast_to(layers["mask"] * 2.0 - 1.0, layers["fg_rgb"].shape)
    return [to_uint8(x) for x in (layers["composite"], layers["fg_rgb"], layers["bg_rgb"], mask)]


def image_cell(block: np.ndarray, row: int, column: int) -> np.ndarray:
    """The image at (row, column) of a block, shrunk back to R px (every SCALE-th pixel)."""
    top = layer_figure.LABEL_HEIGHT + 1 + row * CELL
    left = 1 + column * CELL
    return block[top : top + SCALE * RESOLUTION : SCALE, left : left + SCALE * RESOLUTION : SCALE]


def test_figure_size_is_blocks_rows_columns_resolution(figure):
    image, caption = figure
    assert image.shape == (2 * BLOCK_HEIGHT, COLUMNS * CELL + 1, 3)
    assert [run["label"] for run in caption["runs"]] == ["ILS on", "ILS off"]
    assert [run["checkpoint_step"] for run in caption["runs"]] == [2, 2]
    assert caption["rows"] == ["composite", "foreground", "background", "mask"]
    assert (caption["num_columns"], caption["scale"]) == (COLUMNS, SCALE)


def test_ils_on_block_equals_the_rows_of_the_trained_generator(config, runs, figure):
    image, _ = figure
    block = image[:BLOCK_HEIGHT]
    rows = expected_rows(config, runs["on"]["result"].state)
    for r, expected in enumerate(rows):
        for c in range(COLUMNS):
            cell = image_cell(block, r, c).astype(int)
            # jit vs eager float rounding may move a value across a quantisation step.
            assert np.abs(cell - expected[c]).max() <= 1, (r, c)
            top = layer_figure.LABEL_HEIGHT + 1 + r * CELL
            left = 1 + c * CELL
            enlarged = block[top : top + CELL - 1, left : left + CELL - 1]
            np.testing.assert_array_equal(
                enlarged, np.repeat(np.repeat(enlarged[::2, ::2], 2, 0), 2, 1)
            )
    # White padding between images, black text in the label strip.
    assert (block[layer_figure.LABEL_HEIGHT + CELL, :] == 255).all()
    assert block[: layer_figure.LABEL_HEIGHT, :40].min() < 100


def test_blocks_of_ils_on_and_off_differ(figure):
    image, _ = figure
    on, off = image[:BLOCK_HEIGHT], image[BLOCK_HEIGHT:]
    assert not np.array_equal(on[layer_figure.LABEL_HEIGHT :], off[layer_figure.LABEL_HEIGHT :])
    assert not np.array_equal(on[: layer_figure.LABEL_HEIGHT], off[: layer_figure.LABEL_HEIGHT])


def test_run_without_checkpoints_fails_naming_the_path(config, runs, tmp_path):
    missing = str(tmp_path / "no_such_run")
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        layer_figure.write_layer_figure(
            config,
            [("ILS on", runs["on"]["workdir"]), ("ILS off", missing)],
            str(tmp_path / "f.png"),
        )
    assert not os.path.exists(missing) and not os.path.exists(tmp_path / "f.png")
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=str(empty / "checkpoints")):
        layer_figure.run_rows(config, str(empty), COLUMNS)


@pytest.mark.parametrize(
    "specs",
    [[], ["ILS on"], ["=runs/a"], ["ILS on= "]],
    ids=["empty", "no-eq", "no-label", "no-dir"],
)
def test_parse_runs_rejects_malformed_items(specs):
    with pytest.raises(ValueError, match="--runs"):
        layer_figure.parse_runs(specs)


def test_parse_runs_keeps_order_and_labels_with_spaces():
    assert layer_figure.parse_runs(["ILS on=runs/a", " ILS off = gs://b/x=1"]) == [
        ("ILS on", "runs/a"),
        ("ILS off", "gs://b/x=1"),
    ]


def report(ils: bool, iou: float, kimg: float, minutes: float) -> dict:
    """A demo report.json with the fields the table reads."""
    return {
        "ils_enabled": ils,
        "per_image_iou": iou,
        "per_image_dice": iou + 0.1,
        "synthetic_mask_coverage": 0.3 if ils else 0.5,
        "synthetic_full_fraction": 0.0 if ils else 0.25,
        "gan_images_seen": int(kimg * 1000),
        "gan_seconds": minutes * 60,
    }


def test_ablation_table_rows_from_report_files(tmp_path):
    reports = {
        "on_seed0": report(True, 0.8, 60.0, 20.0),
        "off_seed0": report(False, 0.6, 60.0, 18.5),
        "on_seed1": report(True, 0.7, 59.968, 21.0),
    }
    for name, payload in reports.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(payload))
    entries = layer_figure.ablation_entries(str(tmp_path), ["0", "1"])
    assert [(seed, arm, rep is None) for seed, arm, rep in entries] == [
        ("0", "on", False),
        ("0", "off", False),
        ("1", "on", False),
        ("1", "off", True),
    ]
    lines = layer_figure.ablation_table(entries).splitlines()
    assert lines[0].startswith("| seed | ILS | kimg | per-image IoU | DICE | mask coverage |")
    assert lines[2:] == [
        "| 0 | on | 60.0 | 0.800 | 0.900 | 0.30 | 0.00 | 20.0 |",
        "| 0 | off | 60.0 | 0.600 | 0.700 | 0.50 | 0.25 | 18.5 |",
        "| 1 | on | 60.0 | 0.700 | 0.800 | 0.30 | 0.00 | 21.0 |",
        "| 1 | off | (no report) | | | | | |",
        "| mean of 2 | on | 60.0 | 0.750 | 0.850 | 0.30 | 0.00 | 20.5 |",
    ]


FAKE_PYTHON = """#!{executable}
# Records `-m ilsgan_jax.main` commands (a demo writes a report.json), runs scripts for real.
import json, os, runpy, sys

args = sys.argv[1:]
if args[:2] != ["-m", "ilsgan_jax.main"]:
    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")
    sys.exit()
with open(os.environ["RECORD"], "a") as file:
    file.write(json.dumps(args[2:]) + "\\n")
options = dict(arg.split("=", 1) for arg in args[2:])
if options["--mode"] == "demo":
    os.makedirs(options["--workdir"])
    report = {report}
    report["ils_enabled"] = not options["--config"].endswith(",ils=0")
    with open(os.path.join(options["--workdir"], "report.json"), "w") as file:
        json.dump(report, file)
"""


def test_ablation_script_runs_both_arms_per_seed_then_figure_and_table(tmp_path, config_from_flags):
    import subprocess
    import sys

    from ilsgan_jax.main import MODES

    fake = tmp_path / "python"
    fake_report = report(True, 0.5, 2.0, 1.0)
    fake.write_text(FAKE_PYTHON.format(executable=sys.executable, report=repr(fake_report)))
    fake.chmod(0o755)
    runs_dir = tmp_path / "runs"
    (runs_dir / "off_seed1").mkdir(parents=True)  # done before: skipped
    (runs_dir / "off_seed1" / "report.json").write_text(json.dumps(report(False, 0.4, 2.0, 1.0)))
    record = tmp_path / "record.jsonl"
    completed = subprocess.run(
        ["bash", "launch/ils_ablation.sh", str(runs_dir), "0 1", "--config.train.batch_size=8"],
        cwd=os.path.join(os.path.dirname(__file__), os.pardir),
        env={**os.environ, "PYTHON": str(fake), "KIMG": "2", "RECORD": str(record)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
    commands = [json.loads(line) for line in record.read_text().splitlines()]
    options = [dict(arg.split("=", 1) for arg in command) for command in commands]
    assert [(o["--mode"], o["--workdir"]) for o in options] == [
        ("demo", f"{runs_dir}/on_seed0"),
        ("demo", f"{runs_dir}/off_seed0"),
        ("demo", f"{runs_dir}/on_seed1"),
        ("layer_figure", str(runs_dir)),
    ]
    for command, option in zip(commands, options, strict=True):
        assert option["--mode"] in MODES
        overrides = [arg for arg in command if arg.startswith("--config.")]
        config = config_from_flags(option["--config"], *overrides)  # unknown keys raise
        assert config.data.synthetic_background == "structured"
        assert (config.train.total_kimg, config.train.time_budget_minutes) == (2.0, 0.0)
        assert config.train.batch_size == 8  # the extra flags
        assert config.seed == (1 if option["--workdir"].endswith("seed1") else 0)
        assert config.loss.ils.enabled == (not option["--workdir"].endswith(("off_seed0", "off")))
    figure = options[-1]
    assert figure["--output"] == f"{runs_dir}/ils_on_vs_off.png"
    assert layer_figure.parse_runs(figure["--runs"].split(",")) == [
        ("ILS on", f"{runs_dir}/on_seed0"),
        ("ILS off", f"{runs_dir}/off_seed0"),
    ]
    assert "ILS off, seed 1: done before" in completed.stdout
    assert "| 1 | off | 2.0 | 0.400 | 0.500 | 0.50 | 0.25 | 1.0 |" in completed.stdout
    assert "| mean of 2 | on | 2.0 | 0.500 | 0.600 | 0.30 | 0.00 | 1.0 |" in completed.stdout


def test_ils_gradients_mode_reports_every_run(config, runs, tmp_path):
    """`--mode=ils_gradients` on the same two runs: one report per label at the run's last
    step; both runs are measured with ILS on (the ILS-off run's bound and gradient too), and the
    ratios at the two schedule weights differ by their quotient."""
    specs = [f"on={runs['on']['workdir']}", f"off={runs['off']['workdir']}"]
    modes.run_mode("ils_gradients", config, str(tmp_path), runs=specs)
    with open(tmp_path / "ils_gradients.json") as file:
        reports = json.load(file)
    assert sorted(reports) == ["off", "on"]
    ils = config.loss.ils
    for report in reports.values():
        assert report["checkpoint_step"] == 2
        assert report["grad_norm/ils"]["all"] > 0 and report["grad_norm/adversarial"]["all"] > 0
        ratios = report["ratio/ils_over_adversarial"]
        np.testing.assert_allclose(
            ratios[f"sigma={ils.sigma:g}"] / ratios[f"sigma={ils.initial_sigma:g}"],
            ils.sigma / ils.initial_sigma,
            rtol=1e-5,
        )
    assert reports["on"]["ils"] != reports["off"]["ils"]
