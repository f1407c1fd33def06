"""The layered-GAN family side by side (`launch/compare_systems.py`, `make compare`): every row
of `compare_rows.ROWS` trained at one size, its (image, mask) pairs exported, the same U-Net
recipe trained on them and scored on the same test set, plus each system's own route.

Workdir layout (WORKDIR = `run_comparison`'s `workdir`):

  WORKDIR/results.json, results.md           every finished or failed row, all seeds
  WORKDIR/systems.png                        every finished row's samples (`compare_figure`)
  WORKDIR/<row>/result_seed<S>.json          the row's result (status 'ok' or 'failed')
  WORKDIR/<row>/samples_seed<S>.png          the last sample grid of its (last) GAN stage
  WORKDIR/<row>/segmentation_seed<S>.png     the U-Net's previews on the test set
  WORKDIR/<row>/<route>_seed<S>.png          the own route's previews, where it has some
  WORKDIR/<row>/seed<S>/<stage>/             the GAN stage's workdir (checkpoints, export, ...)
  WORKDIR/<row>/seed<S>/progress.json        the stages done so far and their times
  WORKDIR/<row>/seed<S>/settings.json        every stage's config (`compare_settings`)

Resuming: every call first checks the rows' settings on record (`compare_settings`: a row run
with other settings is refused before anything trains); a row whose result has status 'ok' is
skipped; any other row runs again from its progress: finished stages are skipped, an
interrupted GAN stage resumes from its checkpoints with what is left of the row's budget. A row
that raises (a NaN loss included) is recorded as failed with the reason and the next row runs.

Budget of a row (time-budgeted sizes): the GAN stages get the row's budget minus the export, the
U-Net(s) (estimates, replaced by the longest measured in this workdir's finished rows), a set-up
allowance per GAN stage and, for PerturbGAN, a share for the inversion encoder, which then takes
as many steps as fit in what is left of the row's budget (or is reported as not run).
"""

import dataclasses
import glob
import json
import os
import time

from absl import logging

from ilsgan_jax.stages import atomic, compare_figure, compare_report, compare_settings, inversion
from ilsgan_jax.stages.compare_budget import Plan, Progress, measured_minutes, plan_row
from ilsgan_jax.stages.compare_rows import ROWS, SIZES, Row, Size, select_rows, stage_config
from ilsgan_jax.stages.compare_scoring import (
    alpha_threshold_summary,
    check_finite,
    copy_outputs,
    encoder_summary,
    instances_summary,
    row_result,
    score_alpha_threshold,
    score_instances,
    score_unet,
)
from ilsgan_jax.stages.export import export_pairs
from ilsgan_jax.train.loop import total_train_steps, train_and_evaluate


class ComparisonInterrupted(Exception):
    """A GAN stage stopped on a signal (not its budget): the comparison stops; run it again to
    resume."""


