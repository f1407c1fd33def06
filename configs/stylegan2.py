r"""Plain StyleGAN2 (no layers): the pretrained generator Labels4Free starts from.

  python -m ilsgan_jax.main --mode=train --config=configs/stylegan2.py:dataset=cub,res=64 \
      --workdir=/tmp/stylegan2_cub64

The same train step as ILSGAN with the layered parts switched off (config.system='stylegan2'):
no mask, no perturbation, no ILS; StyleGAN2-ADA defaults otherwise, including style mixing 0.9.
Variants as configs/ilsgan.py (dataset=, res=, runlocal). Expected: an FID comparable to
StyleGAN2-ADA at the same kimg; `runlocal` (synthetic, 32 px, ~80 kimg on a 2-core CPU) gives
recognisable textured objects on textured backgrounds.
"""

import ml_collections

from configs import ilsgan, variants

VARIANTS = ilsgan.DATA_VARIANTS  # dataset, res, runlocal


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of `--config=configs/stylegan2.py:arg` (variants as configs/ilsgan.py)."""
    return make_config(**variants.parse(arg, VARIANTS, __file__))


def make_config(
    *, dataset: str = "synthetic", res: int | None = None, runlocal: bool = False
) -> ml_collections.ConfigDict:
    """The config of parsed variants (configs/labels4free.py builds on it)."""
    config = ilsgan.make_config(dataset=dataset, res=res, runlocal=runlocal)
    config.system = "stylegan2"  # plain generator through the shared train step
    config.loss.ils.enabled = False  # no layers, no ILS
    config.loss.xint_max = 0.0  # no layer perturbation
    config.loss.bg_contrast = 0.0  # no background contrast jitter
    config.loss.bin_weight = 0.0  # no mask regularisers
    config.loss.msize_weight = 0.0  # no minimum mask size loss
    config.loss.style_mixing_prob = 0.9  # StyleGAN2-ADA default
    # No mask to calibrate (runlocal's ILSGAN base sets 0.3); Labels4Free inherits this: its
    # alpha network starts as the reference's.
    config.model.initial_mask_coverage = None
    return config
