"""The rows of the side-by-side comparison (`launch/compare_systems.py`) as data, and the sizes
they run at: each row is a configuration of the one framework, built from the configs package.

A row names its GAN stages (one config each; Labels4Free has two: StyleGAN2, then the alpha
network on the frozen generator) and its scoring route:

- 'unet': the exported (composite, mask > 0.5) pairs train the U-Net, scored on the synthetic
  test split.
- 'unet+encoder': the same, plus PerturbGAN's own route: the inversion encoder's masks
  `mask(G(E(x))) > 0.5` on the same test split (`stages.inversion.score_encoder`).
- 'unet+alpha_threshold': the same, plus a second U-Net on Labels4Free's own test-time masks
  (the exported soft masks > `config.labels4free.mask_threshold`).
- 'unet_on_crops': the Independence-prior GAN in its one-image setting: the U-Net trained on the
  exported (composite, union mask) pairs, scored on held-out crops of the built-in picture
  against the union of its object masks; plus its own route, one U-Net per instance slot on the
  instances' visible masks, matched to the crops' objects (`stages.compare_instances`).

Sizes: 'runlocal' (the configs' 2-core-CPU variants, time-budgeted) and 'smoke' (16 px, a few
steps: every stage once, for CI). Plain Python and configs only: no JAX work at import.
"""

import dataclasses
from collections.abc import Callable

import ml_collections

from configs import ilsgan, independence_prior, labels4free, perturbgan, stylegan2

ROUTES = ("unet", "unet+encoder", "unet+alpha_threshold", "unet_on_crops")
BUILTIN_IMAGE = "multi_object_k3_x4"  # the Independence-prior row's picture: 3 objects,
# each stamped at 4 places, so crops show them at changing relative places
NUM_INSTANCES = 3  # K of the Independence-prior row, the objects in BUILTIN_IMAGE
# The Independence-prior row's setting on that picture (docs/experiments.md, section 8): crops
# small enough that two copies of one object rarely share a crop, the area floor read on the
# laid-out masks (so the layout cannot hide a provider), the area ramped over half the run,
# the floor on the opaque area (mean m^2: a faint veil that draws no object cannot meet it),
# 100 kimg (the providers split the objects after ~70 kimg), and half the runlocal widths
# (16 channels at 32 px in G and D: a step ~2x faster, the three providers split the objects
# as at full runlocal width).
INDEPENDENCE_PRIOR_OVERRIDES = (
    ("data.builtin_image", BUILTIN_IMAGE),
    ("data.crop_fraction", (0.25, 0.45)),
    ("loss.instance_min_area_weight", 10.0),
    ("loss.instance_min_area_mask", "layout"),
    ("loss.instance_min_area_power", 2.0),
    ("loss.area_rampup_kimg", 50.0),
    ("train.total_kimg", 100.0),
    ("model.channel_base", 512),
)


@dataclasses.dataclass(frozen=True)
class GanStage:
    """One GAN training run of a row: `get_config(variant)` of a configs module, with
    `overrides` ({dotted field: value}) on top; `budget_share` is its fraction of the row's GAN
    time (the last stage of a row takes whatever the earlier ones left)."""

    name: str  # the stage's name and its workdir under the row's seed directory
    get_config: Callable[[str], ml_collections.ConfigDict]
    variant: str  # variants after the colon, without the size's ('runlocal', 'res=16')
    overrides: tuple[tuple[str, object], ...] = ()
    budget_share: float = 1.0


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table: a system's GAN stage(s) and how its masks are scored."""

    name: str
    description: str
    stages: tuple[GanStage, ...]
    route: str  # one of ROUTES
    budget_scale: float = 1.0  # the row's budget is budget_scale x --budget_minutes

    def __post_init__(self):
        if self.route not in ROUTES:
            raise ValueError(f"row {self.name!r}: route {self.route!r} not in {ROUTES}")
        if self.budget_scale <= 0:
            raise ValueError(
                f"row {self.name!r}: budget_scale must be > 0, got {self.budget_scale}"
            )

    def budget_minutes(self, per_row_minutes: float) -> float:
        """This row's budget when every row gets `per_row_minutes` (--budget_minutes)."""
        return self.budget_scale * per_row_minutes


def _single(name, get_config, variant, overrides=()) -> tuple[GanStage, ...]:
    return (GanStage(name, get_config, variant, tuple(overrides)),)


