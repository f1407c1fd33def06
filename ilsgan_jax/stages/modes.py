"""The `--mode` dispatch of `ilsgan_jax.main` for every mode but `train`."""

import json

import ml_collections
from absl import logging
from etils import epath

from ilsgan_jax.stages import (
    diagnostics,
    export,
    ils_gradients,
    inversion,
    layer_figure,
    segmentation,
)
from ilsgan_jax.stages.demo import run_demo


def run_mode(
    mode: str,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    input_dir=None,
    output_dir=None,
    overwrite=False,
    runs=None,
) -> None:
    """Runs stage `mode` (export, train_segmenter, segment, evaluate, fid, mine, demo,
    train_encoder, layer_figure or ils_gradients) on `workdir`.

    Args:
      input_dir, output_dir: `segment`'s folder of images and folder for the masks;
        `output_dir` is `layer_figure`'s PNG path (default `workdir/layer_figure.png`) and
        `ils_gradients`' JSON path (default `workdir/ils_gradients.json`).
      overwrite: `export`/`segment`: replace existing outputs; `train_encoder`: retrain E.
      runs: `layer_figure`'s and `ils_gradients`' `label=workdir` items (`layer_figure.parse_runs`).
    Raises ValueError for an unknown mode.
    """
    if mode == "export":
        export.export_pairs(config, workdir, overwrite=overwrite)
    elif mode == "train_segmenter":
        report = segmentation.train_and_score_segmenter(config, workdir)
        logging.info("Segmenter report: %s", json.dumps(report["test"], indent=1))
    elif mode == "segment":
        segmentation.segment_folder(config, workdir, input_dir, output_dir, overwrite)
    elif mode == "evaluate":
        segmentation.evaluate_segmenter(config, workdir)
    elif mode == "fid":
        diagnostics.run_fid(config, workdir)
    elif mode == "mine":
        diagnostics.run_mine(config, workdir)
    elif mode == "demo":
        run_demo(config, workdir)
    elif mode == "train_encoder":
        report = inversion.score_encoder(config, workdir, retrain=overwrite)
        logging.info("Encoder report: %s", json.dumps(report["test"], indent=1))
    elif mode == "layer_figure":
        output = output_dir or str(epath.Path(workdir) / "layer_figure.png")
        layer_figure.write_layer_figure(config, layer_figure.parse_runs(runs or []), output)
        logging.info("Layer figure: %s", output)
    elif mode == "ils_gradients":
        output = output_dir or str(epath.Path(workdir) / "ils_gradients.json")
        ils_gradients.write_ils_gradients(config, layer_figure.parse_runs(runs or []), output)
        logging.info("ILS gradients: %s", output)
    else:
        raise ValueError(f"unknown mode {mode!r}")
