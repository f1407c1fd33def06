"""The config files: every variant builds, variants fail by name, derived fields follow their
sources through `--config.*` overrides, and importing a file equals loading it by its path."""

import importlib
import itertools

import pytest

from configs import derived, ilsgan, independence_prior, labels4free, perturbgan, stylegan2
from configs import variants as variants_lib

CONFIG_MODULES = {
    "ilsgan": ilsgan,
    "perturbgan": perturbgan,
    "stylegan2": stylegan2,
    "labels4free": labels4free,
    "independence_prior": independence_prior,
}
SYSTEMS = {name: name for name in CONFIG_MODULES}  # each file sets config.system to its own name


def variant_values(variant: variants_lib.Variant) -> list:
    """Every value of a variant with choices or a bool; the default and default + 1 for an int."""
    if variant.type is bool:
        return [False, True]
    if variant.choices:
        return list(variant.choices)
    return [variant.default, variant.default + 1]


def single_variants(name: str) -> list[str]:
    """'key=value' for every value of every variant of configs/<name>.py."""
    schema = CONFIG_MODULES[name].VARIANTS
    return [
        f"{key}={int(value) if isinstance(value, bool) else value}"
        for key, variant in schema.items()
        for value in variant_values(variant)
    ]


ALL_VARIANTS = [
    (name, arg)
    for name in CONFIG_MODULES
    for arg in [None, "runlocal", *single_variants(name)]
    + [f"{one},runlocal" for one in single_variants(name) if not one.startswith("runlocal")]
]


@pytest.mark.parametrize("name, arg", ALL_VARIANTS, ids=[f"{n}:{a}" for n, a in ALL_VARIANTS])
def test_every_config_builds_with_each_variant(name, arg):
    config = CONFIG_MODULES[name].get_config(arg)
    assert config.system == SYSTEMS[name]
    # The fields the trainer reads for every system are defined (no `config.get` defaults).
    for field in (
        "seed",
        "loss.background_min_size",
        "loss.bg_area_weight",
        "loss.ils.warmup_kimg",
        "model.mask_logit_offset",
        "compiler.xla_cpu_ynn_fusion_types",
    ):
        node = config
        for part in field.split("."):
            assert part in node, f"{name}:{arg} lacks {field}"
            node = node[part]
    # Removed fields stay removed.
    assert "mode" not in config.loss.ils and "sample_layers" not in config.train
    assert "score_masks" not in config.eval
    config.to_dict()  # every reference resolves


def test_variant_values_reach_the_fields():
    config = ilsgan.get_config("dataset=cub,res=128,estimator=neural_gaussian,ils=0")
    assert (config.data.name, config.data.resolution) == ("cub", 128)
    assert config.loss.ils.estimator == "neural_gaussian" and not config.loss.ils.enabled
    assert ilsgan.get_config().data.resolution == 64
    assert ilsgan.get_config("runlocal").data.resolution == 32
    prior = independence_prior.get_config("k=3,share=1,ils=pairwise")
    assert prior.model.num_instances == 3 and prior.model.share_providers
    assert prior.loss.ils.enabled and not independence_prior.get_config().loss.ils.enabled


@pytest.mark.parametrize(
    "variant, one_image_choices",
    [("runlocal", True), ("", False), ("runlocal,dataset=synthetic", False)],
)
def test_independence_prior_one_image_choices_only_at_runlocal(variant, one_image_choices):
    """R1 gamma 1, a 2 px background and a 20 kimg area ramp (measured for one picture on a
    2-core CPU) apply to the runlocal one-image config; the full size and other data keep the
    heuristic gamma (-1), a full-resolution background (None) and no ramp, the paper's model."""
    config = independence_prior.get_config(variant)
    expected = (1.0, 2, 20.0) if one_image_choices else (-1.0, None, 0.0)
    loss, model = config.loss, config.model
    assert (loss.r1_gamma, model.background_resolution, loss.area_rampup_kimg) == expected


