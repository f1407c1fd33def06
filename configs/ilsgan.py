r"""ILSGAN: layered StyleGAN2 with the perturbation shift, mask losses and the ILS term.

Paper runs (the defaults, docs/design.md; 8000 kimg, batch 32), e.g. CUB at 64 px on one TPU VM /
8 GPUs:

  python -m ilsgan_jax.main --mode=train --config=configs/ilsgan.py:dataset=cub,res=64 \
      --workdir=/tmp/ilsgan_cub64

Variants are comma-separated `key=value` items after the colon:
  dataset=synthetic|cub|dogs|cars|folder   res=64|128 (any power of two 16..256)
  estimator=laplace|gaussian|neural_laplace|neural_gaussian   ils=0 (PerturbGAN-style, no ILS)
  runlocal   (a 2-core-CPU size: 32 px, narrow networks, no ADA; see below)
Booleans take 1/0, true/false or yes/no; a bare `runlocal` means runlocal=1.

Single fields are overridden with flags, e.g. `--config.train.batch_size=64`.

Expected: the paper reports, at 64 px after 8000 kimg, CUB FID ~10 and segmenter IoU ~0.83
(DRC protocol); a full run needs ~2-3 days on 8 V100s in the reference implementation.
`runlocal` on the synthetic data set (the quick start, `make demo`) trains 65-85 kimg at 32 px in
its 21-minute budget on a 2-core CPU, with the backgrounds' noise at x0.25 of the full data set and
the initial masks calibrated to cover 0.3: the masks turn object-shaped by ~30 kimg and the U-Net
scores IoU ~0.75 (seed 0: 0.754 at 83 kimg).
"""

import ml_collections
from ml_collections import config_dict

from configs import variants
from configs.derived import derived
from ilsgan_jax.augment.config import default_ada_config
from ilsgan_jax.compiler_options import DOTS_AND_REDUCTIONS
from ilsgan_jax.data.config import DATA_SOURCES, default_data_config
from ilsgan_jax.evaluate.segmenter import default_segmenter_config

ESTIMATORS = ("laplace", "gaussian", "neural_laplace", "neural_gaussian")
RESOLUTIONS = (16, 32, 64, 128, 256)  # image sides the input pipeline produces, pixels

# The variants shared by the configs built on this one (perturbgan, stylegan2, labels4free).
DATA_VARIANTS = {
    "dataset": variants.Variant(str, "synthetic", DATA_SOURCES),  # data.name
    "res": variants.Variant(int, None, RESOLUTIONS),  # data.resolution; None: 32 runlocal, else 64
    "runlocal": variants.Variant(bool, False),  # 2-core-CPU sizes
}
VARIANTS = {
    **DATA_VARIANTS,
    "estimator": variants.Variant(str, "laplace", ESTIMATORS),  # loss.ils.estimator
    "ils": variants.Variant(bool, True),  # loss.ils.enabled
}


