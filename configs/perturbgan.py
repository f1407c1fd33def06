r"""PerturbGAN (Bielski & Favaro, NeurIPS 2019) as a configuration of the layered framework.

The same two-generator layered model and train step as ILSGAN (`config.system = 'perturbgan'`,
which the trainer runs as 'ilsgan') with the random shift of foreground + mask (`xint_max` 0.125)
and the mask losses (min coverage 0.25, binarisation; both weight 2), without the ILS term. Its
segmenter is an encoder E: image -> z trained to invert the frozen EMA generator; masks are read
from G(E(x)) (`--mode=train_encoder`).

Train the GAN, then train and score the encoder (CUB, 64 px):

  python -m ilsgan_jax.main --mode=train --config=configs/perturbgan.py:dataset=cub,res=64 \
      --workdir=/tmp/perturbgan_cub64
  python -m ilsgan_jax.main --mode=train_encoder \
      --config=configs/perturbgan.py:dataset=cub,res=64 --workdir=/tmp/perturbgan_cub64

The U-Net route of ILSGAN (`--mode=export`, then `--mode=train_segmenter`) works unchanged on the
same workdir.

Variants (comma-separated after the colon):
  dataset=synthetic|cub|dogs|cars|folder   res=64|128 (any power of two 16..256)
  loss=ns_r1    (default) StyleGAN2 non-saturating loss + lazy R1, ADA, StyleGAN2 Adam: the
                "PerturbGAN-Re" re-implementation that ILSGAN's paper compares against, in
                ILSGAN's (StyleGAN2-ADA's) loop: G step first, no random crops, minibatch-std
                groups of 4. The three fields named under wgan_gp switch the original's on.
  loss=wgan_gp  the original objective of adambielski/perturbed-seg `train.py`: WGAN-GP
                (lambda 10, two-sided penalty on real/fake interpolates), drift
                0.001 * E[D(x_real)^2] (`gan_losses.WGAN_DRIFT_WEIGHT`), one D step per G step
                (n_critic 1), and its optimiser: Adam lr 0.001 (0.0015 at 128 px, 0.002 at
                256 px: its `--sched` table), betas (0, 0.99), eps 1e-8, no lazy-regularisation
                rescaling (StyleGAN2 uses lr 0.0025 rescaled by 4/5 and 16/17); G EMA decay 0.999
                per step with no ramp-up; no ADA (the original has no augmentation). The lr
                follows `--config.data.resolution` and the EMA half-life
                `--config.train.batch_size`. Also its training loop: the D step before the G step,
                which then faces the updated D (`train.d_step_first`); random crops of the real
                images, resized to int(1.125 R) and cut to R x R at a uniform offset
                (`--org_to_crop 1.125` of its command; `data.random_crop_scale`); and the
                minibatch-std statistic over the whole batch (`model.mbstd_group_size` 0).
  contrast=1    background contrast jitter of strength 0.3 (factor U[0.7, 1.3]), as the
                official training command (`--bg_contrast_jitter 0.3`).
  runlocal      2-core-CPU sizes (32 px, narrow networks), as configs/ilsgan.py:runlocal.

Remaining deviations from the original (perturbed-seg `train.py`, `stylegan.py`, `data.py`),
with loss=wgan_gp:
  - Backbone: this framework's layered StyleGAN2 (modulated convs, skip G, residual D, both
    generators fed the same z through their own mapping networks) instead of StyleGAN (v1)
    (AdaIN, plain progressive G and D); all systems here share it, so they differ only in their
    objectives.
  - No progressive growing: training runs at the final resolution R from the first step. The
    original starts at 8 px and adds a resolution every 1.2M images (600k fading in, 600k
    stable) with batch 256/128/64/32 at 8/16/32/64+ px and the lr of each resolution; StyleGAN2's
    skip G / residual D are its replacement, and one fixed resolution keeps one compiled step.
  - Length: 8000 kimg at R (configs/ilsgan.py, as every system compared); the original stops
    after the 1.2M images of its last resolution (4.8M images in all to 64 px, 6M to 128 px).
  - Random crops: cut from the source's R x R image upsampled to int(1.125 R); the original
    resizes the full image straight to 1.125 R (not keeping its aspect ratio). The sources yield
    R x R (the synthetic set is stored at R; CUB / DRC keep ILSGAN's crops, the original reads
    LSUN), so the reals are one resampling blurrier.
  - Minibatch-std over the whole batch of each D call: under jit that is the global batch on any
    number of devices (XLA reduces across them), which is what the original computes on one GPU;
    under DataParallel on several GPUs it would take each GPU's share.
  - Style mixing: off (the original command passes `--mixing`: probability 0.9, one decision per
    iteration shared by its D and G steps, crossover drawn per generator); as ILSGAN, off for
    every system compared; `--config.loss.style_mixing_prob=0.9` is the per-phase version.
  - Segmenter: the official code ships no encoder; E (config.encoder) is ours, from the paper.
  - Random streams (`jax.random`, tf.data stateless draws) and float32 XLA numerics: the same
    distributions, different draws.
With loss=ns_r1 and `--config.train.d_step_first=true`, lazy R1 (which the original does not
have) still runs after the main phase, i.e. after the G step.

Expected runtime and result: GAN training as configs/ilsgan.py (8000 kimg at 64 px: ~2-3 days on
8 V100s in the reference implementation; `runlocal` ~16 min on a 2-core CPU); the encoder stage
30k steps of batch 32 (~1 h on one GPU at 64 px; `runlocal` 3000 steps, ~10 min on a 2-core CPU).
The original PerturbGAN is listed at IoU ~0.38 on CUB (DRC protocol, as cited by later work);
ILSGAN reports ~0.83 with ILS on; this configuration (no ILS) is expected in between or near the
former, and the encoder route below the U-Net route (the inversion is approximate). These are
unverified targets, not measured here. `runlocal` on the synthetic data set gives masks
clearly better than the all-foreground baseline in `encoder/report.json`.
"""

