"""Test configuration: 8 simulated CPU devices, a persistent compilation cache, and the shared
fixtures: config loading from flags and the tiny configs.

XLA_FLAGS must be set before JAX initialises its backend, so this runs at import time of the test
session, before any test module imports jax.
"""

import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# LLVM at -O0: tests run few steps of tiny networks, so compiling dominates their time, and -O0
# compiles the train steps ~1.3x faster (the numbers stay float32). Set the flag yourself to test
# the optimised code, e.g. XLA_FLAGS=--xla_backend_optimization_level=2.
if "--xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tiny_configs  # noqa: E402

from ilsgan_jax import runtime  # noqa: E402

runtime.setup_compilation_cache()
runtime.hide_accelerators_from_tensorflow()


REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


@pytest.fixture
def config_from_flags():
    """Parses `--config=configs/FILE:ARG [--config.a.b=...]` as `ilsgan_jax.main` does.

    Returns a function `(file_and_arg, *overrides) -> locked ConfigDict`: `file_and_arg` is
    relative to the repository root ('configs/ilsgan.py:runlocal'), `overrides` are flags such as
    '--config.train.batch_size=64'. The file is loaded by its path (ml_collections.config_flags),
    not imported as `configs.<name>`.
    """
    from absl import flags
    from ml_collections import config_flags

    def parse(file_and_arg: str, *overrides: str):
        argv = ["main", f"--config={os.path.join(REPO_ROOT, file_and_arg)}", *overrides]
        flag_values = flags.FlagValues()
        config_flags.DEFINE_config_file(
            "config", flag_values=flag_values, lock_config=True, sys_argv=argv
        )
        flag_values(argv)
        return flag_values.config

    return parse


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_configs.make_tiny_config`: `(config_name, variant='runlocal,res=16', overrides=None,
    *, mbstd_group_size=2) -> ConfigDict`, a config of `configs/` with networks of a few thousand
    parameters, then the dotted `overrides` ({'train.batch_size': 8})."""
    return tiny_configs.make_tiny_config