# ----------------------------------------------------------------------------------------------
# One row
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RowRun:
    """Runs one row for one seed in `row_dir/seed<S>`."""

    row: Row
    seed: int
    size: Size
    plan: Plan
    row_dir: str
    data_dir: str | None = None
    overrides: tuple[tuple[str, object], ...] = ()  # the user's config fields, every stage

    def __post_init__(self):
        self.seed_dir = seed_dir(self.row_dir, self.seed)
        os.makedirs(self.seed_dir, exist_ok=True)
        self.progress = Progress(self.seed_dir)

    def stage_dir(self, index: int) -> str:
        return os.path.join(self.seed_dir, self.row.stages[index].name)

    def config(self, index: int):
        config = stage_config(
            self.row.stages[index],
            self.size,
            seed=self.seed,
            data_dir=self.data_dir,
            overrides=self.overrides,
        )
        if self.row.route == "unet+alpha_threshold" and index == len(self.row.stages) - 1:
            config.labels4free.pretrained_workdir = self.stage_dir(0)
        return config

    def spent(self) -> float:
        return self.progress.seconds_spent(self.seed_dir)

    # ----- GAN stages -----------------------------------------------------------------------
    def gan_budget_minutes(self, index: int) -> float:
        """Stage `index`'s share of the GAN time (less what earlier attempts at it spent); the
        last stage gets what is left of the row's budget after the post-GAN reserve and its
        set-up allowance. At least `size.min_gan_minutes`."""
        if not self.size.time_budgeted:
            return 0.0
        stage = self.row.stages[index]
        if index < len(self.row.stages) - 1:
            share = stage.budget_share * self.plan.gan
            spent = self.progress.gan_seconds(self.seed_dir, stage.name) / 60
            return max(share - spent, self.size.min_gan_minutes)
        left = (
            self.plan.budget
            - self.spent() / 60
            - self.plan.post_gan
            - self.size.gan_overhead_minutes
        )
        return max(left, self.size.min_gan_minutes)

    def train_gan(self, index: int) -> dict:
        stage = self.row.stages[index]
        key = f"gan:{stage.name}"
        if self.progress.done(key):
            return self.progress.done(key)
        config = self.config(index)
        budget = self.gan_budget_minutes(index)
        config.train.time_budget_minutes = budget
        attempt = self.progress.start_attempt(stage.name)
        start = time.time()
        trained = train_and_evaluate(config, self.stage_dir(index))
        attempt["seconds"] = time.time() - start
        self.progress.save()
        finished = trained.steps >= total_train_steps(config)
        if trained.interrupted and not finished:
            if not budget or trained.wall_time_seconds < budget * 60:
                raise ComparisonInterrupted(
                    f"{self.row.name} seed {self.seed}: GAN stage {stage.name!r} stopped by a "
                    f"signal at step {trained.steps}; run the comparison again to resume"
                )
        seconds = self.progress.gan_seconds(self.seed_dir, stage.name)
        return self.progress.record(
            key,
            {
                "steps": trained.steps,
                "images_seen": trained.images_seen,
                "seconds": seconds,
                "budget_minutes": budget,
                "images_per_second": trained.images_seen / max(seconds, 1e-9),
                "last_metrics": trained.last_metrics,
                "machine": compare_report.machine(),
            },
        )

    # ----- Export and U-Net -------------------------------------------------------------------
    def export(self) -> dict:
        if self.progress.done("export"):
            return self.progress.done("export")
        start = time.time()
        last = len(self.row.stages) - 1
        # From the newest checkpoint: deterministic and resumable (finished shards are kept).
        export_pairs(self.config(last), self.stage_dir(last))
        return self.progress.record("export", {"seconds": time.time() - start})

    def unet(self) -> dict:
        """The U-Net route on the row's test set (`compare_scoring.score_unet`)."""
        if self.progress.done("unet"):
            return self.progress.done("unet")
        last = len(self.row.stages) - 1
        config, workdir = self.config(last), self.stage_dir(last)
        report = score_unet(config, workdir, self.row.route, self.size.test_crops)
        return self.progress.record("unet", report)

    # ----- Own routes ---------------------------------------------------------------------------
    def alpha_threshold(self) -> dict:
        """Labels4Free's own masks through the U-Net (`compare_scoring.score_alpha_threshold`)."""
        if self.progress.done("alpha_threshold"):
            return self.progress.done("alpha_threshold")
        last = len(self.row.stages) - 1
        config, workdir = self.config(last), self.stage_dir(last)
        return self.progress.record("alpha_threshold", score_alpha_threshold(config, workdir))

    def instances(self) -> dict:
        """The one-image row's instances, one U-Net per slot, matched to the objects of the test
        crops (`compare_instances`)."""
        if self.progress.done("instances"):
            return self.progress.done("instances")
        last = len(self.row.stages) - 1
        config, workdir = self.config(last), self.stage_dir(last)
        return self.progress.record(
            "instances", score_instances(config, workdir, self.size.test_crops)
        )

    def encoder(self, gan_record: dict) -> dict:
        """PerturbGAN's inversion encoder with as many steps as fit in the row's budget."""
        if self.progress.done("encoder"):
            return self.progress.done("encoder")
        config = self.config(0)
        steps = int(config.encoder.num_steps)
        if self.size.time_budgeted:
            left = self.plan.budget * 60 - self.spent()
            step_seconds = (
                self.size.encoder_step_ratio
                * config.encoder.batch_size
                / max(gan_record["images_per_second"], 1e-9)
            )
            fit = int((left - self.size.encoder_compile_minutes * 60) / step_seconds)
            steps = min(steps, max(fit, 0))
            if steps < self.size.min_encoder_steps:
                return self.progress.record(
                    "encoder",
                    {
                        "status": "not run",
                        "reason": f"{left / 60:.1f} min left of the row's budget fit {fit} "
                        f"encoder steps (< {self.size.min_encoder_steps}; ~{step_seconds:.2f} "
                        "s/step)",
                        "seconds": 0.0,
                    },
                )
        config.encoder.num_steps = steps
        start = time.time()
        report = inversion.score_encoder(config, self.stage_dir(0), retrain=True)
        return self.progress.record(
            "encoder",
            {
                "status": "ok",
                "test": report["test"],
                "encoder_steps": report["encoder_steps"],
                "seconds": time.time() - start,
            },
        )

    # ----- The whole row -----------------------------------------------------------------------
    def run(self) -> dict:
        gan_records = []
        for index, stage in enumerate(self.row.stages):
            logging.info(
                "compare: %s seed %d: GAN stage %r (%s); %.1f min of the row's budget left",
                self.row.name,
                self.seed,
                stage.name,
                f"budget {self.gan_budget_minutes(index):.1f} min"
                if self.size.time_budgeted
                else "fixed length",
                self.plan.budget - self.spent() / 60,
            )
            gan_records.append(self.train_gan(index))
        logging.info(
            "compare: %s seed %d: export and U-Net; %.1f min of the row's budget left",
            self.row.name,
            self.seed,
            self.plan.budget - self.spent() / 60,
        )
        export_record = self.export()
        unet_record = self.unet()
        own_route, extra_unets = None, []
        if self.row.route == "unet+encoder":
            logging.info("compare: %s seed %d: inversion encoder", self.row.name, self.seed)
            own_route = encoder_summary(self.encoder(gan_records[0]))
        elif self.row.route == "unet+alpha_threshold":
            logging.info("compare: %s seed %d: U-Net on the alpha masks", self.row.name, self.seed)
            record = self.alpha_threshold()
            extra_unets.append(record["seconds"])
            own_route = alpha_threshold_summary(record)
        elif self.row.route == "unet_on_crops":
            logging.info("compare: %s seed %d: per-instance U-Nets", self.row.name, self.seed)
            record = self.instances()
            extra_unets.extend(record["unet_seconds"])
            own_route = instances_summary(record)
        return row_result(
            self.row.stages,
            gan_records,
            export_record,
            unet_record,
            own_route,
            extra_unets,
            minutes=self.spent() / 60,
        )


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------
def seed_dir(row_dir: str, seed: int) -> str:
    """WORKDIR/<row>/seed<S>: one seed's stages, progress and settings."""
    return os.path.join(row_dir, f"seed{seed}")