@pytest.mark.parametrize(
    "arg, runlocal",
    [
        ("runlocal", True),
        ("runlocal=1", True),
        ("runlocal=TRUE", True),
        ("runlocal=Yes", True),
        ("runlocal=0", False),
        ("runlocal=false", False),
        ("runlocal=NO", False),
        (" runlocal = yes ,", True),
        ("", False),
    ],
)
def test_boolean_spellings(arg, runlocal):
    assert variants_lib.parse(arg, ilsgan.VARIANTS, ilsgan.__file__)["runlocal"] is runlocal


@pytest.mark.parametrize(
    "name, arg, message",
    [
        (
            "ilsgan",
            "datset=cub",
            r"configs/ilsgan\.py: unknown variant 'datset'; the variants "
            r"are \['dataset', 'estimator', 'ils', 'res', 'runlocal'\]",
        ),
        ("ilsgan", "estimator=club", r"configs/ilsgan\.py: estimator='club' is not one of"),
        ("ilsgan", "res=48", r"configs/ilsgan\.py: res='48' is not one of \[16, 32, 64"),
        ("ilsgan", "res=big", r"configs/ilsgan\.py: res='big' is not an integer"),
        ("ilsgan", "runlocal=maybe", r"configs/ilsgan\.py: runlocal='maybe' is not a boolean"),
        ("ilsgan", "dataset", r"configs/ilsgan\.py: variant 'dataset' needs a value"),
        ("ilsgan", "runlocal,runlocal=0", r"configs/ilsgan\.py: variant 'runlocal' given twice"),
        ("perturbgan", "ils=1", r"configs/perturbgan\.py: unknown variant 'ils'"),
        ("perturbgan", "loss=hinge", r"configs/perturbgan\.py: loss='hinge' is not one of"),
        ("stylegan2", "estimator=laplace", r"configs/stylegan2\.py: unknown variant 'estimator'"),
        ("labels4free", "contrast=1", r"configs/labels4free\.py: unknown variant 'contrast'"),
        ("independence_prior", "k=0", r"configs/independence_prior\.py: k=0 is below its min"),
        ("independence_prior", "ils=yes", r"configs/independence_prior\.py: ils='yes' is not"),
    ],
)
def test_bad_variants_fail_naming_the_file_and_the_variant(name, arg, message):
    with pytest.raises(ValueError, match=message):
        CONFIG_MODULES[name].get_config(arg)


@pytest.mark.parametrize("name", list(CONFIG_MODULES))
def test_import_equals_the_file_loaded_by_config_flags(name, config_from_flags):
    for arg in ("", "runlocal"):
        loaded = config_from_flags(f"configs/{name}.py:{arg}" if arg else f"configs/{name}.py")
        assert loaded.to_dict() == CONFIG_MODULES[name].get_config(arg or None).to_dict()


def test_derived_fields_follow_their_source_through_flags(config_from_flags):
    config = config_from_flags("configs/perturbgan.py:loss=wgan_gp,runlocal")
    assert config.ema.kimg == perturbgan.ema_kimg_for_decay(0.999, 32)
    assert config.optim.learning_rate == 0.001
    assert (config.encoder.channel_base, config.encoder.channel_max) == (1024, 64)
    config = config_from_flags(
        "configs/perturbgan.py:loss=wgan_gp,runlocal",
        "--config.train.batch_size=64",
        "--config.data.resolution=128",
        "--config.model.channel_base=2048",
        "--config.model.channel_max=32",
    )
    assert config.ema.kimg == perturbgan.ema_kimg_for_decay(0.999, 64)
    assert config.optim.learning_rate == 0.0015
    assert (config.encoder.channel_base, config.encoder.channel_max) == (2048, 32)
    config = config_from_flags(
        "configs/ilsgan.py:estimator=laplace", "--config.loss.ils.estimator=neural_laplace"
    )
    assert (config.loss.ils.initial_sigma, config.loss.ils.sigma) == (1e-3, 1e-3)


def test_a_derived_field_overridden_keeps_its_value_and_leaves_the_source_alone(
    config_from_flags,
):
    config = config_from_flags(
        "configs/perturbgan.py:loss=wgan_gp",
        "--config.encoder.channel_base=256",
        "--config.ema.kimg=5.0",
        "--config.model.channel_base=4096",
        "--config.train.batch_size=64",
    )
    assert config.encoder.channel_base == 256 and config.model.channel_base == 4096
    assert config.ema.kimg == 5.0 and config.train.batch_size == 64


