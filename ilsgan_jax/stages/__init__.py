"""The stages after GAN training, each a plain function of (config, workdir) called by
`ilsgan_jax.main` (through `modes.run_mode`) and by the Colab notebook.

Modules: export (synthetic pairs from the EMA generator), segmentation (train, score and apply the
U-Net), diagnostics (FID/KID and the MINE report), inversion (PerturbGAN's encoder), demo (the
whole method end to end), modes (the `--mode` dispatch), atomic (atomic file writes).

Workdir layout: `checkpoints/` (GAN train state), `samples/` (grids), `export/` (pairs as the
tfds data set `export/ilsgan_pairs/1.0.0`, optional `export/png/`), `segmenter/` (best U-Net +
`report.json`), `previews/`, `encoder/`, `report.json`, `evaluation.json`, `fid.json`,
`mine_report.json`.
"""