def result_path(workdir: str, row_name: str, seed: int) -> str:
    return os.path.join(workdir, row_name, f"result_seed{seed}.json")


def read_results(workdir: str) -> list[dict]:
    """Every row result in `workdir`, in table order (rows, then seeds)."""
    results = []
    for name in ROWS:
        for path in glob.glob(os.path.join(workdir, name, "result_seed*.json")):
            with open(path) as file:
                results.append(json.load(file))
    order = list(ROWS)
    return sorted(results, key=lambda result: (order.index(result["row"]), result["seed"]))


def _row_settings(row: Row, seed: int, size: Size, overrides) -> dict:
    """The row's settings to record and check (`compare_settings`): every stage's config."""
    return compare_settings.row_settings(
        {
            stage.name: stage_config(stage, size, seed=seed, overrides=overrides)
            for stage in row.stages
        }
    )


def _stored_result(workdir: str, row: Row, seed: int) -> dict | None:
    path = result_path(workdir, row.name, seed)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


# ----------------------------------------------------------------------------------------------
# The row loop
# ----------------------------------------------------------------------------------------------
def run_comparison(
    row_names: list[str] | None,
    seeds: list[int],
    workdir: str,
    *,
    budget_minutes: float = 25.0,
    size: str = "runlocal",
    data_dir: str | None = None,
    overrides: dict | None = None,
) -> list[dict]:
    """Runs the rows `row_names` (None = all) for every seed into `workdir` and writes
    `results.json` and `results.md` (all results in `workdir`, earlier calls' included).
    `overrides` ({dotted config field: value}) apply to every GAN stage of the rows run (a
    row's result records them; use a workdir of its own for a changed setting).

    Raises ValueError for an unknown row, size or override field, and BudgetTooSmall before any
    training when a row's budget cannot reach its export and scoring. Returns this call's
    results (skipped rows: their stored results)."""
    overrides = tuple(sorted((overrides or {}).items()))
    rows, the_size, workdir = _check_arguments(row_names, seeds, workdir, budget_minutes, size)
    _check_overrides(rows, the_size, overrides)
    info = compare_report.machine()
    jobs = [(row, seed) for row in rows for seed in seeds]
    for row, seed in jobs:  # a result or checkpoint of another setting is never reused
        recorded = compare_settings.check(
            seed_dir(os.path.join(workdir, row.name), seed),
            _row_settings(row, seed, the_size, overrides),
            f"row {row.name!r} seed {seed} in {workdir}",
        )
        if not recorded and os.path.exists(result_path(workdir, row.name, seed)):
            logging.warning(
                "compare: %s seed %d has no settings on record; its result is kept as it is",
                row.name,
                seed,
            )
    stored = {(row.name, seed): _stored_result(workdir, row, seed) for row, seed in jobs}
    minutes_left = sum(
        row.budget_minutes(budget_minutes)
        for row, seed in jobs
        if stored[row.name, seed] is None or stored[row.name, seed]["status"] != "ok"
    )
    results = []
    for number, (row, seed) in enumerate(jobs, start=1):
        path = result_path(workdir, row.name, seed)
        previous = stored[row.name, seed]
        if previous is not None and previous["status"] == "ok":
            logging.info(
                "compare %d/%d: %s seed %d done before, skipped", number, len(jobs), row.name, seed
            )
            results.append(previous)
            continue
        row_budget = row.budget_minutes(budget_minutes)
        logging.info(
            "compare %d/%d: %s seed %d (%s), budget %.0f min; the table has about %.0f min left",
            number,
            len(jobs),
            row.name,
            seed,
            row.description,
            row_budget,
            minutes_left,
        )
        minutes_left -= row_budget
        base = {
            **_base_result(row, seed, the_size, row_budget, info),
            "overrides": dict(overrides),
        }
        run_dir = os.path.join(workdir, row.name)
        result = _run_row(row, seed, the_size, row_budget, run_dir, data_dir, overrides, base)
        atomic.write_json(path, result)
        results.append(result)
        _write_tables(workdir, the_size)
        logging.info(
            "compare %d/%d: %s seed %d %s in %.1f min",
            number,
            len(jobs),
            row.name,
            seed,
            result["status"],
            result.get("minutes", 0.0),
        )
    _write_tables(workdir, the_size)
    return results