ROWS: dict[str, Row] = {
    row.name: row
    for row in (
        Row(
            "ilsgan",
            "ILSGAN, ILS on (CLUB, Laplace)",
            _single("gan", ilsgan.get_config, "dataset=synthetic"),
            "unet",
        ),
        Row(
            "ilsgan_ils_off",
            "ILSGAN with ILS off",
            _single("gan", ilsgan.get_config, "dataset=synthetic,ils=0"),
            "unet",
        ),
        Row(
            "perturbgan_ns_r1",
            "PerturbGAN, StyleGAN2 loss (NS + R1)",
            _single("gan", perturbgan.get_config, "dataset=synthetic,loss=ns_r1"),
            "unet+encoder",
        ),
        Row(
            "perturbgan_wgan_gp",
            "PerturbGAN, original loss (WGAN-GP)",
            # The gradient penalty's double backward pass halves the images/s of the NS + R1
            # row, and the masks separate later in kimg (U-Net IoU 0.40 at 38 kimg, 0.58 at
            # 56), so the row stops at 60 kimg and gets the room to get there at 36 images/s
            # (~28 GAN minutes, ~34 with export, U-Net and encoder); on a slower machine its
            # budget stops it earlier.
            _single(
                "gan",
                perturbgan.get_config,
                "dataset=synthetic,loss=wgan_gp",
                (("train.total_kimg", 60.0),),
            ),
            "unet+encoder",
            budget_scale=1.5,
        ),
        Row(
            "labels4free",
            "Labels4Free: StyleGAN2, then the alpha network on it",
            (
                GanStage("stylegan2", stylegan2.get_config, "dataset=synthetic", (), 0.6),
                GanStage("alpha", labels4free.get_config, "dataset=synthetic", (), 0.4),
            ),
            "unet+alpha_threshold",
        ),
        Row(
            "independence_prior",
            # The picture is not named here: `--set=data.builtin_image=...` may change it, and the
            # test set's name in the results says which one was used.
            f"Independence-prior GAN on crops of one built-in picture, K = {NUM_INSTANCES}",
            _single(
                "gan",
                independence_prior.get_config,
                f"dataset=single_image,k={NUM_INSTANCES}",
                INDEPENDENCE_PRIOR_OVERRIDES,
            ),
            "unet_on_crops",
            # 100 kimg: ~19 GAN minutes at 89 images/s, ~25 with export and four U-Nets; the
            # plan reserves 11.5 of the row's minutes for those, so 35 at the default 25 leave
            # the GAN 23.5 (100 kimg down to ~71 images/s). The row stops at 100 kimg.
            budget_scale=1.4,
        ),
    )
}


def select_rows(names: list[str] | None) -> list[Row]:
    """The rows called `names` in the order given (None or [] = all, in table order); a
    ValueError names an unknown one and lists the known ones."""
    if not names:
        return list(ROWS.values())
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise ValueError(f"unknown row(s) {unknown}; the rows are {list(ROWS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a row is named twice in {names}")
    return [ROWS[name] for name in names]


@dataclasses.dataclass(frozen=True)
class Size:
    """How big every row runs, and the time estimates its budget plan starts from (minutes on
    a 2-core CPU; measured values of earlier rows replace the export and U-Net estimates)."""

    name: str
    variant: str  # added to every stage's variant
    overrides: tuple[tuple[str, object], ...]  # applied to every config (after the row's)
    encoder_overrides: tuple[tuple[str, object], ...]  # applied to PerturbGAN's config.encoder
    time_budgeted: bool  # GAN stages stop by the budget (else by their total_kimg)
    export_minutes: float  # estimate of the export
    segmenter_minutes: float  # estimate of one U-Net (train + score + previews)
    gan_overhead_minutes: float  # per GAN stage beyond its budget: state set-up, last save
    min_gan_minutes: float  # the least GAN time a stage needs (compile, first checkpoint)
    encoder_share: float  # fraction of a PerturbGAN row's budget kept for the encoder
    encoder_compile_minutes: float  # the encoder's compile and scoring, besides its steps
    encoder_step_ratio: float  # encoder step time / GAN step time at the same batch
    min_encoder_steps: int  # fewer steps than this: the encoder route is not run
    test_crops: int  # held-out crops of the one-image row