def test_derived_fields_follow_plain_assignment():
    config = perturbgan.get_config("loss=wgan_gp")
    config.train.batch_size = 8
    config.model.channel_base = 512
    assert config.ema.kimg == perturbgan.ema_kimg_for_decay(0.999, 8)
    assert config.encoder.channel_base == 512
    resolved = config.copy_and_resolve_references()
    config.train.batch_size = 16
    assert resolved.ema.kimg == perturbgan.ema_kimg_for_decay(0.999, 8)  # a snapshot
    config = ilsgan.get_config()
    assert (config.loss.ils.initial_sigma, config.loss.ils.sigma) == (0.2, 1.0)
    config.loss.ils.estimator = "neural_gaussian"
    assert (config.loss.ils.initial_sigma, config.loss.ils.sigma) == (1e-3, 1e-3)


def test_derived_helper_computes_on_read():
    import ml_collections

    config = ml_collections.ConfigDict({"source": 3})
    config.target = derived.derived(lambda value: value * 2.5, config.get_ref("source"), float)
    assert config.target == 7.5
    config.source = 4
    assert config.target == 10.0


def test_configs_is_an_importable_package():
    for name in itertools.chain(CONFIG_MODULES, ["variants", "derived"]):
        module = importlib.import_module(f"configs.{name}")
        assert module.__name__ == f"configs.{name}"


@pytest.mark.parametrize(
    "name, mirror",
    [
        ("ilsgan", False),  # the official commands do not pass --mirror (default off)
        ("perturbgan", False),  # perturbed-seg's loader has no flips
        ("stylegan2", False),  # StyleGAN2-ADA's --mirror default
        ("labels4free", True),  # its loader's RandomHorizontalFlip
        ("independence_prior", True),  # its own choice
    ],
)
def test_mirror_defaults(name, mirror):
    assert CONFIG_MODULES[name].get_config().data.mirror is mirror
    assert CONFIG_MODULES[name].get_config("runlocal").data.mirror is mirror


@pytest.mark.parametrize(
    "name, runlocal_coverage",
    [
        ("ilsgan", 0.3),  # calibrated at runlocal (design.md)
        ("perturbgan", 0.3),
        ("stylegan2", None),  # no mask
        ("labels4free", None),  # the alpha network starts as the reference's
        ("independence_prior", None),  # off by default
    ],
)
def test_initial_mask_coverage_only_where_a_system_calibrates(name, runlocal_coverage):
    assert CONFIG_MODULES[name].get_config().model.initial_mask_coverage is None
    assert CONFIG_MODULES[name].get_config("runlocal").model.initial_mask_coverage == (
        runlocal_coverage
    )


def test_fid_cadence_is_200_kimg_at_any_batch_size():
    from ilsgan_jax.train.loop import fid_every_steps

    config = ilsgan.get_config("dataset=cub")
    assert config.train.eval_every_kimg == 200
    assert fid_every_steps(config) == 6250  # batch 32: 50 ticks of 4 kimg
    config.train.batch_size = 64
    assert fid_every_steps(config) == 3125
    config.train.batch_size = 48
    assert fid_every_steps(config) == 4167  # rounded up to a whole step
    config.train.eval_every_kimg = 0
    assert fid_every_steps(config) == 0
    assert ilsgan.get_config("runlocal").train.eval_every_kimg == 0
    assert labels4free.get_config().train.eval_every_kimg == 0
    with pytest.raises(AttributeError):  # the old name is gone (a config flag names it)
        ilsgan.get_config().train.eval_every_steps  # noqa: B018


def test_cub_defaults_to_drc_split():
    from ilsgan_jax.data import cub_split

    data = ilsgan.get_config("dataset=cub").data
    assert data.cub_split == "drc" and data.cub_images_file is None
    assert data.cub_split_file == cub_split.SHIPPED_SPLIT_FILE
    assert cub_split.read_split_file(data.cub_split_file)  # shipped with the package
