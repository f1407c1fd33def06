r"""The layered-GAN family side by side on the built-in synthetic data (`make compare`).

Each row (ILSGAN with ILS on and off, PerturbGAN with the NS + R1 and the WGAN-GP loss,
Labels4Free, the Independence-prior GAN) trains at the configs' `runlocal` size within
`--budget_minutes`, exports its (image, mask) pairs, trains the same U-Net on them and scores it
on the same test set; PerturbGAN and Labels4Free are also scored by their own routes.

  python launch/compare_systems.py --workdir=runs/compare
  python launch/compare_systems.py --workdir=runs/compare --systems=ilsgan,labels4free --seeds=0,1
  python launch/compare_systems.py --workdir=/tmp/compare_smoke --smoke   # every stage once
  python launch/compare_systems.py --workdir=runs/ip_area02 --systems=independence_prior \
      --set=loss.area_weight=0.2   # a changed setting, in a workdir of its own

Expected runtime: at most `--budget_minutes` (25) per row and seed on a 2-core CPU (rows stop
early at their kimg); two rows are given room to reach a fixed length and may take longer:
the Independence-prior row 1.4 times the budget (100 kimg, ~22 minutes at 100 images/s), the
WGAN-GP row 1.5 times (60 kimg, ~34 minutes at 36 images/s; on a slower machine its budget
stops it). The default table (6 rows, seed 0) takes ~2.5 hours (the budgets cap it at 2 h 53).
`--smoke` takes ~2 CPU-minutes with a warm compilation cache, ~4 from a cold one (compiling
dominates).

Writes WORKDIR/results.json and WORKDIR/results.md, and per row the last sample grid and the
segmentation previews in WORKDIR/<row>/. Run it again to resume: finished rows are skipped, an
interrupted row resumes from its checkpoints; a row recorded with other settings (another
`--set`, or a row whose setting changed since) is refused before anything trains. Layout:
ilsgan_jax/stages/compare.py; budget: compare_budget.py; scoring: compare_scoring.py.
"""

import ast

from absl import app, flags, logging

_SYSTEMS = flags.DEFINE_list("systems", [], "Rows to run (comma-separated); default: all.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (config.seed) to run each row with.")
_BUDGET = flags.DEFINE_float(
    "budget_minutes",
    25.0,
    "Wall time per row and seed, export and U-Net included, times the row's budget_scale.",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the runs and the results table.")
_SMOKE = flags.DEFINE_bool(
    "smoke", False, "Tiny sizes (16 px, a few steps): every stage once, to check the program."
)
_SET = flags.DEFINE_multi_string(
    "set",
    [],
    "A config field of every GAN stage of the rows run, as dotted.field=value (a Python literal, "
    "else a string); repeat the flag for several, e.g. --set=loss.area_weight=0.2. Use a workdir "
    "of its own: finished rows are not run again.",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "tfds data_dir of the synthetic data (default: the ilsgan_jax cache)."
)
flags.mark_flag_as_required("workdir")


def parse_overrides(items: list[str]) -> dict:
    """['a.b=0.2', 'c=x'] -> {'a.b': 0.2, 'c': 'x'}; app.UsageError names an item without '='."""
    overrides = {}
    for item in items:
        field, sep, text = item.partition("=")
        if not sep or not field.strip():
            raise app.UsageError(f"--set {item!r} is not dotted.field=value")
        try:
            overrides[field.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[field.strip()] = text
    return overrides


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from ilsgan_jax import runtime

    runtime.hide_accelerators_from_tensorflow()
    runtime.setup_compilation_cache()
    runtime.quiet_library_logs()
    from ilsgan_jax.stages import compare

    try:
        seeds = [int(seed) for seed in _SEEDS.value]
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, got {_SEEDS.value}") from None
    try:
        results = compare.run_comparison(
            _SYSTEMS.value or None,
            seeds,
            _WORKDIR.value,
            budget_minutes=_BUDGET.value,
            size="smoke" if _SMOKE.value else "runlocal",
            data_dir=_DATA_DIR.value,
            overrides=parse_overrides(_SET.value),
        )
    except ValueError as error:  # unknown row, budget too small: before any training
        raise app.UsageError(str(error)) from None
    except compare.ComparisonInterrupted as error:
        logging.warning("%s", error)
        raise SystemExit(1) from None
    failed = [f"{r['row']} seed {r['seed']}" for r in results if r["status"] != "ok"]
    logging.info(
        "Results: %s/results.md%s",
        _WORKDIR.value,
        f"; failed: {', '.join(failed)}" if failed else "",
    )


if __name__ == "__main__":
    app.run(main)
