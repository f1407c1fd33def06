"""Tests for train/preemption.py: the signal flag, handler restoration, the main-thread rule.

`signal.raise_signal` delivers the signal to the calling (main) thread and runs the Python handler
before it returns, so each assertion follows the signal directly: no polling, no sleeps.
"""

import signal
import threading

import pytest

from ilsgan_jax.train import preemption as preemption_lib


def test_sigterm_sets_the_flag_and_the_handlers_are_restored():
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    previous_sigint = signal.getsignal(signal.SIGINT)
    with preemption_lib.install_preemption_handler() as preemption:
        assert not preemption.requested and not preemption.should_stop(0)
        assert preemption.signal_name is None
        signal.raise_signal(signal.SIGTERM)
        assert preemption.requested
        assert preemption.should_stop(1)
        assert preemption.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous_sigterm
    assert signal.getsignal(signal.SIGINT) is previous_sigint


def test_a_second_sigint_interrupts():
    with preemption_lib.install_preemption_handler() as preemption:
        signal.raise_signal(signal.SIGINT)
        assert preemption.should_stop(0) and preemption.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_install_refuses_other_threads():
    errors = []

    def install():
        try:
            preemption_lib.install_preemption_handler()
        except ValueError as error:
            errors.append(error)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])