def is_learned_estimator(estimator: str) -> bool:
    """True for the neural (U-Net) CLUB conditionals, which take far smaller ILS weights."""
    return estimator.startswith("neural")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of `--config=configs/ilsgan.py:arg` (variants in the module docstring)."""
    return make_config(**variants.parse(arg, VARIANTS, __file__))


def make_config(
    *,
    dataset: str = "synthetic",
    res: int | None = None,
    runlocal: bool = False,
    estimator: str = "laplace",
    ils: bool = True,
) -> ml_collections.ConfigDict:
    """The config of parsed variants (the other config files build on it)."""
    resolution = res if res is not None else (32 if runlocal else 64)

    config = ml_collections.ConfigDict()
    # Which system the trainer builds: 'ilsgan' (this file), 'perturbgan', 'stylegan2',
    # 'labels4free' or 'independence_prior' (each set by its own config file).
    config.system = "ilsgan"
    config.seed = 0  # seed of parameters, latents, perturbations and the input pipeline

    # --- Data ---------------------------------------------------------------------------------
    config.data = default_data_config()
    config.data.name = dataset
    config.data.resolution = resolution
    # No x-flips of the real images: the official training commands do not pass --mirror, whose
    # default (StyleGAN2-ADA's) is off. The flag stays for data sets that want it.
    config.data.mirror = False

    # --- Networks -----------------------------------------------------------------------------
    config.model = ml_collections.ConfigDict()
    config.model.z_dim = 512  # latent z dimensionality (shared by the fg and bg generators)
    config.model.w_dim = 512  # intermediate latent w dimensionality
    config.model.mapping_layers = 8  # FC layers per mapping network
    config.model.channel_base = 16384  # width rule: min(channel_base / res, channel_max)
    config.model.channel_max = 256  # width cap (256 up to 64 px, 128 at 128 px)
    config.model.conv_clamp = 256.0  # activation clamp of G and D convs (reference: 256)
    # D minibatch-std group: must divide the per-device batch; 0 = the whole batch D sees per call
    # (with a sharded batch, the global batch: the statistics are reduced across the devices).
    config.model.mbstd_group_size = 4
    config.model.mbstd_num_channels = 1  # D minibatch-std features
    config.model.compute_dtype = "float32"  # G, D, estimator convs: float32 | bfloat16 (TPU/GPU)
    config.model.mask_logit_offset = 0.0  # m = sigmoid(logit + offset); 0 = the reference
    # Mean mask coverage of the initial generator, set by the mask logit's output bias, in (0, 1)
    # (ilsgan, perturbgan; the independence prior: the union of its instance masks); None = the
    # reference initialisation, whose coverage depends on the seed.
    config.model.initial_mask_coverage = config_dict.placeholder(float)

    # --- Objective ----------------------------------------------------------------------------
    config.loss = ml_collections.ConfigDict()
    config.loss.adversarial = "ns_r1"  # 'ns_r1' (StyleGAN2) or 'wgan_gp' (PerturbGAN original)
    config.loss.r1_gamma = -1.0  # R1 weight; -1 = heuristic 0.0002 * res^2 / batch
    config.loss.r1_interval = 16  # lazy R1 every this many iterations (D reg interval)
    config.loss.g_reg_interval = 4  # G reg interval: only rescales G's Adam (no path length reg)
    config.loss.wgan_gp_weight = 10.0  # WGAN-GP lambda ('wgan_gp' only)
    config.loss.style_mixing_prob = 0.0  # style mixing probability (0 in ILSGAN)
    config.loss.xint_max = 0.125  # max integer shift of fg + mask, fraction of the width (0 = off)
    config.loss.bg_contrast = 0.0  # background contrast jitter strength (PerturbGAN: 0.3)
    config.loss.bin_weight = 2.0  # weight of the mask binarisation loss
    # Weight of the minimum mask size loss (docs/design.md). The official ILSLoss weighs that term
    # by weights[anti_zero_mask]; its constructor defaults to 'mi' (1.0), but training_loop_ILS.py
    # sets anti_zero_mask = 'msize' for an unconditional G (c_dim 0), i.e. msize_weight = 2.0.
    # At 1.0 the binarisation (weight 2) outweighs it on small masks and drives them to empty.
    config.loss.msize_weight = 2.0
    config.loss.min_msize = 0.25  # minimum mean mask coverage
    # Background term relu(min_msize - (1 - mean m)) of the size loss: 'auto' = on exactly when
    # the perturbation is off (the reference), 'on' / 'off' force it.
    config.loss.background_min_size = "auto"
    config.loss.bg_area_weight = 0.0  # weight of relu(bg_area - (1 - mean m)), Labels4Free; 0 = off
    config.loss.bg_area = 0.75  # minimum mean background coverage of that term
    config.loss.ils = ml_collections.ConfigDict()
    config.loss.ils.enabled = ils  # ILS on/off
    config.loss.ils.estimator = estimator  # CLUB conditional: one of ESTIMATORS
    estimator_ref = config.loss.ils.get_ref("estimator")
    config.loss.ils.neg_weight = 1.0  # weight of the CLUB negative term
    # ILS weight up to warmup_kimg: 0.2 (1e-3 for the learned estimators)
    config.loss.ils.initial_sigma = derived(
        lambda name: 1e-3 if is_learned_estimator(name) else 0.2, estimator_ref, float
    )
    # ILS weight after warmup_kimg: 1.0 (1e-3 for the learned estimators)
    config.loss.ils.sigma = derived(
        lambda name: 1e-3 if is_learned_estimator(name) else 1.0, estimator_ref, float
    )
    config.loss.ils.warmup_kimg = 400  # end of the initial (initial_sigma) phase, kimg
    config.loss.ils.strategy = "all_time"  # 'all_time' | 'cool_down' | 'cos' (reference options)
    config.loss.ils.estimator_resolution = 64  # learned estimators work at this resolution
    config.loss.ils.estimator_widths = (64, 128, 256, 256, 256)  # learned estimators' U-Net widths
    config.loss.ils.nll_weight = 0.1  # weight of the learned estimator's NLL (D phase)

    # --- Optimisers and EMA -------------------------------------------------------------------
    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 0.0025  # Adam lr of G and D before lazy-reg rescaling
    config.optim.beta1 = 0.0  # Adam beta1
    config.optim.beta2 = 0.99  # Adam beta2 before lazy-reg rescaling
    config.optim.eps = 1e-8  # Adam epsilon
    config.ema = ml_collections.ConfigDict()
    config.ema.kimg = -1.0  # EMA half-life in kimg; -1 = 10 * batch / 32
    config.ema.rampup = 0.05  # EMA ramp-up (half-life <= rampup * images seen); None = off

    # --- ADA ----------------------------------------------------------------------------------
    config.ada = default_ada_config()  # 'bgc', target 0.6, interval 4, 500 kimg

    # --- Training loop ------------------------------------------------------------------------
    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 32  # global batch (all devices, all processes)
    # Order of the main phase: False = G main, then D main on fakes of the updated G (StyleGAN2);
    # True = D main on fakes of the current G, then G main against the updated D (PerturbGAN).
    config.train.d_step_first = False
    config.train.total_kimg = 8000.0  # training length in thousands of real images
    config.train.time_budget_minutes = 0.0  # stop (and save) after this wall time; 0 = no limit
    config.train.log_every_steps = 100  # scalars to TensorBoard / console
    config.train.sample_every_steps = 1000  # image grids (TensorBoard + PNG in the workdir)
    config.train.checkpoint_every_steps = 1000  # asynchronous checkpoints
    config.train.keep_checkpoints = 3  # keep the last K checkpoints (plus the best-FID one)
    # fid10k_full and the best-FID checkpoint every this many kimg, whatever the batch size (the
    # official loop: every 50 ticks of 4 kimg); 0 = off. Needs the Inception weights.
    config.train.eval_every_kimg = 200.0
    config.train.num_sample_images = 16  # images per sample grid
    config.train.progress_bar = True  # console progress line for interactive runs

    # --- Compiler -----------------------------------------------------------------------------
    config.compiler = ml_collections.ConfigDict()
    # XLA:CPU only: which op kinds YNNPACK may take ('default' = the jaxlib's choice). Dots and
    # reductions, not convolutions: 1.4x faster train step at CPU widths (compiler_options.py).
    config.compiler.xla_cpu_ynn_fusion_types = DOTS_AND_REDUCTIONS

    # --- Evaluation ---------------------------------------------------------------------------
    config.eval = ml_collections.ConfigDict()
    config.eval.fid_num_images = 10_000  # generated images for FID during training (fid10k_full)
    config.eval.fid_full_num_images = 50_000  # generated images of --mode=fid (fid50k_full)
    config.eval.kid_subsets = 100  # --mode=fid: KID subsets (StyleGAN2-ADA's kid50k_full)
    config.eval.kid_subset_size = 1000  # --mode=fid: images per KID subset (capped by the counts)
    config.eval.batch_size = 64  # evaluation batch

    # --- Segmentation stage (export, U-Net) ----------------------------------------------------
    config.export = ml_collections.ConfigDict()
    config.export.num_pairs = 50_000  # synthetic (image, mask) pairs from the EMA generator
    config.export.shard_size = 1000  # pairs per TFRecord shard of the tfds export
    config.export.seed = 0  # latent seed of the export
    config.export.png = False  # also write PNG files
    config.segmenter = default_segmenter_config()  # the U-Net: 6000 it, batch 64, Adam 1e-3

    # --- MINE diagnostic (--mode=mine; ILSGAN's eval_MI_MINE.py settings) -------------------------
    config.mine = ml_collections.ConfigDict()
    config.mine.num_samples = 10_000  # generated (fg, bg, mask) triples the critic trains on
    config.mine.seed = 0  # latent seed of those samples and of the critic
    config.mine.hidden_sizes = (3000,)  # critic MLP hidden widths (ReLU)
    config.mine.learning_rate = 2e-4  # critic Adam step size
    config.mine.batch_size = 64  # joint samples per critic step
    config.mine.num_steps = 20_000  # critic steps per region pair (the reference runs up to 100k)
    config.mine.ema_decay = config_dict.placeholder(float)  # MINE's moving-average gradient
    # correction in (0, 1); None = the plain Donsker-Varadhan bound

    if runlocal:
        # 2-core CPU: 32 px, narrow nets (sizes checked against the PyTorch reference).
        config.model.z_dim = 64
        config.model.w_dim = 64
        config.model.mapping_layers = 4
        config.model.channel_base = 1024
        config.model.channel_max = 64
        config.ada.mode = "noaug"
        # The initial masks cover 0.3 whatever the seed (the reference's initialisation covers
        # 0.36-0.82 by seed): the binarisation pushes each pixel towards the side of 0.5 it starts
        # on, and a generator starting above ~0.45 goes all-foreground and separates only at
        # 55-100 kimg; starting at 0.3 (near the objects' 0.25 and the size floor) the masks stay
        # near 0.3 and turn object-shaped by ~30 kimg (docs/design.md, deviations).
        config.model.initial_mask_coverage = 0.3
        # A cap: on a 2-core CPU the time budget below ends the GAN stage first (at 65-85 kimg),
        # so a faster machine spends its whole budget training.
        config.train.total_kimg = 120.0
        config.train.log_every_steps = 50
        config.train.sample_every_steps = 500
        config.train.checkpoint_every_steps = 500
        config.train.eval_every_kimg = 0.0  # no FID on CPU
        config.data.synthetic_train_size = 10_000
        config.data.synthetic_test_size = 500
        # Background noise at x0.25 (still band-limited texture): at x1 the narrow background
        # generator cannot render the fine noise, D prefers the foreground layer everywhere and
        # the masks stay all-foreground (also with the official code).
        config.data.synthetic_background_noise = 0.25
        config.loss.ils.estimator_resolution = 16
        config.train.time_budget_minutes = 21.0  # GAN stage of the 25-min demo (U-Net: ~2 min)
        config.export.num_pairs = 5000
        config.export.shard_size = 500
        config.segmenter.widths = (16, 32, 64, 64)
        config.segmenter.batch_size = 32
        # 750 steps (~5 epochs of the 4500 training pairs): longer training fits the generator's
        # own masks more closely and scores no better test IoU, in twice the time.
        config.segmenter.num_steps = 750
        config.segmenter.lr_decay_steps = 500
        config.segmenter.eval_every_steps = 250
        config.mine.num_samples = 2000
        config.mine.hidden_sizes = (256,)
        config.mine.num_steps = 2000
        config.loss.ils.estimator_widths = (8, 16, 16)
    return config
