"""The stages after GAN training, each a plain function of (config, workdir) called by
`ilsgan_jax.main` (through `modes.run_mode`) and by the Colab notebook.

Modules: export (synthetic pairs from the EMA generator), segmentation (train, score and apply the
U-Net), diagnostics (FID/KID and the MINE report), inversion (PerturbGAN's encoder), demo (the
whole method end to end), modes (the `--mode` dispatch), weights (saved network weights),
compare, compare_rows, compare_report (the family side by side: `launch/compare_systems.py`).

Workdir layout: `checkpoints/` (GAN train state), `samples/` (grids), `export/` (pairs as the
tfds data set `export/ilsgan_pairs/1.0.0`, optional `export/png/`), `segmenter/` (best U-Net in
`weights/` + `report.json`), `previews/`, `encoder/`, `report.json`, `evaluation.json`,
`fid.json`, `mine_report.json`. The workdir may be local or a URL (gs://bucket/run); every file
goes through etils.epath (`ilsgan_jax.files`) or orbax, tfds and TensorBoard, which accept both.
"""
