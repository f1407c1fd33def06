"""When a checkpoint is written and which ones are kept: the orbax options of `Checkpointer`.

- Save decision: every `save_every_steps` steps (or `save(..., force=True)`), plus orbax's
  preemption policy.
- Retention: the last `keep_last` checkpoints plus (with `keep_best`) the one with the lowest
  `best_metric` (FID: lower is better), via orbax preservation policies (LatestN + BestN).
  Checkpoints saved without that metric are left to LatestN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


def best_metric_getter(best_metric: str) -> Callable[[Mapping[str, float]], float]:
    """`metrics -> float(metrics[best_metric])`, the ranking key of orbax's BestN."""

    def get_metric(metrics: Mapping[str, float]) -> float:
        return float(metrics[best_metric])

    return get_metric


def manager_options(
    *,
    save_every_steps: int,
    keep_last: int,
    keep_best: bool,
    best_metric: str,
    async_save: bool,
) -> ocp.CheckpointManagerOptions:
    """The `CheckpointManagerOptions` of a `Checkpointer` (arguments as its constructor's)."""
    policies: list[checkpoint_managers.PreservationPolicy] = [
        checkpoint_managers.LatestN(n=keep_last)
    ]
    if keep_best:
        # BestN sorts ascending and keeps the tail; reverse=True makes the tail the lowest.
        # Checkpoints saved without the metric are left to LatestN.
        policies.append(
            checkpoint_managers.BestN(
                get_metric_fn=best_metric_getter(best_metric),
                reverse=True,
                n=1,
                keep_checkpoints_without_metrics=False,
            )
        )
    return ocp.CheckpointManagerOptions(
        save_decision_policy=checkpoint_managers.AnySavePolicy(
            [
                checkpoint_managers.FixedIntervalPolicy(save_every_steps),
                checkpoint_managers.PreemptionCheckpointingPolicy(),
            ]
        ),
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        # best_fn is needed for orbax to write the metrics next to each step; retention
        # itself is decided by preservation_policy above.
        best_fn=best_metric_getter(best_metric) if keep_best else None,
        best_mode="min",
        keep_checkpoints_without_metrics=False,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True,
    )


def metrics_to_record(
    metrics: Mapping[str, float] | None, *, keep_best: bool, best_metric: str
) -> dict[str, float] | None:
    """The metrics to save next to a step: all of them as floats when they rank it (`keep_best`
    and `best_metric` among them), else None (the step is then left to LatestN)."""
    if metrics is None or not keep_best or best_metric not in metrics:
        return None
    return {name: float(value) for name, value in metrics.items()}


def lowest_metric_step(
    steps: Iterable[int],
    metrics_of: Callable[[int], Mapping[str, float] | None],
    best_metric: str,
) -> int | None:
    """The step in `steps` whose recorded `best_metric` is lowest, or None if none has it.

    Args:
      steps: the kept steps.
      metrics_of: `step -> the metrics recorded with it` (None or {} when there are none).
      best_metric: the key to rank by; lower is better. Ties go to the earlier step.
    """
    scored = [
        (float(metrics[best_metric]), step)
        for step in steps
        if (metrics := metrics_of(step)) and best_metric in metrics
    ]
    return min(scored)[1] if scored else None
