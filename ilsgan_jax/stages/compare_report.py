"""The comparison's report: the machine it ran on, `results.json` and `results.md` (one table
row per system and seed, then each system's own route)."""

import math
import os
import platform

import jax

from ilsgan_jax.stages import atomic

# (header, result key, format) of the main table's score and cost columns.
SCORE_COLUMNS = (
    ("IoU", "per_image_iou", "{:.3f}"),
    ("IoU of an all-fg mask", "all_foreground_iou", "{:.3f}"),
    ("DICE", "per_image_dice", "{:.3f}"),
    ("mIoU", "miou", "{:.3f}"),
    ("pixel acc.", "pixel_accuracy", "{:.3f}"),
    ("coverage", "mask_coverage", "{:.2f}"),
    ("all-fg", "all_foreground_fraction", "{:.0%}"),
    ("kimg", "kimg", "{:.4g}"),
    ("minutes", "minutes", "{:.1f}"),
    ("images/s", "images_per_second", "{:.1f}"),
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else `platform.processor()`."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where the comparison runs: OS platform, CPU model and cores, JAX backend and devices."""
    devices = jax.devices()
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
    }


def machine_label(info: dict) -> str:
    """'AMD EPYC 7B13, 2 cores; cpu x1' for the table."""
    return (
        f"{info['cpu_model']}, {info['cpu_count']} cores; "
        f"{info['device_kind']} x{info['device_count']}"
    )


def _cell(value, fmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    return fmt.format(value)


def _main_row(result: dict) -> str:
    status = result["status"]
    if status != "ok":
        status = f"{status}: {result.get('reason', '')}".replace("|", "/").replace("\n", " ")
    cells = [result["row"], str(result["seed"]), result.get("test_set", "")]
    cells += [_cell(result.get(key), fmt) for _, key, fmt in SCORE_COLUMNS]
    cells += [machine_label(result["machine"]) if "machine" in result else "", status]
    return "| " + " | ".join(cells) + " |"


def _own_route_row(result: dict) -> str | None:
    own = result.get("own_route")
    if not own:
        return None
    if own["status"] == "ok":
        scores = " / ".join(
            _cell(own.get(key), "{:.3f}")
            for key in ("per_image_iou", "per_image_dice", "miou", "pixel_accuracy")
        )
    else:
        scores = ""
    detail = own.get("detail", "")
    status = own["status"] if own["status"] == "ok" else f"{own['status']}: {own.get('reason')}"
    cells = [result["row"], str(result["seed"]), own["name"], scores, detail, status]
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def markdown(results: list[dict], *, title: str) -> str:
    """`results.md`: the main table (the U-Net route of every row) and the own-route table."""
    header = ["row", "seed", "test set", *(name for name, _, _ in SCORE_COLUMNS)]
    header += ["machine", "status"]
    lines = [
        f"# {title}",
        "",
        "The U-Net route: each system's exported (image, mask > 0.5) pairs train the same U-Net,",
        "scored per image (IoU, DICE as in DRC), mIoU and pixel accuracy on the test set named",
        "(next to IoU: what predicting all foreground scores there);",
        "coverage and all-fg are the exported masks' mean coverage and all-foreground fraction;",
        "kimg, images/s: GAN training (all GAN stages of the row); minutes: the whole row.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *(_main_row(result) for result in results),
    ]
    own_rows = [row for row in map(_own_route_row, results) if row]
    if own_rows:
        lines += [
            "",
            "Each system's own route (IoU / DICE / mIoU / pixel acc. on the same test set):",
            "",
            "| row | seed | route | IoU / DICE / mIoU / pixel acc. | detail | status |",
            "| --- | --- | --- | --- | --- | --- |",
            *own_rows,
        ]
    return "\n".join(lines) + "\n"


def write_reports(workdir: str, results: list[dict], *, title: str) -> tuple[str, str]:
    """Writes `workdir/results.json` ({'results': [...]}) and `workdir/results.md`; returns
    their paths."""
    json_path = os.path.join(workdir, "results.json")
    atomic.write_json(json_path, {"results": results})
    md_path = os.path.join(workdir, "results.md")
    atomic.write_bytes(md_path, markdown(results, title=title).encode())
    return json_path, md_path
