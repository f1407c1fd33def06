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

import functools
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from jax.sharding import NamedSharding, PartitionSpec

from configs import ilsgan as ilsgan_config
from ilsgan_jax import compiler_options, parallel
from ilsgan_jax.nn.precision import COMPUTE_DTYPES
from ilsgan_jax.train import phases
from ilsgan_jax.train import state as state_lib
from ilsgan_jax.train import step as step_lib

WIDTHS = ("paper", "runlocal")

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


def make_config(widths: str, resolution: int, batch_size: int, compute_dtype: str = "float32"):
    """The ILSGAN config at `widths` ('paper' | 'runlocal'), `resolution` and `compute_dtype`."""
    if widths not in WIDTHS:
        raise ValueError(f"--widths entries must be in {WIDTHS}, got {widths!r}")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"--dtypes entries must be in {COMPUTE_DTYPES}, got {compute_dtype!r}")
    variant = f"res={resolution}" + (",runlocal" if widths == "runlocal" else "")
    config = ilsgan_config.get_config(variant)
    config.train.batch_size = batch_size
    config.model.compute_dtype = compute_dtype
    return config


def matmul_flops_per_second(size: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
    """Best-of-`repeats` FLOP/s of a jitted `size x size` matmul in `dtype` on the default
    device."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
    matmul = jax.jit(jnp.dot)
    jax.block_until_ready(matmul(a, a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_memory_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def step_flops(compiled) -> float:
    """FLOPs of one call of a compiled computation from XLA's cost analysis (0 if unavailable)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def setup_train_step(widths: str, resolution: int, batch_size: int, compute_dtype: str):
    """(config, mesh, trainer, init, real): `init(key)` makes a replicated train state; `real`
    is a fixed batch of uniform images in [-1, 1] sharded on 'data'."""
    config = make_config(widths, resolution, batch_size, compute_dtype)
    mesh = parallel.create_mesh()
    trainer = step_lib.make_trainer(config)
    init = jax.jit(
        lambda key: state_lib.create_train_state(config, trainer.networks, trainer.optimizers, key),
        out_shardings=NamedSharding(mesh, PartitionSpec()),
    )
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (batch_size, resolution, resolution, 3)).astype(np.float32)
    real = jax.device_put(real, NamedSharding(mesh, PartitionSpec("data")))
    return config, mesh, trainer, init, real


def benchmark_train_step(
    widths: str, resolution: int, batch_size: int, steps: int, compute_dtype: str = "float32"
) -> dict:
    """Compiles and times the train step; returns one row of results."""
    config, mesh, trainer, init, real = setup_train_step(
        widths, resolution, batch_size, compute_dtype
    )
    state = init(jax.random.key(config.seed))
    # The loop's step: the main phases and the R1 phase compiled separately, R1 every 16 steps.
    phased = step_lib.jit_phased_train_step(trainer, mesh)
    r1_interval = config.loss.r1_interval

    start = time.perf_counter()
    main_compiled = phased.main.lower(state, real).compile()
    r1_compiled = phased.r1.lower(state, real).compile() if phased.r1 is not None else None
    compile_seconds = time.perf_counter() - start
    # FLOPs per step with R1 amortised over its interval.
    flops = step_flops(main_compiled)
    if r1_compiled is not None:
        flops += step_flops(r1_compiled) / r1_interval

    state, metrics = phased(state, real, 0)  # warm-up (step 0 runs R1)
    jax.block_until_ready(metrics)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for step in range(1, steps + 1):
        state, metrics = phased(state, real, step)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    return {
        "widths": widths,
        "resolution": resolution,
        "compute_dtype": compute_dtype,
        "batch_size": batch_size,
        "devices": len(mesh.devices.flat),
        "ada": config.ada.mode,
        "steps": steps,
        "compile_seconds": round(compile_seconds, 1),
        "seconds_per_step": round(seconds / steps, 4),
        "images_per_second": round(batch_size * steps / seconds, 1),
        "peak_host_memory_mb": round(peak_memory_mb(), 0),
        "gflops_per_step": round(flops / 1e9, 2),
        "load_average_1min": round((load_before + os.getloadavg()[0]) / 2, 2),
    }


def compare_compiler_options(
    widths: str,
    resolution: int,
    batch_size: int,
    rounds: int,
    steps_per_round: int = 4,
    compute_dtype: str = "float32",
) -> dict:
    """Main phase with the jaxlib's default XLA options vs the config's `compiler` options.

    Both executables come from one lowering and run in turns (`rounds` x `steps_per_round`
    steps each), so machine drift hits both alike; the speed-up is the median of the per-round
    time ratios (default / configured)."""
    config, mesh, trainer, init, real = setup_train_step(
        widths, resolution, batch_size, compute_dtype
    )
    main_phase = functools.partial(phases.main_phase, trainer)
    lowered = step_lib.jit_train_step(main_phase, mesh).lower(init(jax.random.key(0)), real)
    configured = compiler_options.for_devices(config, mesh.devices.flat)
    executables = {
        "default": lowered.compile(),
        "configured": lowered.compile(compiler_options=configured),
    }
    states = {name: init(jax.random.key(0)) for name in executables}
    seconds = {name: [] for name in executables}
    for round_index in range(rounds + 1):  # round 0 warms up
        for name, executable in executables.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                states[name], metrics = executable(states[name], real)
            jax.block_until_ready(metrics)
            if round_index > 0:
                seconds[name].append((time.perf_counter() - start) / steps_per_round)
    ratios = np.asarray(seconds["default"]) / np.asarray(seconds["configured"])
    return {
        "widths": widths,
        "resolution": resolution,
        "compute_dtype": compute_dtype,
        "configured_options": configured,
        "default_seconds_per_main_phase": round(float(np.median(seconds["default"])), 4),
        "configured_seconds_per_main_phase": round(float(np.median(seconds["configured"])), 4),
        "speedup": round(float(np.median(ratios)), 3),
        "speedup_min_max": [round(float(ratios.min()), 3), round(float(ratios.max()), 3)],
    }


def add_utilisation(row: dict, matmul_flops: float) -> dict:
    """Adds `mfu`: the step's FLOP/s over the measured dense matmul FLOP/s (of the row's
    dtype)."""
    step_flop_rate = row["gflops_per_step"] * 1e9 / row["seconds_per_step"]
    row["achieved_gflop_per_second"] = round(step_flop_rate / 1e9, 1)
    row["mfu"] = round(step_flop_rate / matmul_flops, 3)
    return row


def format_table(rows: list[dict]) -> str:
    columns = [
        ("widths", "widths"),
        ("resolution", "res"),
        ("compute_dtype", "dtype"),
        ("compile_seconds", "compile s"),
        ("images_per_second", "img/s"),
        ("peak_host_memory_mb", "peak MiB"),
        ("gflops_per_step", "GFLOP/step"),
        ("achieved_gflop_per_second", "GFLOP/s"),
        ("mfu", "MFU"),
        ("load_average_1min", "load"),
    ]
    lines = [" ".join(f"{title:>11}" for _, title in columns)]
    for row in rows:
        lines.append(" ".join(f"{str(row.get(key, '')):>11}" for key, _ in columns))
    return "\n".join(lines)


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
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
