"""launch/device_check.sh, its report helper and launch/benchmark_reference.py, without running
them for real (the reduced CPU check takes minutes, the speed comparison much longer).

- The device check is valid bash, and the commands its `--dry-run` prints for an accelerator and
  for a CPU parse against the real flags: `ilsgan_jax.main`'s mode, the config file's variants and
  every `--config.*` override (as `ilsgan_jax.main` parses them), and launch/benchmark.py's flags
  and values.
- `device_check_report.build_report` merges fixture outputs of the steps into one report and
  names failed and missing pieces.
- launch/benchmark_reference.py without the official checkout skips with a message and exit 0.
"""

import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
LAUNCH = os.path.join(REPO_ROOT, "launch")
DEVICE_CHECK = os.path.join(LAUNCH, "device_check.sh")


def _load_report_module():
    path = os.path.join(LAUNCH, "device_check_report.py")
    spec = importlib.util.spec_from_file_location("device_check_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dry_run_commands(platform: str, outdir: str) -> list[list[str]]:
    completed = subprocess.run(
        ["bash", DEVICE_CHECK, "--dry-run", outdir],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DEVICE_CHECK_PLATFORM": platform, "PYTHON": "python-x"},
        check=True,
    )
    lines = [line[2:] for line in completed.stdout.splitlines() if line.startswith("+ ")]
    assert ("REDUCED" in completed.stdout) == (platform == "cpu")
    return [shlex.split(line) for line in lines]


def test_device_check_is_valid_bash():
    subprocess.run(["bash", "-n", DEVICE_CHECK], check=True, timeout=30)


@pytest.mark.parametrize("platform", ["gpu", "cpu"])
def test_device_check_commands_parse_against_the_real_flags(platform, config_from_flags):
    from ilsgan_jax.main import MODES

    commands = dry_run_commands(platform, "/tmp/check_out")
    benchmark_args, demo_commands = [], []
    for command in commands:
        assert command[0] == "python-x"
        if command[1] == "launch/benchmark.py":
            benchmark_args.append(command[2:])
        else:
            assert command[1:3] == ["-m", "ilsgan_jax.main"], command
            demo_commands.append(command[3:])
    assert len(demo_commands) == 1
    assert len(benchmark_args) == (1 if platform == "cpu" else 2)

    args = demo_commands[0]
    options = dict(arg.split("=", 1) for arg in args)
    assert options["--mode"] in MODES
    assert options["--workdir"] == "/tmp/check_out/demo"
    overrides = [arg for arg in args if arg.startswith("--config.")]
    config = config_from_flags(options["--config"], *overrides)  # unknown keys raise
    for override in overrides:
        key, value = override[len("--config.") :].split("=", 1)
        node = config
        for part in key.split("."):
            node = node[part]
        assert str(node) == value or float(node) == float(value), override
    expected = (32, 1.0) if platform == "cpu" else (64, 3.0)
    assert (config.data.resolution, config.train.time_budget_minutes) == expected

    # launch/benchmark.py's own flags, parsed in a fresh process (its flags would clash with
    # ilsgan_jax.main's in this one), and the values its main() accepts.
    check = """
import json, sys
sys.path.insert(0, "launch")
import benchmark, benchmark_step
from absl import flags
from ilsgan_jax.nn.precision import COMPUTE_DTYPES
for args in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["benchmark.py", *args])
    assert set(flags.FLAGS.widths) <= set(benchmark_step.WIDTHS), flags.FLAGS.widths
    assert set(flags.FLAGS.dtypes) <= set(COMPUTE_DTYPES), flags.FLAGS.dtypes
    assert flags.FLAGS.output.startswith("/tmp/check_out/benchmark_"), flags.FLAGS.output
print("parsed", len(json.loads(sys.argv[1])))
"""
    completed = subprocess.run(
        [sys.executable, "-c", check, json.dumps(benchmark_args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"parsed {len(benchmark_args)}" in completed.stdout


def _write_fixture(outdir, demo: bool = True, failed_step: bool = False) -> None:
    (outdir / "platform.json").write_text(
        json.dumps({"backend": "gpu", "devices": ["cuda:0"], "reduced": False})
    )
    status = 1 if failed_step else 0
    (outdir / "steps.tsv").write_text(
        f"benchmark_paper\t0\t200\nbenchmark_runlocal\t{status}\t60\ndemo\t0\t300\n"
    )
    row = {
        "widths": "paper",
        "resolution": 64,
        "compute_dtype": "bfloat16",
        "batch_size": 32,
        "images_per_second": 900.0,
        "compile_seconds": 40.0,
        "mfu": 0.2,
    }
    (outdir / "benchmark_paper.json").write_text(
        json.dumps({"train_step": [row], "matmul_gflop_per_second": {"bfloat16": 500.0}})
    )
    (outdir / "benchmark_runlocal.json").write_text("{not json")  # a step that died mid-write
    if demo:
        (outdir / "demo" / "segmenter").mkdir(parents=True)
        report = {
            "gan_images_seen": 64000,
            "gan_images_this_run": 64000,
            "gan_seconds": 200.0,
            "export_seconds": 10.0,
            "segmenter_seconds": 30.0,
            "per_image_iou": 0.5,
            "all_foreground_iou": 0.3,
            "layers_separated": True,
        }
        (outdir / "demo" / "report.json").write_text(json.dumps(report))
        (outdir / "demo" / "segmenter" / "report.json").write_text(json.dumps({"test": {}}))


def test_device_check_report_merges_the_steps(tmp_path):
    module = _load_report_module()
    _write_fixture(tmp_path)
    assert module.main(["device_check_report.py", str(tmp_path)]) == 0
    report = json.loads((tmp_path / module.REPORT_NAME).read_text())
    assert report["ok"] and report["failed_steps"] == []
    assert report["backend"] == "gpu" and report["devices"] == ["cuda:0"]
    assert report["wall_seconds"] == 560
    assert [row["compute_dtype"] for row in report["benchmark"]] == ["bfloat16"]
    assert report["matmul_gflop_per_second"] == {"bfloat16": 500.0}
    assert report["demo"]["gan_images_seen"] == 64000 and report["segmenter"] == {"test": {}}
    text = "\n".join(module.summary_lines(report))
    assert "64.0 kimg in 200 s (320 images/s" in text and "IoU 0.500" in text
    assert "REDUCED" not in text


def test_device_check_report_names_failures_and_missing_pieces(tmp_path):
    module = _load_report_module()
    _write_fixture(tmp_path, demo=False, failed_step=True)
    report = module.build_report(str(tmp_path))
    assert not report["ok"]
    assert report["failed_steps"] == ["benchmark_runlocal"]
    assert report["demo"] is None and report["segmenter"] is None
    text = "\n".join(module.summary_lines(report))
    assert "no report" in text and "FAILED (exit 1)" in text
    assert module.main(["device_check_report.py", str(tmp_path)]) == 1


def test_benchmark_reference_skips_without_the_checkout(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(LAUNCH, "benchmark_reference.py"),
            f"--reference_dir={tmp_path / 'no_checkout'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "benchmark_reference: skipped" in completed.stdout
