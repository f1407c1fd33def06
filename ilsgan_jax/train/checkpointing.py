"""Checkpoints of the train state: one small wrapper around orbax `CheckpointManager`.

Layout of `directory` (one sub-directory per saved step, written by orbax):

    <directory>/<step>/state/   the train-state pytree (StandardSave: arrays, PRNG keys, scalars)
    <directory>/<step>/extra/   a small JSON of host data (data position, images seen, ...)
    <directory>/<step>/metrics/ the metrics given to `save` (e.g. {"fid": 12.3}), if any
    <directory>/quarantine/     latest checkpoints that failed to restore, moved aside (see below)

Guarantees:
- Atomic: orbax writes a step into `<step>.orbax-checkpoint-tmp-<n>` and renames it when complete
  (on GCS: a `commit_success.txt` marker). A crash during a save leaves only a tmp directory, which
  is never listed as a checkpoint (and is deleted when the next `Checkpointer` opens the
  directory), so the previous checkpoint stays the latest one.
- Resume never silently starts from scratch: `restore_latest` walks back from the newest step. A
  latest checkpoint that is corrupt (truncated or garbage files) or incompatible with the state
  (different tree structure or shapes) is logged with its directory and moved to `quarantine/`,
  and the previous one is used. If steps exist but none restores, it raises
  `CheckpointRestoreError` naming the directory. Unknown extra files in a step directory are
  ignored. Note: a dtype difference is not an incompatibility; orbax casts to the requested dtype.
- Retention: the last `keep_last` checkpoints plus (with `keep_best`) the one with the lowest
  `best_metric` (FID: lower is better), via orbax preservation policies (LatestN + BestN; see
  `checkpoint_policies`).

Multi-process: every process must call `save`, `restore_latest` and `close` (orbax synchronises
them); arrays are written shard-wise by their owning processes, the JSON by process 0.

Preemption (SIGTERM/SIGINT -> save and exit cleanly) is `preemption.install_preemption_handler`.

Saved models besides the train state (the segmenter's and the inversion encoder's weights) are
single orbax directories: `saved_pytrees.save_pytree` / `restore_pytree`, atomic in the
same way.

Directories are local paths (made absolute) or URLs (gs://bucket/run/checkpoints), kept as they
are; orbax reads and writes both through etils.epath and TensorStore.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from ilsgan_jax.train import checkpoint_policies, saved_pytrees

PyTree = Any

STATE_ITEM = "state"
EXTRA_ITEM = "extra"
QUARANTINE_DIR = "quarantine"
TMP_DIR_MARKER = ".orbax-checkpoint-tmp"


class CheckpointRestoreError(RuntimeError):
    """Checkpoints exist in a directory but none of them could be restored."""


@dataclasses.dataclass(frozen=True)
class RestoredCheckpoint:
    """What `Checkpointer.restore_latest` returns.

    Attributes:
      state: the train-state pytree, laid out like the `abstract_state` it was restored into.
      step: the step the checkpoint was saved at.
      extra: the host-data dict given to `save(..., extra=...)` (`{}` if none was given).
    """

    state: PyTree
    step: int
    extra: dict[str, Any]

    def __iter__(self):
        """Allows `state, step, extra = checkpointer.restore_latest(abstract_state)`."""
        return iter((self.state, self.step, self.extra))


def abstract_like(state: PyTree) -> PyTree:
    """The restore target for `state`: arrays become `jax.ShapeDtypeStruct` with their sharding.

    Args:
      state: a pytree of `jax.Array` (incl. typed PRNG keys), NumPy arrays/scalars and Python
        ints/floats, or already abstract `jax.ShapeDtypeStruct` leaves.

    Returns:
      The same tree with jax arrays replaced by `ShapeDtypeStruct(shape, dtype, sharding)`, NumPy
      scalars by 0-d NumPy arrays; other leaves unchanged.
    """

    def to_abstract(leaf):
        if isinstance(leaf, jax.Array):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
        if isinstance(leaf, np.generic):
            return np.asarray(leaf)
        return leaf

    return jax.tree.map(to_abstract, state)


class Checkpointer:
    """Saves and restores the train state in `directory` with orbax.

    Example (every process runs the same code):

        checkpointer = Checkpointer(workdir / "checkpoints", save_every_steps=1000, keep_last=3)
        restored = checkpointer.restore_latest(abstract_like(initial_state))
        state, step = (restored.state, restored.step) if restored else (initial_state, 0)
        ...
        checkpointer.save(step, state, extra={"images_seen": n}, metrics={"fid": fid})
        ...
        checkpointer.close()  # waits for the last asynchronous save
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every_steps: int,
        keep_last: int = 3,
        keep_best: bool = True,
        best_metric: str = "fid",
        async_save: bool = True,
    ):
        """Opens (creating if needed) the checkpoint directory.

        Args:
          directory: where the step directories live: a local path (made absolute) or a URL
            such as gs://bucket/run/checkpoints. Multi-host runs need storage all hosts see.
          save_every_steps: `save(step, ...)` writes only when `step % save_every_steps == 0`
            (or `force=True`).
          keep_last: how many of the newest checkpoints to keep (>= 1).
          keep_best: also keep the checkpoint with the lowest `best_metric` ever saved.
          best_metric: the key in `save(..., metrics=...)` to rank by; lower is better (FID).
          async_save: write in a background thread; `save` returns once the arrays are copied
            to host memory.
        """
        if save_every_steps < 1:
            raise ValueError(f"save_every_steps must be >= 1, got {save_every_steps}.")
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}.")
        self._directory = str(saved_pytrees.orbax_path(directory))
        self._best_metric = best_metric
        self._keep_best = keep_best
        self._pending_step: int | None = None
        leftovers = self._tmp_leftovers()
        if leftovers:
            logging.warning(
                "Found unfinished checkpoint writes in %s (a save was interrupted): %s. "
                "They are not checkpoints and will be deleted.",
                self._directory,
                leftovers,
            )
        options = checkpoint_policies.manager_options(
            save_every_steps=save_every_steps,
            keep_last=keep_last,
            keep_best=keep_best,
            best_metric=best_metric,
            async_save=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self._directory, options=options, item_names=(STATE_ITEM, EXTRA_ITEM)
        )

    # ----------------------------------------------------------------------------------------
    # Queries.

    @property
    def directory(self) -> str:
        """The checkpoint directory (absolute if local, else the URL)."""
        return self._directory

    def all_steps(self) -> list[int]:
        """Steps of all checkpoints kept (including one still being written), ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest step saved (possibly still being written), or None."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the lowest `best_metric`, or None if no step has that metric."""
        if not self._keep_best:
            return None
        return checkpoint_policies.lowest_metric_step(
            self.all_steps(), self._manager.metrics, self._best_metric
        )

    def latest_good_step(self) -> int | None:
        """The newest step whose save has completed on disk, or None.

        For error messages ("last good checkpoint: step N in DIR"); a save still in flight is
        not counted. Note it does not look at the values: the loop should check finiteness
        before it saves.
        """
        in_flight = self._pending_step if self._manager.is_saving_in_progress() else None
        finished = [step for step in self.all_steps() if step != in_flight]
        return finished[-1] if finished else None

    def should_save(self, step: int) -> bool:
        """Whether `save(step, ...)` without `force` would write a checkpoint."""
        return self._manager.should_save(step)

    # ----------------------------------------------------------------------------------------
    # Save.

    def save(
        self,
        step: int,
        state: PyTree,
        *,
        extra: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Starts saving `state` at `step` (asynchronously unless `async_save=False`).

        Args:
          step: the train step (int >= 0); a step that is already saved is skipped.
          state: pytree of `jax.Array` (incl. typed PRNG keys or `jax.random.key_data`), NumPy
            arrays and Python ints/floats. Sharded arrays are written by their owners.
          extra: JSON-serialisable host data (data position, images seen, ...).
          metrics: numbers to rank by, e.g. `{"fid": 12.3}`; used for `keep_best` when they
            contain `best_metric`.
          force: save even if `step` is not a multiple of `save_every_steps`.

        Returns:
          True if a save was started.
        """
        if step in self._manager.all_steps():
            logging.info("Checkpoint for step %d already exists in %s.", step, self._directory)
            return False
        extra_dict = dict(extra or {})
        try:
            json.dumps(extra_dict)
        except TypeError as error:
            raise ValueError(f"checkpoint `extra` must be JSON-serialisable: {error}") from error
        metrics_dict = checkpoint_policies.metrics_to_record(
            metrics, keep_best=self._keep_best, best_metric=self._best_metric
        )
        started = self._manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.StandardSave(state),
                    EXTRA_ITEM: ocp.args.JsonSave(extra_dict),
                }
            ),
            metrics=metrics_dict,
            force=force,
        )
        if started:
            self._pending_step = step
            logging.info("Saving checkpoint for step %d to %s.", step, self._directory)
        return started

    def wait_until_finished(self) -> None:
        """Blocks until a pending asynchronous save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads. Call on every process."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------
    # Restore.

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """Restores the checkpoint of `step` into the layout of `abstract_state`.

        Args:
          step: a step in `all_steps()`.
          abstract_state: the target tree: `jax.ShapeDtypeStruct` leaves (with shardings) or
            concrete arrays (see `abstract_like`), same tree structure as the saved state.

        Returns:
          (state, extra).

        Raises:
          Whatever orbax raises for a missing, corrupt or incompatible checkpoint.
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.StandardRestore(abstract_like(abstract_state)),
                    EXTRA_ITEM: ocp.args.JsonRestore(),
                }
            ),
        )
        return restored[STATE_ITEM], dict(restored[EXTRA_ITEM] or {})

    def restore_latest(self, abstract_state: PyTree) -> RestoredCheckpoint | None:
        """Restores the newest checkpoint that can be restored, or returns None if there is none.

        Walks back from the newest step; each one that fails (corrupt files, different tree
        structure or shapes) is logged with the reason and moved to `<directory>/quarantine/` (so
        that training can save that step again), then the previous step is tried.

        Args:
          abstract_state: the target tree (see `restore`).

        Returns:
          The restored checkpoint, or None if the directory holds no checkpoint at all.

        Raises:
          CheckpointRestoreError: checkpoints exist but none could be restored (names the
            directory and every step's error). Training must not start from scratch then.
        """
        self._manager.wait_until_finished()
        self._manager.reload()
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            logging.info("No checkpoint in %s; starting from scratch.", self._directory)
            return None
        failures: list[str] = []
        failed_steps: list[int] = []
        for step in steps:
            try:
                state, extra = self.restore(step, abstract_state)
            except Exception as error:  # noqa: BLE001 - any failure means "try the previous one"
                reason = f"{type(error).__name__}: {error}"
                failures.append(f"step {step}: {reason}")
                failed_steps.append(step)
                logging.warning(
                    "Checkpoint step %d in %s could not be restored (%s); trying the previous one.",
                    step,
                    self._directory,
                    reason,
                )
                continue
            if failed_steps:
                self._quarantine(failed_steps)
            logging.info("Restored checkpoint step %d from %s.", step, self._directory)
            return RestoredCheckpoint(state=state, step=int(step), extra=extra)
        raise CheckpointRestoreError(
            f"None of the {len(steps)} checkpoints in {self._directory} could be restored; "
            "refusing to start from scratch over them. Move the directory away to start afresh, "
            "or fix the config so the state matches. Errors:\n  " + "\n  ".join(failures)
        )

    # ----------------------------------------------------------------------------------------
    # Internals.

    def _tmp_leftovers(self) -> list[str]:
        directory = epath.Path(self._directory)
        if not directory.is_dir():
            return []
        return sorted(path.name for path in directory.iterdir() if TMP_DIR_MARKER in path.name)

    def _quarantine(self, steps: Iterable[int]) -> None:
        """Moves unrestorable step directories to `<directory>/quarantine/` (process 0 only)."""
        if jax.process_index() == 0:
            quarantine = epath.Path(self._directory) / QUARANTINE_DIR
            quarantine.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for step in steps:
                source = epath.Path(self._directory) / str(step)
                if not source.is_dir():
                    continue
                target = quarantine / f"{step}-{stamp}"
                source.rename(target)
                logging.warning("Moved unrestorable checkpoint %s to %s.", source, target)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("ilsgan_jax_checkpoint_quarantine")
        self._manager.reload()
