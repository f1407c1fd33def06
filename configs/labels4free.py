r"""Labels4Free: an alpha network on a frozen, pretrained StyleGAN2 (Abdal et al., ICCV 2021).

Two stages, the same dataset/res/runlocal variant for both (the generator shapes must match):

  python -m ilsgan_jax.main --mode=train --config=configs/stylegan2.py:dataset=cub,res=64 \
      --workdir=/tmp/stylegan2_cub64
  python -m ilsgan_jax.main --mode=train --config=configs/labels4free.py:dataset=cub,res=64 \
      --config.labels4free.pretrained_workdir=/tmp/stylegan2_cub64 --workdir=/tmp/l4f_cub64

Trained: the alpha network (G optimiser, G EMA) and a freshly initialised D; the pretrained
generator is frozen. Losses as the reference (RameenAbdal/Labels4Free train.py): D logistic + lazy
R1 (gamma 10, every 16); alpha `softplus(-D(composite)) + lambda * (binarisation + relu(0.25 -
mean m)) + w_bg * relu(b - (1 - mean m))`. Adam lr 2e-4, betas (0, 0.99) before the lazy-reg
rescaling (alpha: interval 4 -> lr 1.6e-4, beta2 0.99^0.8; D: interval 16 -> lr 1.88e-4, beta2
0.99^(16/17)), EMA 0.5^(32/10000) per step, no ADA, no style mixing, batch 8, 1200 iterations
(the reference's FFHQ run: 4 GPUs x 2). Soft masks are thresholded at 0.9 at test time
(`config.labels4free.mask_threshold`). Expected: after a few hundred iterations the mask row of
the sample grids (workdir/samples) separates the object from the background.
"""

import ml_collections

from configs import stylegan2, variants

VARIANTS = stylegan2.VARIANTS  # dataset, res, runlocal: those of the pretrained stylegan2 run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of `--config=configs/labels4free.py:arg` (variants as configs/stylegan2.py)."""
    # Same model and data as the pretrained run.
    parsed = variants.parse(arg, VARIANTS, __file__)
    config = stylegan2.make_config(**parsed)
    config.system = "labels4free"  # frozen pretrained StyleGAN2 + trainable alpha network

    config.labels4free = {}
    config.labels4free.pretrained_workdir = ""  # workdir of the stylegan2 run (required)
    config.labels4free.truncation_psi = 1.0  # truncation of the foreground pass (--trunc)
    config.labels4free.min_feature_resolution = 8  # coarsest features read (256 px: 8, 1024: 32)
    config.labels4free.mask_threshold = 0.9  # soft mask -> binary mask at test time (--th)

    loss = config.loss
    loss.adversarial = "ns_r1"  # logistic loss (non-saturating G) + lazy R1
    loss.r1_gamma = 10.0  # R1 weight (--r1)
    loss.r1_interval = 16  # lazy R1 interval (--d_reg_every)
    loss.g_reg_interval = 4  # only rescales the alpha network's Adam (--g_reg_every)
    loss.style_mixing_prob = 0.0  # --mixing
    loss.xint_max = 0.0  # no layer perturbation
    loss.bg_contrast = 0.0  # no background contrast jitter
    loss.bin_weight = 3.0  # lambda on binarisation (--loss_multiplier; LSUN objects: 3, FFHQ: 1.2)
    loss.msize_weight = 3.0  # lambda on relu(min_msize - mean m) (same --loss_multiplier)
    loss.min_msize = 0.25  # minimum foreground coverage (--fg_coverage_value)
    loss.background_min_size = "off"  # the foreground term only (background: bg_area below)
    loss.bg_area_weight = 0.0  # w_bg (--bg_coverage_wt; 0 in the paper's reproduce runs)
    loss.bg_area = 0.75  # b, minimum background coverage (--bg_coverage_value)
    loss.ils.enabled = False  # no ILS term

    config.optim.learning_rate = 2e-4  # --lr, before the lazy-reg rescaling
    config.optim.beta1 = 0.0  # Adam beta1 (reference: betas (0, 0.99))
    config.optim.beta2 = 0.99  # Adam beta2, before the lazy-reg rescaling
    config.ema.kimg = -1.0  # 10 * batch / 32: beta = 0.5 ** (32 / 10000) per step (reference)
    config.ema.rampup = None  # the reference has no EMA ramp-up
    config.ada.mode = "noaug"  # the reference trains without --augment
    config.data.mirror = True  # the reference's loader always applies RandomHorizontalFlip

    config.train.batch_size = 8  # reference: 2 per GPU x 4 GPUs
    config.train.total_kimg = 9.6  # 1200 iterations at batch 8 (reference FFHQ: --iter 1200)
    config.train.log_every_steps = 20  # scalars to TensorBoard / console
    config.train.sample_every_steps = 100  # --model_save_freq
    config.train.checkpoint_every_steps = 100  # asynchronous checkpoints
    config.train.eval_every_kimg = 0.0  # no FID: the generator is frozen
    config.model.mbstd_group_size = 2  # D minibatch-std group (reference: min(4, 2 per GPU))
    if parsed["runlocal"]:
        # 2000 iterations, the reference's own single-GPU length: at 32 px the EMA alpha masks
        # are still soft after 1200 (none above the 0.9 test threshold) and binary by 2400; by
        # 6000 they grow over the background (coverage 0.55 against the objects' 0.25).
        config.train.total_kimg = 16.0
    return config
