"""The pieces of `launch/benchmark.py`, importable without its flags: configs at the benchmark
widths, the compiled train step, its timing, FLOPs and model FLOP utilisation
(`launch/benchmark_reference.py` uses them too)."""

import functools
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from configs import ilsgan as ilsgan_config
from ilsgan_jax import compiler_options, parallel
from ilsgan_jax.nn.precision import COMPUTE_DTYPES
from ilsgan_jax.train import phases
from ilsgan_jax.train import state as state_lib
from ilsgan_jax.train import step as step_lib

WIDTHS = ("paper", "runlocal")


def make_config(
    widths: str,
    resolution: int,
    batch_size: int,
    compute_dtype: str = "float32",
    ada_mode: str | None = None,
):
    """The ILSGAN config at `widths` ('paper' | 'runlocal'), `resolution` and `compute_dtype`;
    `ada_mode` ('ada' | 'fixed' | 'noaug') replaces the widths' ADA mode unless None."""
    if widths not in WIDTHS:
        raise ValueError(f"--widths entries must be in {WIDTHS}, got {widths!r}")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"--dtypes entries must be in {COMPUTE_DTYPES}, got {compute_dtype!r}")
    variant = f"res={resolution}" + (",runlocal" if widths == "runlocal" else "")
    config = ilsgan_config.get_config(variant)
    config.train.batch_size = batch_size
    config.model.compute_dtype = compute_dtype
    if ada_mode is not None:
        config.ada.mode = ada_mode
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


def setup_train_step(
    widths: str,
    resolution: int,
    batch_size: int,
    compute_dtype: str,
    ada_mode: str | None = None,
):
    """(config, mesh, trainer, init, real): `init(key)` makes a replicated train state; `real`
    is a fixed batch of uniform images in [-1, 1] sharded on 'data'."""
    config = make_config(widths, resolution, batch_size, compute_dtype, ada_mode)
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


def compile_phased_step(trainer, mesh, state, real):
    """(phased, compile_seconds, flops): the loop's step (`step_lib.jit_phased_train_step`: the
    main phases and the R1 phase compiled separately, R1 every `r1_interval` steps), compiled
    for `state` and `real` (later calls reuse the executables), the seconds lowering and
    compilation took, and XLA's FLOPs per step with R1 amortised over its interval."""
    phased = step_lib.jit_phased_train_step(trainer, mesh)
    start = time.perf_counter()
    main_compiled = phased.main.lower(state, real).compile()
    r1_compiled = phased.r1.lower(state, real).compile() if phased.r1 is not None else None
    compile_seconds = time.perf_counter() - start
    flops = step_flops(main_compiled)
    if r1_compiled is not None:
        flops += step_flops(r1_compiled) / phased.r1_interval
    return phased, compile_seconds, flops


def benchmark_train_step(
    widths: str, resolution: int, batch_size: int, steps: int, compute_dtype: str = "float32"
) -> dict:
    """Compiles and times the train step; returns one row of results."""
    config, mesh, trainer, init, real = setup_train_step(
        widths, resolution, batch_size, compute_dtype
    )
    state = init(jax.random.key(config.seed))
    phased, compile_seconds, flops = compile_phased_step(trainer, mesh, state, real)
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
