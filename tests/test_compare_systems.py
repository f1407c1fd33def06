"""`stages.compare` (`launch/compare_systems.py`): every row at the smoke size (train -> export
-> U-Net -> own route -> report), the report's fields, shapes and finiteness (not the learning),
the picture of every row's samples, resuming (finished rows are skipped, finished stages are
not run again), a failed row recorded with its reason while the other rows run, the unknown-row
and too-small-budget errors, and the budget plan at the runlocal size."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

from ilsgan_jax.stages import (
    compare,
    compare_budget,
    compare_figure,
    compare_rows,
    compare_settings,
    layer_figure,
)

pytestmark = pytest.mark.timeout(900)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
SCORES = ("per_image_iou", "per_image_dice", "miou", "pixel_accuracy")
SMOKE_RESOLUTION = 16


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """All rows at the smoke size, seed 0, through the launcher in a process of its own with
    one CPU device (cheaper to compile than the tests' 8 simulated devices), LLVM at -O0 and
    the tests' compilation cache: (workdir, results)."""
    workdir = str(tmp_path_factory.mktemp("compare"))
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run(
        [
            sys.executable,
            "launch/compare_systems.py",
            "--smoke",
            f"--workdir={workdir}",
            f"--data_dir={data_dir}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    return workdir, _read_json(os.path.join(workdir, "results.json"))["results"]


def _read_json(path):
    with open(path) as file:
        return json.load(file)


def test_smoke_every_row_reports(smoke):
    """Every row ran (status ok) with finite scores in [0, 1], its GAN stages' kimg and times,
    the machine, and its sample grid and previews copied into WORKDIR/<row>/."""
    workdir, results = smoke
    assert [r["row"] for r in results] == list(compare_rows.ROWS)
    for result in results:
        assert result["status"] == "ok", result
        for key in (*SCORES, "mask_coverage", "all_foreground_fraction", "all_foreground_iou"):
            assert 0.0 <= result[key] <= 1.0, (result["row"], key, result[key])
        assert result["kimg"] > 0 and result["minutes"] > 0 and result["images_per_second"] > 0
        assert math.isfinite(result["gan_minutes"])
        assert result["machine"]["cpu_count"] >= 1 and result["machine"]["device_kind"]
        row = compare_rows.ROWS[result["row"]]
        assert len(result["segmenter_seconds"]) == compare_budget.num_unets(row)
        for name in ("samples", "segmentation"):
            path = os.path.join(workdir, result["row"], f"{name}_seed0.png")
            assert result["files"][name] == path
            with Image.open(path) as image:
                assert image.mode == "RGB" and min(image.size) >= SMOKE_RESOLUTION
        assert result == _read_json(compare.result_path(workdir, result["row"], 0))
    labels4free = next(r for r in results if r["row"] == "labels4free")
    assert [stage["name"] for stage in labels4free["gan_stages"]] == ["stylegan2", "alpha"]


def test_smoke_test_sets_and_own_routes(smoke):
    """The synthetic rows share the synthetic test split; the one-image row is scored on crops
    (union IoU) and per instance (one IoU per object of the picture, one U-Net per slot);
    PerturbGAN's encoder and Labels4Free's thresholded alpha masks are scored."""
    _, results = smoke
    by_row = {r["row"]: r for r in results}
    synthetic = {r["test_set"] for name, r in by_row.items() if name != "independence_prior"}
    assert synthetic == {"synthetic test split (50 images)"}
    crops = by_row["independence_prior"]
    assert crops["num_test_images"] == compare_rows.SMOKE.test_crops
    assert "crops of multi_object_k3" in crops["test_set"]
    own = crops["own_route"]
    assert own["status"] == "ok" and len(own["per_instance_iou"]) == compare_rows.NUM_INSTANCES
    scored = [value for value in own["per_instance_iou"] if value is not None]
    assert scored and all(0.0 <= value <= 1.0 for value in scored)
    assert own["min_instance_iou"] == min(scored)
    assert own["per_image_iou"] == pytest.approx(sum(scored) / len(scored))
    assert len(crops["segmenter_seconds"]) == 1 + compare_rows.NUM_INSTANCES
    for name in ("perturbgan_ns_r1", "perturbgan_wgan_gp"):
        own = by_row[name]["own_route"]
        assert own["status"] == "ok" and own["encoder_steps"] == 2
        assert all(0.0 <= own[key] <= 1.0 for key in SCORES)
    alpha = by_row["labels4free"]["own_route"]
    assert alpha["status"] == "ok" and "> 0.9" in alpha["name"]
    assert all(0.0 <= alpha[key] <= 1.0 for key in (*SCORES, "mask_coverage"))
    for name in ("ilsgan", "ilsgan_ils_off"):
        assert by_row[name]["own_route"] is None


def test_smoke_results_table(smoke):
    """results.md has one table line per row and seed, and the own-route table."""
    workdir, results = smoke
    with open(os.path.join(workdir, "results.md")) as file:
        table = file.read()
    for result in results:
        line = next(x for x in table.splitlines() if x.startswith(f"| {result['row']} | 0 |"))
        assert line.endswith("| ok |") and f"{result['per_image_iou']:.3f}" in line
    assert "| independence_prior | 0 | per-instance IoU" in table
    assert "per object" in table


def test_smoke_systems_figure(smoke):
    """systems.png stacks one block per row (its label strip over its sample grid's columns, all
    of them at the smoke size) in table order; the first block's images are the first row's
    grid."""
    workdir, results = smoke
    figure_path = os.path.join(workdir, compare_figure.FIGURE_NAME)
    figure = np.asarray(Image.open(figure_path).convert("RGB"))
    grids = [np.asarray(Image.open(r["files"]["samples"]).convert("RGB")) for r in results]
    label = layer_figure.LABEL_HEIGHT
    assert figure.shape[0] == sum(label + grid.shape[0] for grid in grids)
    assert figure.shape[1] == max(grid.shape[1] for grid in grids)
    first = grids[0]
    np.testing.assert_array_equal(figure[label : label + first.shape[0], : first.shape[1]], first)
    assert compare_figure.grid_resolution(results[0]) == SMOKE_RESOLUTION


def test_second_call_skips_finished_rows(smoke, monkeypatch):
    """A second call trains nothing: every row's result exists."""
    workdir, results = smoke

    def fail(*args, **kwargs):
        raise AssertionError("a finished row ran again")

    monkeypatch.setattr(compare.RowRun, "run", fail)
    again = compare.run_comparison(None, [0], workdir, size="smoke")
    assert again == results


def test_a_row_run_with_other_settings_is_refused_before_training(smoke, monkeypatch):
    """Each smoke row recorded its stages' configs; a call into the same workdir with a field
    changed names the row, the file, the field with both values, and trains nothing."""
    workdir, results = smoke
    recorded = _read_json(os.path.join(workdir, "ilsgan", "seed0", "settings.json"))
    assert recorded["gan"]["data.resolution"] == SMOKE_RESOLUTION
    assert "train.time_budget_minutes" not in recorded["gan"]

    def fail(*args, **kwargs):
        raise AssertionError("a row ran with other settings")

    monkeypatch.setattr(compare.RowRun, "run", fail)
    width = recorded["gan"]["model.w_dim"]
    with pytest.raises(
        compare_settings.SettingsChanged,
        match=rf"row 'ilsgan' seed 0 in .*ilsgan/seed0/settings\.json\): "
        rf"gan: model\.w_dim: {width} there, {width + 1} now\. Use another --workdir",
    ):
        compare.run_comparison(
            ["ilsgan"], [0], workdir, size="smoke", overrides={"model.w_dim": width + 1}
        )
    assert _read_json(os.path.join(workdir, "results.json"))["results"] == results


def test_the_config_docstring_recipe_is_the_row(config_from_flags):
    """The `--config.` flags the Independence-prior config's docstring gives for the row
    (its lines indented by two spaces) parse, with config_flags as `ilsgan_jax.main` does, to
    the row's every override."""
    from configs import independence_prior

    lines = [line for line in independence_prior.__doc__.splitlines() if line.startswith("  --")]
    recipe = []
    for line in lines:
        flags = re.findall(r"--config\.[\w.]+=(?:'[^']*'|\S+)", line)
        recipe += [flag.replace("'", "") for flag in flags]
    assert len(recipe) == len(compare_rows.INDEPENDENCE_PRIOR_OVERRIDES)
    config = config_from_flags(
        f"configs/independence_prior.py:runlocal,k={compare_rows.NUM_INSTANCES}", *recipe
    )
    for field, value in compare_rows.INDEPENDENCE_PRIOR_OVERRIDES:
        node = config
        for key in field.split("."):
            node = node[key]
        assert (tuple(node) if isinstance(value, tuple) else node) == value, field


def test_settings_leave_out_budget_and_locations_and_name_every_change(tmp_path):
    """Tuples compare as lists; the time budget and the data and pretrained locations are not
    settings; each changed or missing field is named with both values; no file: not on record."""
    config = ml_collections.ConfigDict(
        {
            "train": {"time_budget_minutes": 5.0, "total_kimg": 100.0},
            "data": {"data_dir": "/a", "crop_fraction": (0.25, 0.45)},
        }
    )
    settings = compare_settings.row_settings({"gan": config})
    assert settings == {"gan": {"train.total_kimg": 100.0, "data.crop_fraction": [0.25, 0.45]}}
    seed_dir = str(tmp_path / "row" / "seed0")
    assert not compare_settings.check(seed_dir, settings, "row")
    compare_settings.record(seed_dir, settings)
    config.train.time_budget_minutes, config.data.data_dir = 30.0, "/b"
    assert compare_settings.check(seed_dir, compare_settings.row_settings({"gan": config}), "row")
    config.data.crop_fraction = (0.3, 0.6)
    changed = compare_settings.row_settings({"gan": config, "alpha": config})
    assert compare_settings.differences(settings, changed) == [
        "alpha: data.crop_fraction: 'absent' there, [0.3, 0.6] now",
        "alpha: train.total_kimg: 'absent' there, 100.0 now",
        "gan: data.crop_fraction: [0.25, 0.45] there, [0.3, 0.6] now",
    ]
    with pytest.raises(compare_settings.SettingsChanged, match=r"^row was run with other"):
        compare_settings.check(seed_dir, changed, "row")


def test_failed_row_is_recorded_and_the_others_run(smoke, monkeypatch):
    """With two rows' results gone, one that fails is recorded as failed (with the reason, in
    the table too) and the other runs again from its progress, without training; a third call
    runs the failed row again."""
    workdir, _ = smoke
    for name in ("ilsgan", "ilsgan_ils_off"):
        os.remove(compare.result_path(workdir, name, 0))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished GAN stage trained again")

    real_run = compare.RowRun.run

    def run_or_fail(run):
        if run.row.name == "ilsgan":
            raise FloatingPointError("injected: non-finite loss")
        return real_run(run)

    monkeypatch.setattr(compare, "train_and_evaluate", no_training)
    monkeypatch.setattr(compare.RowRun, "run", run_or_fail)
    results = compare.run_comparison(["ilsgan", "ilsgan_ils_off"], [0], workdir, size="smoke")
    failed, other = results
    assert failed["status"] == "failed"
    assert failed["reason"] == "FloatingPointError: injected: non-finite loss"
    assert other["status"] == "ok" and other["row"] == "ilsgan_ils_off"
    with open(os.path.join(workdir, "results.md")) as file:
        table = file.read()
    assert "| failed: FloatingPointError: injected: non-finite loss |" in table
    monkeypatch.setattr(compare.RowRun, "run", real_run)
    (rerun,) = compare.run_comparison(["ilsgan"], [0], workdir, size="smoke")
    assert rerun["status"] == "ok"


def test_unknown_row_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown row.*'nope'.*'ilsgan', 'ilsgan_ils_off'"):
        compare.run_comparison(["ilsgan", "nope"], [0], str(tmp_path))
    assert not os.listdir(tmp_path)


def _launch(*args: str) -> subprocess.CompletedProcess:
    """`launch/compare_systems.py args...` in a process of its own, output captured."""
    return subprocess.run(
        [sys.executable, "launch/compare_systems.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_unknown_row(tmp_path):
    """The launcher exits with the error before any training."""
    completed = _launch("--systems=nope", f"--workdir={tmp_path}")
    assert completed.returncode != 0
    assert "unknown row(s) ['nope']" in completed.stderr and "labels4free" in completed.stderr


def test_cli_override_of_an_unknown_field(tmp_path):
    """`--set` with a field the row's config lacks fails before training, naming the row and the
    field."""
    completed = _launch(f"--workdir={tmp_path}", "--smoke", "--systems=ilsgan", "--set=loss.nope=1")
    assert completed.returncode != 0
    assert "row 'ilsgan', stage 'gan'" in completed.stderr and "loss.nope" in completed.stderr
    assert not os.path.exists(tmp_path / "ilsgan")


def test_overrides_reach_every_stage_and_the_result(tmp_path, monkeypatch):
    """An override is applied to the stage configs (after the row's and the size's) and
    recorded in the row's result; a row without the field is refused before anything runs."""
    row, size = compare_rows.ROWS["labels4free"], compare_rows.SMOKE
    overrides = (("loss.r1_gamma", 3.0), ("train.batch_size", 16))
    run = compare.RowRun(
        row, 0, size, compare_budget.plan_row(row, size, 25.0, {}), str(tmp_path), None, overrides
    )
    for index in range(len(row.stages)):
        assert run.config(index).loss.r1_gamma == 3.0
        assert run.config(index).train.batch_size == 16  # the size sets 8
    with pytest.raises(ValueError, match="row 'ilsgan', stage 'gan'.*loss.area_weight"):
        compare.run_comparison(
            ["independence_prior", "ilsgan"],
            [0],
            str(tmp_path / "refused"),
            size="smoke",
            overrides={"loss.area_weight": 0.2},
        )
    assert not os.path.exists(tmp_path / "refused" / "independence_prior")

    def fake_run(self):
        raise RuntimeError(f"area weight {self.config(0).loss.area_weight}")

    monkeypatch.setattr(compare.RowRun, "run", fake_run)
    (result,) = compare.run_comparison(
        ["independence_prior"],
        [0],
        str(tmp_path / "ip"),
        size="smoke",
        overrides={"loss.area_weight": 0.2},
    )
    assert result["overrides"] == {"loss.area_weight": 0.2}
    assert result["status"] == "failed" and "area weight 0.2" in result["reason"]


def test_too_small_budget_fails_before_training(tmp_path):
    """The error names the minimum; no row directory is made."""
    with pytest.raises(compare_budget.BudgetTooSmall, match=r"labels4free.*at least 11\.5 minutes"):
        compare.run_comparison(["ilsgan", "labels4free"], [0], str(tmp_path), budget_minutes=10)
    assert os.listdir(tmp_path) == []


def test_a_row_with_a_budget_scale_gets_that_multiple_and_names_the_least_flag(tmp_path):
    """The one-image row's budget is budget_scale x --budget_minutes: at 25 its GAN stage gets
    25 x scale less the export, 1 + K U-Nets and the set-up; too small a flag is refused with the
    least --budget_minutes (its row minimum / scale, rounded up to 0.1) before anything runs."""
    row = compare_rows.ROWS["independence_prior"]
    assert row.budget_scale > 1
    assert row.budget_minutes(25.0) == pytest.approx(25.0 * row.budget_scale)
    fixed = 0.5 + (1 + compare_rows.NUM_INSTANCES) * 2.5 + 1.0
    least = math.ceil((fixed + 2.0) / row.budget_scale * 10) / 10
    with pytest.raises(
        compare_budget.BudgetTooSmall,
        match=rf"--budget_minutes=5 is too small for row 'independence_prior': it needs at least "
        rf"{least:g} minutes \(its budget is {row.budget_scale:g} x that\)",
    ):
        compare.run_comparison(["independence_prior"], [0], str(tmp_path), budget_minutes=5)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="budget_scale must be > 0"):
        dataclasses.replace(row, budget_scale=0.0)


def test_runlocal_budget_plan():
    """At 25 minutes: one-stage rows train 21 minutes (as the quick start); PerturbGAN keeps 15%
    for its encoder; Labels4Free splits its GAN time 60/40 after two U-Nets and two set-ups; the
    one-image row trains 1 + K U-Nets."""
    size, rows = compare_rows.RUNLOCAL, compare_rows.ROWS
    assert compare_budget.plan_row(rows["ilsgan"], size, 25.0, {}).gan == pytest.approx(21.0)
    assert compare_budget.plan_row(rows["perturbgan_ns_r1"], size, 25.0, {}).gan == pytest.approx(
        25.0 - 4.0 - 3.75
    )
    labels4free = compare_budget.plan_row(rows["labels4free"], size, 25.0, {})
    assert labels4free.gan == pytest.approx(17.5)
    assert labels4free.minimum == pytest.approx(0.5 + 5.0 + 2.0 + 4.0)
    # the one-image row: its union U-Net and one per instance slot
    crops = compare_budget.plan_row(rows["independence_prior"], size, 25.0, {})
    assert crops.gan == pytest.approx(25.0 - 0.5 - (1 + compare_rows.NUM_INSTANCES) * 2.5 - 1.0)
    measured = compare_budget.plan_row(
        rows["ilsgan"], size, 25.0, {"export": 0.3, "segmenter": 2.0}
    )
    assert measured.gan == pytest.approx(21.7)


def test_interrupted_gan_stage_resumes_with_the_budget_left(tmp_path, monkeypatch):
    """A GAN stage whose attempt never finished counts until its newest checkpoint; the next
    attempt trains in the same workdir (resuming from its checkpoints) with the row's budget
    less that time, the post-GAN reserve and the set-up allowance."""
    row, size = compare_rows.ROWS["ilsgan"], compare_rows.RUNLOCAL
    plan = compare_budget.plan_row(row, size, 25.0, {})
    run = compare.RowRun(row, 0, size, plan, str(tmp_path / "ilsgan"))
    start = 1_000_000.0
    run.progress.data["gan_attempts"]["gan"] = [{"start": start, "seconds": None}]
    checkpoint = tmp_path / "ilsgan" / "seed0" / "gan" / "checkpoints" / "500" / "state"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text("")
    os.utime(checkpoint, (start + 300.0, start + 300.0))
    calls = []

    def fake_train(config, workdir):
        calls.append((config.train.time_budget_minutes, workdir))
        return types.SimpleNamespace(
            steps=1000,
            images_seen=32_000,
            interrupted=True,
            wall_time_seconds=config.train.time_budget_minutes * 60 + 1.0,
            last_metrics={},
        )

    monkeypatch.setattr(compare, "train_and_evaluate", fake_train)
    record = run.train_gan(0)
    ((budget, workdir),) = calls
    assert workdir == run.stage_dir(0)
    assert budget == pytest.approx(25.0 - 5.0 - plan.post_gan - size.gan_overhead_minutes)
    assert record["budget_minutes"] == budget and record["images_seen"] == 32_000
    assert compare_budget.Progress(run.seed_dir).done("gan:gan") == record
    assert run.train_gan(0) == record and len(calls) == 1  # done: not trained again


def test_attempt_stopped_before_its_first_checkpoint_counts_nothing(tmp_path):
    """Of three attempts, the first (stopped before any checkpoint) counts 0 s, not the time
    until the second began; the second counts until its own newest checkpoint; the last until
    the newest checkpoint of all."""
    progress = compare_budget.Progress(str(tmp_path))
    starts = (1_000_000.0, 1_003_000.0, 1_006_000.0)
    progress.data["gan_attempts"]["gan"] = [{"start": t, "seconds": None} for t in starts]
    directory = tmp_path / "gan" / "checkpoints"
    for step, when in ((500, starts[1] + 120.0), (1000, starts[2] + 60.0)):
        (directory / str(step)).mkdir(parents=True)
        (directory / str(step) / "state").write_text("")
        os.utime(directory / str(step) / "state", (when, when))
    assert progress.gan_seconds(str(tmp_path), "gan") == pytest.approx(0.0 + 120.0 + 60.0)


def test_signal_stops_the_comparison(tmp_path, monkeypatch):
    """A GAN stage stopped before its budget and total_kimg (SIGTERM/SIGINT) is not a result:
    the comparison stops and the stage stays unfinished."""
    row, size = compare_rows.ROWS["ilsgan"], compare_rows.RUNLOCAL
    run = compare.RowRun(row, 0, size, compare_budget.plan_row(row, size, 25.0, {}), str(tmp_path))
    monkeypatch.setattr(
        compare,
        "train_and_evaluate",
        lambda config, workdir: types.SimpleNamespace(
            steps=10,
            images_seen=320,
            interrupted=True,
            wall_time_seconds=30.0,
            last_metrics={},
        ),
    )
    with pytest.raises(compare.ComparisonInterrupted, match="signal at step 10"):
        run.train_gan(0)
    assert compare_budget.Progress(run.seed_dir).done("gan:gan") is None


def test_runlocal_configs_are_valid():
    """Every row's stages build valid configs at the runlocal size (one device), on the data
    the row names; Labels4Free's alpha stage reads the StyleGAN2 stage's workdir."""
    from ilsgan_jax.train import builders

    size = compare_rows.RUNLOCAL
    for row in compare_rows.ROWS.values():
        run = compare.RowRun(
            row, 3, size, compare_budget.plan_row(row, size, 25.0, {}), "/nonexistent"
        )
        for index in range(len(row.stages)):
            config = run.config(index)
            builders.validate_config(config, 1)
            assert config.seed == 3 and config.data.resolution == 32
            assert config.train.time_budget_minutes == 0.0  # set per attempt
        if row.name == "independence_prior":
            assert config.data.name == "single_image" and config.model.num_instances == 3
            # the measured setting on the moving-objects picture (docs/experiments.md, section 8)
            assert config.data.builtin_image == "multi_object_k3_x4"
            assert tuple(config.data.crop_fraction) == (0.25, 0.45)
            assert config.loss.instance_min_area_weight == 10.0
            assert config.loss.instance_min_area_mask == "layout"
            assert config.loss.instance_min_area_power == 2.0
            assert config.loss.area_rampup_kimg == 50.0 and config.train.total_kimg == 100.0
            assert config.loss.r1_gamma == 1.0 and config.model.background_resolution == 2
            assert config.model.channel_base == 512  # half the runlocal widths
        else:
            assert config.data.name == "synthetic"
    alpha = compare.RowRun(
        compare_rows.ROWS["labels4free"],
        0,
        size,
        compare_budget.plan_row(compare_rows.ROWS["labels4free"], size, 25.0, {}),
        "/w",
    ).config(1)
    assert alpha.system == "labels4free"
    assert alpha.labels4free.pretrained_workdir == "/w/seed0/stylegan2"


def test_encoder_takes_the_steps_that_fit(tmp_path, monkeypatch):
    """PerturbGAN's encoder gets the steps that fit in what is left of the row's budget at the
    GAN's measured speed, capped by config.encoder.num_steps; too few: not run, with why."""
    row, size = compare_rows.ROWS["perturbgan_ns_r1"], compare_rows.RUNLOCAL
    plan = compare_budget.plan_row(row, size, 25.0, {})
    steps_run = []

    def fake_score(config, workdir, retrain):
        steps_run.append(config.encoder.num_steps)
        test = dict.fromkeys(("drc_iou", "drc_dice", "miou", "pixel_accuracy"), 0.5)
        return {"test": test, "encoder_steps": config.encoder.num_steps}

    monkeypatch.setattr(compare.inversion, "score_encoder", fake_score)
    for spent_minutes, expected in ((21.0, 450), (1.0, 3000), (24.5, None)):
        run = compare.RowRun(row, 0, size, plan, str(tmp_path / str(spent_minutes)))
        run.progress.record("export", {"seconds": spent_minutes * 60})
        record = run.encoder({"images_per_second": 64.0})
        if expected is None:
            assert record["status"] == "not run" and "encoder steps" in record["reason"]
        else:
            # (4 min left - 1 min compile) / (0.8 * 32 / 64 s per step) = 450 steps
            assert record["status"] == "ok" and record["encoder_steps"] == expected
