"""Test configuration: 8 simulated CPU devices and a persistent compilation cache.

XLA_FLAGS must be set before JAX initialises its backend, so this runs at import time of the test
session, before any test module imports jax.
"""

import os

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

from ilsgan_jax import runtime  # noqa: E402

runtime.setup_compilation_cache()
runtime.hide_accelerators_from_tensorflow()
