r"""Train-step benchmark: compile time, images/s, peak host memory and model FLOP utilisation.

For each (widths, resolution) the full ILSGAN train step of `configs/ilsgan.py` (G main, D main,
lazy R1 every `r1_interval` steps, EMA) is compiled for the local devices and run on random real
images; the timed window covers `--steps` consecutive steps after a warm-up step, so with
`--steps >= r1_interval` (16) exactly one R1 phase per 16 steps is included (R1 amortised).

  python launch/benchmark.py --resolutions=32,64,128 --widths=paper,runlocal --steps=16 \
      --dtypes=float32,bfloat16 --output=/tmp/benchmark.json [--input]

Widths: 'paper' = channel_base 16384, channel_max 256, z/w 512, 8 mapping layers (the config's
defaults, ADA as configured); 'runlocal' = the 2-core-CPU variant (channel_base 1024, channel_max
64, z/w 64, 4 mapping layers, no ADA). `--skip=paper:128` (default) leaves out pairs that are too
slow on a CPU. `--dtypes` lists the `config.model.compute_dtype` values to measure, one row each
(bfloat16 is meant for TPUs and GPUs; on a 2-core CPU it measured ~3x slower than float32 at
the runlocal size).

Columns: compile seconds (lowering + XLA compilation), steady-state images/s (mean over the timed
steps), peak resident host memory so far (`ru_maxrss`, the process maximum: monotone over rows),
GFLOPs per step from XLA cost analysis of the compiled phases (R1 amortised over 16 steps), and
model FLOP utilisation = FLOPs/step x steps/s / the dense matmul FLOP/s measured on the same
machine in the row's dtype (a 2048^2 `jnp.dot`). The 1-minute load average is recorded with every
row: the numbers are only comparable at similar load. `--input` adds the input pipeline's throughput
(`launch/benchmark_input.py`). `--compare_compiler_options` adds, per row, the main phase compiled
with the jaxlib's default XLA options against the config's `compiler` options, run in turns in
this process (`ilsgan_jax/compiler_options.py`; the speed-up is a ratio, robust to drift).
"""

import json
import os
import sys

import jax
from absl import app, flags, logging

from ilsgan_jax.nn.precision import COMPUTE_DTYPES

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_step import (  # noqa: E402  (launch/benchmark_step.py)
    WIDTHS,
    add_utilisation,
    benchmark_train_step,
    compare_compiler_options,
    format_table,
    matmul_flops_per_second,
)

_RESOLUTIONS = flags.DEFINE_list("resolutions", ["32", "64", "128"], "Image sides to measure.")
_WIDTHS = flags.DEFINE_list("widths", list(WIDTHS), "Network widths: paper and/or runlocal.")
_STEPS = flags.DEFINE_integer("steps", 16, "Timed train steps per row (>= 16 includes one R1).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_SKIP = flags.DEFINE_list("skip", ["paper:128"], "widths:resolution pairs to leave out.")
_DTYPES = flags.DEFINE_list(
    "dtypes", ["float32"], f"config.model.compute_dtype values to measure: {COMPUTE_DTYPES}."
)
_OUTPUT = flags.DEFINE_string("output", None, "Path of the JSON file of the results.")
_INPUT = flags.DEFINE_bool("input", False, "Also measure the input pipeline (benchmark_input).")
_CACHE = flags.DEFINE_bool(
    "compilation_cache", False, "Use the persistent compilation cache (compile times then lie)."
)
_INPUT_BATCHES = flags.DEFINE_integer("input_batches", 20, "Timed batches of the input benchmark.")
_COMPARE = flags.DEFINE_bool(
    "compare_compiler_options",
    False,
    "Also time the main phase compiled with the jaxlib's default options against the config's "
    "`compiler` options, interleaved in this process (the speed-up as a ratio).",
)
_ROUNDS = flags.DEFINE_integer("rounds", 8, "Interleaved rounds of --compare_compiler_options.")


def main(argv):
    del argv
    if _CACHE.value:
        from ilsgan_jax import runtime

        runtime.setup_compilation_cache()
    skip = {item.strip() for item in _SKIP.value if item.strip()}
    for widths in _WIDTHS.value:
        if widths not in WIDTHS:
            raise ValueError(f"--widths entries must be in {WIDTHS}, got {widths!r}")
    for dtype in _DTYPES.value:
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"--dtypes entries must be in {COMPUTE_DTYPES}, got {dtype!r}")
    matmul_flops = {dtype: matmul_flops_per_second(dtype=dtype) for dtype in _DTYPES.value}
    for dtype, flops in matmul_flops.items():
        logging.info("dense %s matmul: %.1f GFLOP/s", dtype, flops / 1e9)
    rows, comparisons = [], []
    for widths in _WIDTHS.value:
        for resolution in (int(r) for r in _RESOLUTIONS.value):
            if f"{widths}:{resolution}" in skip:
                logging.info("skipping %s:%d (--skip)", widths, resolution)
                continue
            for dtype in _DTYPES.value:
                row = benchmark_train_step(
                    widths, resolution, _BATCH_SIZE.value, _STEPS.value, dtype
                )
                row = add_utilisation(row, matmul_flops[dtype])
                logging.info("%s", row)
                rows.append(row)
                if _COMPARE.value:
                    comparison = compare_compiler_options(
                        widths, resolution, _BATCH_SIZE.value, _ROUNDS.value, compute_dtype=dtype
                    )
                    logging.info("%s", comparison)
                    comparisons.append(comparison)
    result = {
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "cpu_count": os.cpu_count(),
        "matmul_gflop_per_second": {
            dtype: round(flops / 1e9, 1) for dtype, flops in matmul_flops.items()
        },
        "train_step": rows,
    }
    text = format_table(rows)
    if comparisons:
        result["compiler_options"] = comparisons
        text += "\n\nmain phase, jaxlib default -> config.compiler options (interleaved)\n"
        text += "\n".join(
            f"{c['widths']:>11} {c['resolution']:>5} px {c['compute_dtype']:>8}: "
            f"{c['default_seconds_per_main_phase']} s"
            f" -> {c['configured_seconds_per_main_phase']} s, speed-up x{c['speedup']}"
            f" (rounds {c['speedup_min_max'][0]}-{c['speedup_min_max'][1]})"
            for c in comparisons
        )
    if _INPUT.value:
        from benchmark_input import benchmark_input  # launch/benchmark_input.py
        from benchmark_input import format_table as format_input_table

        resolutions = sorted({int(r) for r in _RESOLUTIONS.value})
        input_rows = benchmark_input(
            resolutions, batch_size=_BATCH_SIZE.value, num_batches=_INPUT_BATCHES.value
        )
        result["input_pipeline"] = input_rows
        text += "\n\ninput pipeline (images/s)\n" + format_input_table(input_rows)
    print(f"dense matmul: {result['matmul_gflop_per_second']} GFLOP/s, devices: {jax.devices()}")
    print(text)
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
