"""The XLA:CPU compiler options: parsing, platform selection, and that they reach the compiled
programs (convolutions outside YNNPACK) without changing the numbers beyond float32 rounding."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

from ilsgan_jax import compiler_options
from ilsgan_jax.train.step import jit_train_step
from tests import train_fixtures as fx


def _config(value):
    config = ml_collections.ConfigDict()
    config.compiler = ml_collections.ConfigDict({"xla_cpu_ynn_fusion_types": value})
    return config


def test_parse_names_the_key_and_the_bad_type():
    assert compiler_options.parse_ynn_fusion_types("default") is None
    assert compiler_options.parse_ynn_fusion_types("") == ()
    assert compiler_options.parse_ynn_fusion_types(compiler_options.DOTS_AND_REDUCTIONS) == (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
        "LIBRARY_FUSION_TYPE_REDUCE",
    )
    with pytest.raises(ValueError, match=r"compiler\.xla_cpu_ynn_fusion_types.*'conv'"):
        compiler_options.parse_ynn_fusion_types("LIBRARY_FUSION_TYPE_REDUCE,conv")


def test_options_only_on_the_cpu_and_only_when_asked():
    config = _config(compiler_options.DOTS_AND_REDUCTIONS)
    assert compiler_options.for_platform(config, "cpu") == {
        compiler_options.YNN_FUSION_TYPES_OPTION: compiler_options.DOTS_AND_REDUCTIONS
    }
    assert compiler_options.for_platform(config, "tpu") == {}
    assert compiler_options.for_platform(config, "gpu") == {}
    assert compiler_options.for_platform(_config("default"), "cpu") == {}
    with pytest.raises(AttributeError, match="compiler"):  # missing: an error, not the default
        compiler_options.for_platform(ml_collections.ConfigDict(), "cpu")
    # The project's configs ask for it.
    assert compiler_options.for_devices(fx.tiny_config(), jax.devices()[:1]) == {
        compiler_options.YNN_FUSION_TYPES_OPTION: compiler_options.DOTS_AND_REDUCTIONS
    }


def _ynn_convolutions(hlo_text: str) -> int:
    """Number of convolutions inside YNNPACK fusions of an optimised HLO module."""
    ynn_computations = set(
        re.findall(r"calls=%([\w.\-]+), backend_config=\{[^\n]*__ynn_fusion", hlo_text)
    )
    count = 0
    for name in ynn_computations:
        body = re.search(rf"^%{re.escape(name)} .*?^\}}", hlo_text, re.S | re.M)
        count += len(re.findall(r" convolution\(", body.group(0))) if body else 0
    return count


def _conv_weight_gradient(x, w, dy):
    """`d<conv(x, w), dy>/dw` of a 3x3 'SAME' NHWC convolution."""
    conv = lambda w: lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.vjp(conv, w)[1](dy)[0]


def test_train_step_jit_keeps_convolutions_out_of_ynnpack_with_equal_results():
    """`jit_train_step` compiles with the options: no convolution lands in a YNNPACK fusion, and
    the weight gradient equals the one of a default compilation to float32 rounding."""
    if jax.devices()[0].platform != "cpu":
        pytest.skip("XLA:CPU option")
    mesh1 = fx.one_device_mesh()
    options = compiler_options.for_devices(fx.tiny_config(), mesh1.devices.flat)
    if not options:
        pytest.skip("this jaxlib has no YNNPACK fusion option")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 16, 16, 32)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 32, 32)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((8, 16, 16, 32)), jnp.float32)

    def step(state, batch):  # the (state, batch) -> (state, metrics) shape of a train step
        return state, _conv_weight_gradient(batch, state, dy)

    expected = jax.jit(_conv_weight_gradient)(x, w, dy)
    # The HLO check sees YNNPACK convolutions when they are asked for.
    ynn_convs = {
        compiler_options.YNN_FUSION_TYPES_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    }
    lowered = jit_train_step(step, mesh1, ynn_convs).lower(w, x)
    assert _ynn_convolutions(lowered.compile().as_text()) > 0

    compiled = jit_train_step(step, mesh1, options).lower(w, x).compile()
    assert "convolution(" in compiled.as_text()
    assert _ynn_convolutions(compiled.as_text()) == 0
    _, gradient = compiled(w, x)  # donates w
    np.testing.assert_allclose(np.asarray(gradient), np.asarray(expected), rtol=1e-5, atol=1e-4)
