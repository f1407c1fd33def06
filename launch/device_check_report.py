"""The report of `launch/device_check.sh`: merges what its steps wrote into one JSON file and prints
a summary.

    python launch/device_check_report.py OUTDIR

Reads from OUTDIR: `platform.json` (backend, devices, whether the run was reduced),
`steps.tsv` (one line per step: name, exit status, seconds), `benchmark_*.json`
(launch/benchmark.py), `demo/report.json` (`--mode=demo`) and `demo/segmenter/report.json`;
a missing or unreadable file is recorded as missing. Writes `OUTDIR/device_check.json`.
"""

import glob
import json
import os
import sys

REPORT_NAME = "device_check.json"


def _read_json(path: str):
    """The JSON at `path`, or None if it is missing or not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_steps(path: str) -> dict:
    """`steps.tsv` as {name: {'status': int, 'seconds': int}} in the order of the file."""
    steps = {}
    if not os.path.isfile(path):
        return steps
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 3:
                steps[fields[0]] = {"status": int(fields[1]), "seconds": int(fields[2])}
    return steps


def build_report(outdir: str) -> dict:
    """The merged report of the check in `outdir` (see the module docstring)."""
    platform = _read_json(os.path.join(outdir, "platform.json")) or {}
    steps = read_steps(os.path.join(outdir, "steps.tsv"))
    rows, matmul = [], {}
    for path in sorted(glob.glob(os.path.join(outdir, "benchmark_*.json"))):
        result = _read_json(path)
        if result is None:
            continue
        rows += result.get("train_step", [])
        matmul.update(result.get("matmul_gflop_per_second", {}))
    demo = _read_json(os.path.join(outdir, "demo", "report.json"))
    segmenter = _read_json(os.path.join(outdir, "demo", "segmenter", "report.json"))
    failed = [name for name, step in steps.items() if step["status"] != 0]
    return {
        "backend": platform.get("backend"),
        "devices": platform.get("devices", []),
        "reduced": bool(platform.get("reduced", False)),
        "steps": steps,
        "failed_steps": failed,
        "wall_seconds": sum(step["seconds"] for step in steps.values()),
        "matmul_gflop_per_second": matmul,
        "benchmark": rows,
        "demo": demo,
        "segmenter": segmenter,
        "ok": bool(steps) and not failed and demo is not None and bool(rows),
    }


def summary_lines(report: dict) -> list[str]:
    """The console summary of `build_report`'s result."""
    lines = ["", f"device check: {report['backend']}, {len(report['devices'])} device(s)"]
    if report["devices"]:
        lines.append(f"  devices: {', '.join(report['devices'][:4])}")
    if report["reduced"]:
        lines.append("  REDUCED run (no accelerator): runlocal widths, 32 px, 1 minute of training")
    lines.append("  train step (launch/benchmark.py)")
    for row in report["benchmark"]:
        lines.append(
            f"    {row['widths']:>8} {row['resolution']:>3} px {row['compute_dtype']:>8} "
            f"batch {row['batch_size']}: {row['images_per_second']} images/s, "
            f"compile {row['compile_seconds']} s, MFU {row.get('mfu', '?')}"
        )
    if not report["benchmark"]:
        lines.append("    (no results)")
    demo = report["demo"]
    if demo:
        rate = demo["gan_images_this_run"] / max(demo["gan_seconds"], 1e-9)
        lines += [
            f"  training: {demo['gan_images_seen'] / 1000:.1f} kimg in {demo['gan_seconds']:.0f} s"
            f" ({rate:.0f} images/s with compilation); export {demo['export_seconds']:.0f} s;"
            f" segmenter {demo['segmenter_seconds']:.0f} s",
            f"  segmenter on the synthetic test split: IoU {demo['per_image_iou']:.3f}"
            f" (all-foreground {demo['all_foreground_iou']:.3f}); layers separated:"
            f" {demo['layers_separated']}",
        ]
    else:
        lines.append("  training, export, segmenter: no report")
    for name, step in report["steps"].items():
        status = "ok" if step["status"] == 0 else f"FAILED (exit {step['status']})"
        lines.append(f"  step {name:<20} {step['seconds']:>5} s  {status}")
    lines.append(f"  wall time {report['wall_seconds'] / 60:.1f} min; OK: {report['ok']}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    outdir = argv[1]
    report = build_report(outdir)
    path = os.path.join(outdir, REPORT_NAME)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print("\n".join(summary_lines(report)))
    print(f"  report: {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