def _write_tables(workdir: str, size: Size) -> None:
    """results.json, results.md and the picture of every row's samples (systems.png)."""
    results = read_results(workdir)
    compare_report.write_reports(workdir, results, title=_title(size))
    compare_figure.systems_figure(results, os.path.join(workdir, compare_figure.FIGURE_NAME))


def _check_arguments(
    row_names: list[str] | None, seeds: list[int], workdir: str, budget_minutes: float, size: str
) -> tuple[list[Row], Size, str]:
    """The rows, the size and the absolute workdir (created); raises ValueError for an unknown
    row or size or no seeds, and BudgetTooSmall when any row's budget is too small."""
    rows = select_rows(row_names)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; the sizes are {list(SIZES)}")
    the_size = SIZES[size]
    if not seeds:
        raise ValueError("no seeds given")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    measured = measured_minutes(read_results(workdir), the_size)
    for row in rows:  # every budget checked before anything trains
        plan_row(row, the_size, row.budget_minutes(budget_minutes), measured)
    return rows, the_size, workdir


def _check_overrides(rows: list[Row], size: Size, overrides) -> None:
    """Every override names a field of every stage config of `rows` (ValueError otherwise)."""
    for row in rows:
        for stage in row.stages:
            try:
                stage_config(stage, size, seed=0, overrides=overrides)
            except KeyError as error:
                raise ValueError(
                    f"override of row {row.name!r}, stage {stage.name!r}: {error}"
                ) from None


def _base_result(row: Row, seed: int, size: Size, budget_minutes: float, info: dict) -> dict:
    return {
        "row": row.name,
        "seed": seed,
        "description": row.description,
        "route": row.route,
        "size": size.name,
        "budget_minutes": budget_minutes,
        "machine": info,
    }


def _run_row(
    row: Row,
    seed: int,
    size: Size,
    budget_minutes: float,
    run_dir: str,
    data_dir: str | None,
    overrides: tuple[tuple[str, object], ...],
    base: dict,
) -> dict:
    """One row for one seed in `run_dir` (WORKDIR/<row>): its result (status 'ok'), or status
    'failed' with the reason when it raised anything but ComparisonInterrupted."""
    workdir = os.path.dirname(run_dir)
    run = None
    try:
        measured = measured_minutes(read_results(workdir), size)
        plan = plan_row(row, size, budget_minutes, measured)
        run = RowRun(row, seed, size, plan, run_dir, data_dir, overrides)
        compare_settings.record(run.seed_dir, _row_settings(row, seed, size, overrides))
        result = {**base, "status": "ok", **run.run()}
        check_finite(result)
        result["files"] = copy_outputs(run.stage_dir(len(row.stages) - 1), run.row_dir, seed)
    except ComparisonInterrupted:
        raise
    except Exception as error:  # recorded as failed; the other rows still run
        logging.exception("compare: %s seed %d failed", row.name, seed)
        reason = f"{type(error).__name__}: {error}".strip()
        minutes = run.spent() / 60 if run is not None else 0.0
        result = {**base, "status": "failed", "reason": reason[:500], "minutes": minutes}
    return result


def _title(size: Size) -> str:
    return f"The layered-GAN family on the built-in synthetic data ({size.name} size)"
