"""`stages.demo`: the console advice on whether the generator's layers separated."""

import pytest
from stage_helpers import stage_config

from ilsgan_jax.stages import demo


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return stage_config(str(tmp_path_factory.mktemp("tfds")))


def demo_summary(full_fraction: float, images_seen: int) -> dict:
    return {
        "synthetic_full_fraction": full_fraction,
        "layers_separated": full_fraction < demo.MAX_FULL_FRACTION_SEPARATED,
        "gan_images_seen": images_seen,
        "gan_images_this_run": images_seen // 2,  # resumed half-way
        "gan_seconds": 1000.0,
    }


def test_demo_separation_advice(config):
    """Separated: one line. Not separated: the images seen and rate, and how to continue: run
    again while below total_kimg, else raise total_kimg (naming its value)."""
    config = config.copy_and_resolve_references()
    config.train.total_kimg = 80.0
    total = 80_000
    separated = demo.separation_advice(demo_summary(0.02, total), config, "/w")
    assert len(separated) == 1 and "separated (2% of the masks" in separated[0]
    early = "\n".join(demo.separation_advice(demo_summary(0.97, 45_200), config, "/w"))
    assert "NOT separated yet: 97%" in early and "45.2 kimg, this run at 23 images/s" in early
    assert "run the same command again" in early and "/w/checkpoints" in early
    capped = "\n".join(demo.separation_advice(demo_summary(0.97, total), config, "/w"))
    assert f"raise --config.train.total_kimg (now {config.train.total_kimg:g})" in capped


def test_demo_summary_table(config):
    """The console table: the scores, the GAN time, the advice and where the report is."""
    summary = {
        **demo_summary(0.02, 80_000),
        "per_image_iou": 0.75,
        "all_foreground_iou": 0.25,
        "per_image_dice": 0.85,
        "miou": 0.8,
        "pixel_accuracy": 0.9,
        "wall_time_seconds": 1500.0,
    }
    table = "\n".join(demo.summary_lines(summary, config, "/w"))
    assert "per-image IoU (DRC)      0.750   (all-foreground baseline 0.250)" in table
    assert "GAN training             80.0 kimg in 16.7 min" in table
    assert "wall time                25.0 min" in table
    assert "layers                   separated (2% of the masks all-foreground)" in table
    assert "report                   /w/report.json" in table