import math

import ml_collections

from configs import ilsgan, variants
from configs.derived import derived

LOSSES = ("ns_r1", "wgan_gp")
VARIANTS = {
    **ilsgan.DATA_VARIANTS,
    "loss": variants.Variant(str, "ns_r1", LOSSES),  # loss.adversarial and its optimiser
    "contrast": variants.Variant(bool, False),  # background contrast jitter 0.3
}
# adambielski/perturbed-seg train.py: Adam(lr, betas=(0.0, 0.99)); lr 0.001, with `--sched`
# 0.0015 from 128 px on; the mapping network's lr is x0.01 (our mapping layers carry the same
# x0.01 as an equalised-lr multiplier, which Adam's scale invariance makes equivalent).
WGAN_LEARNING_RATE = 0.001
WGAN_LEARNING_RATES = {128: 0.0015, 256: 0.002}  # `--sched` from 128 px on (0.001 below)
WGAN_BETAS = (0.0, 0.99)
WGAN_EMA_DECAY = 0.999  # perturbed-seg `accumulate(g_running, generator)`: 0.999 per G step


def ema_kimg_for_decay(decay: float, batch_size: int) -> float:
    """The EMA half-life (kimg) whose per-step decay `0.5 ** (batch / (kimg * 1000))` is `decay`."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    return batch_size * math.log(0.5) / math.log(decay) / 1000.0


def wgan_learning_rate(resolution: int) -> float:
    """The original's Adam lr at `resolution` px (its `--sched` table; 0.001 elsewhere)."""
    return WGAN_LEARNING_RATES.get(resolution, WGAN_LEARNING_RATE)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of `--config=configs/perturbgan.py:arg` (variants in the module docstring)."""
    parsed = variants.parse(arg, VARIANTS, __file__)
    loss_type, contrast, runlocal = parsed["loss"], parsed["contrast"], parsed["runlocal"]
    config = ilsgan.make_config(
        dataset=parsed["dataset"], res=parsed["res"], runlocal=runlocal, ils=False
    )

    config.system = "perturbgan"  # the layered system of configs/ilsgan.py, without ILS

    # --- Objective: the perturbation and the mask losses, no ILS -----------------------------
    config.loss.ils.enabled = False  # PerturbGAN has no independence term
    config.loss.xint_max = 0.125  # max fg + mask shift, fraction of the width (--location_jitter)
    config.loss.bg_contrast = 0.3 if contrast else 0.0  # bg contrast jitter (--bg_contrast_jitter)
    config.loss.min_msize = 0.25  # minimum mean mask coverage (--min_mask_coverage)
    config.loss.msize_weight = 2.0  # weight of the minimum-coverage loss (--mask_alpha)
    config.loss.bin_weight = 2.0  # weight of the binarisation loss (--binarization_alpha)
    config.loss.adversarial = loss_type  # 'ns_r1' (PerturbGAN-Re) or 'wgan_gp' (original)
    config.data.mirror = False  # no x-flips: the original's loader has none
    config.loss.wgan_gp_weight = 10.0  # WGAN-GP lambda ('wgan_gp'; the drift weight 0.001 is
    # gan_losses.WGAN_DRIFT_WEIGHT, as `--real_penalty`); one D step per G step (n_critic 1)

    if loss_type == "wgan_gp":
        # Adam lr of G and D at data.resolution (D's multiplier --lr_disc_mult is 1)
        config.optim.learning_rate = derived(
            wgan_learning_rate, config.data.get_ref("resolution"), float
        )
        config.optim.beta1, config.optim.beta2 = WGAN_BETAS  # Adam betas of the original
        config.optim.eps = 1e-8  # Adam epsilon (PyTorch default)
        config.loss.g_reg_interval = None  # no lazy-regularisation rescaling of G's Adam
        # EMA half-life, kimg: per-step decay 0.999 at train.batch_size (22.2 kimg at batch 32)
        config.ema.kimg = derived(
            lambda batch: ema_kimg_for_decay(WGAN_EMA_DECAY, batch),
            config.train.get_ref("batch_size"),
            float,
        )
        config.ema.rampup = None  # the original EMA has no ramp-up
        config.ada.mode = "noaug"  # no augmentation in the original (and ADA's p controller
        # reads sign(D(real)), which means nothing for an unbounded WGAN critic)
        # The original's loop: D step, then the G step against the updated D.
        config.train.d_step_first = True
        config.data.random_crop_scale = 1.125  # resize to int(1.125 R), random R x R crop
        config.model.mbstd_group_size = 0  # minibatch-std over the whole batch (StyleGAN v1)

    # --- Encoder segmenter (the original paper's route; the official code has no encoder) ------
    config.encoder = ml_collections.ConfigDict()
    # Width rule min(base / res, max) of the residual encoder: model.channel_base and
    # model.channel_max (D-sized) unless overridden.
    config.encoder.channel_base = config.model.get_ref("channel_base").identity()
    config.encoder.channel_max = config.model.get_ref("channel_max").identity()
    config.encoder.num_steps = 30_000  # Adam steps on generated samples
    config.encoder.batch_size = 32  # generated samples per step
    config.encoder.learning_rate = 1e-4  # Adam lr of E
    config.encoder.beta1 = 0.9  # Adam beta1 of E
    config.encoder.beta2 = 0.999  # Adam beta2 of E
    config.encoder.latent_weight = 1.0  # weight of mean_{N,D} (E(x) - z)^2
    config.encoder.reconstruction_weight = 1.0  # weight of mean_{N,H,W,C} |G(E(x)) - x|
    config.encoder.log_every_steps = 1000  # latent error on a held-out generated batch
    config.encoder.eval_batch_size = 64  # held-out generated batch; batch of real-image scoring
    config.encoder.seed = 0  # seed of E's parameters and of its latents

    if runlocal:
        config.encoder.num_steps = 3000
        config.encoder.log_every_steps = 250
    return config