RUNLOCAL = Size(
    name="runlocal",
    variant="runlocal",
    overrides=(),
    encoder_overrides=(),
    time_budgeted=True,
    # The quick start on a 2-core AMD EPYC: export 20 s, U-Net 111 s; the loop ran ~0.8 min
    # past its 21-minute budget (set-up, compile outside the loop's clock, the last save).
    export_minutes=0.5,
    segmenter_minutes=2.5,
    gan_overhead_minutes=1.0,
    min_gan_minutes=2.0,
    encoder_share=0.15,
    encoder_compile_minutes=1.0,
    # One encoder step: G forward, E forward + backward, G forward + backward (~320 ms at the
    # runlocal size) against ~430 ms for a GAN step (docs/performance.md).
    encoder_step_ratio=0.8,
    min_encoder_steps=100,
    test_crops=500,
)

# The tiny networks of the tests (tests/loop_helpers.py): 16 px, batch 8 (one image per
# simulated test device), 2 GAN steps with a checkpoint and a sample grid at step 2.
_SMOKE_STEPS = 2
_SMOKE_BATCH = 8
SMOKE = Size(
    name="smoke",
    variant="runlocal,res=16",
    overrides=(
        ("model.channel_base", 128),
        ("model.channel_max", 16),
        ("model.z_dim", 16),
        ("model.w_dim", 16),
        ("model.mapping_layers", 2),
        ("model.mbstd_group_size", 1),
        ("loss.r1_interval", 4),
        ("train.batch_size", _SMOKE_BATCH),
        ("train.total_kimg", _SMOKE_STEPS * _SMOKE_BATCH / 1000),
        ("train.log_every_steps", _SMOKE_STEPS),
        ("train.sample_every_steps", _SMOKE_STEPS),
        ("train.checkpoint_every_steps", _SMOKE_STEPS),
        ("train.eval_every_kimg", 0.0),
        ("train.progress_bar", False),
        ("train.num_sample_images", 4),
        ("data.synthetic_train_size", 200),
        ("data.synthetic_test_size", 50),
        ("export.num_pairs", 20),
        ("export.shard_size", 20),  # one shard: one call of the export's generator
        ("segmenter.widths", (4, 8)),
        ("segmenter.batch_size", 16),
        ("segmenter.eval_batch_size", 25),
        ("segmenter.num_steps", 4),
        ("segmenter.eval_every_steps", 4),
        ("segmenter.lr_decay_steps", 1000),
    ),
    encoder_overrides=(
        ("num_steps", 2),
        ("batch_size", _SMOKE_BATCH),
        ("eval_batch_size", 25),
        ("log_every_steps", 2),
    ),
    time_budgeted=False,
    export_minutes=0.1,
    segmenter_minutes=0.2,
    gan_overhead_minutes=0.1,
    min_gan_minutes=0.3,
    encoder_share=0.0,  # the encoder runs its fixed 2 steps whatever the budget
    encoder_compile_minutes=0.0,
    encoder_step_ratio=0.8,
    min_encoder_steps=1,
    test_crops=16,
)
SIZES = {size.name: size for size in (RUNLOCAL, SMOKE)}


def set_field(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    """`config.<dotted> = value`; a KeyError names a field the config does not have."""
    *parents, leaf = dotted.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    if leaf not in node:
        raise KeyError(f"config has no field {dotted!r}")
    node[leaf] = value


def stage_config(
    stage: GanStage,
    size: Size,
    *,
    seed: int,
    data_dir: str | None = None,
    overrides: tuple[tuple[str, object], ...] = (),
) -> ml_collections.ConfigDict:
    """The config of `stage` at `size`: its variant plus the size's, the stage's, the size's then
    the user's `overrides` ({dotted field: value} items), `config.seed = seed`, `data.data_dir`
    (None: the default cache) and, for time-budgeted sizes, no time budget yet (`plan` sets
    it). A KeyError names an override field the config does not have."""
    config = stage.get_config(f"{stage.variant},{size.variant}")
    for dotted, value in (*stage.overrides, *size.overrides, *overrides):
        set_field(config, dotted, value)
    if "encoder" in config:
        for field, value in size.encoder_overrides:
            set_field(config, f"encoder.{field}", value)
    config.seed = int(seed)
    config.data.data_dir = data_dir
    config.train.time_budget_minutes = 0.0
    return config
