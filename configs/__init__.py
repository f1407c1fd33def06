"""Experiment configs: one Python file per system, each with `get_config(arg)`.

`--config=configs/ilsgan.py:dataset=cub,res=64` (ml_collections.config_flags) loads a file by its
path; the files import each other as this package (`from configs import ilsgan`), which works from
the repository root and, after `pip install -e .`, from anywhere.
"""
