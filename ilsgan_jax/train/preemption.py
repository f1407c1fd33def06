"""Preemption: SIGTERM/SIGINT become a flag that the train loop polls to save and exit cleanly.

Use as `with install_preemption_handler() as preemption: ... if preemption.should_stop(step)`;
the loop then saves a checkpoint (`Checkpointer.save(..., force=True)`) and returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from typing import Any

import jax
from absl import logging


class PreemptionHandler:
    """Turns SIGTERM/SIGINT into a flag that the train loop polls to save and exit cleanly.

    Single process: the first signal sets `requested`; the loop saves (`force=True`) and returns.
    A second SIGINT raises KeyboardInterrupt as usual (so a stuck run can still be stopped).

    Multi-process (`jax.process_count() > 1`): a signal usually reaches only some processes, and
    all of them must agree on the step at which to save. `should_stop(step)` therefore asks JAX's
    preemption service (`multihost_utils.reached_preemption_sync_point`), which listens for
    SIGTERM itself and agrees on a common step; it must be called at every step by every process.
    In this mode only SIGINT gets a Python handler (installing one for SIGTERM would replace the
    service's). Requires `jax_enable_preemption_service` (JAX's default).

    Signal handlers can only be installed from the main thread (a Python restriction); elsewhere
    `install_preemption_handler` raises ValueError.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)):
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("install_preemption_handler() must be called from the main thread.")
        self._requested = threading.Event()
        self._signal_name: str | None = None
        self._multi_process = jax.process_count() > 1
        self._previous: dict[int, Any] = {}
        for signum in signals:
            if self._multi_process and signum == signal.SIGTERM:
                continue
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._signal_name = signal.Signals(signum).name
        self._requested.set()
        logging.warning("Received %s: will save a checkpoint and stop.", self._signal_name)

    @property
    def requested(self) -> bool:
        """Whether this process received one of the signals."""
        return self._requested.is_set()

    @property
    def signal_name(self) -> str | None:
        """The name of the first signal received (e.g. 'SIGTERM'), or None."""
        return self._signal_name

    def should_stop(self, step: int) -> bool:
        """Whether the loop should save now and stop. Call at every step on every process.

        Single process: `requested`. Multi-process: JAX's preemption sync point for `step` (True
        on all processes at the same step once any of them got SIGTERM).
        """
        if not self._multi_process:
            return self.requested
        from jax.experimental import multihost_utils

        return multihost_utils.reached_preemption_sync_point(step)

    def close(self) -> None:
        """Restores the signal handlers that were installed before."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def __enter__(self) -> PreemptionHandler:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def install_preemption_handler(
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
) -> PreemptionHandler:
    """Installs handlers for `signals` (main thread only) and returns the flag object.

    Use as `with install_preemption_handler() as preemption: ... if preemption.should_stop(step)`.
    """
    return PreemptionHandler(signals)
