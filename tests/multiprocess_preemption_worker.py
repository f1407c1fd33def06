"""One process of the two-process preemption test (launched by tests/test_multiprocess.py).

Usage: python tests/multiprocess_preemption_worker.py PROCESS_ID PORT OUT_DIR

Joins jax.distributed (2 processes, 1 CPU device each) and steps until
`PreemptionHandler.should_stop(step)` is True (or MAX_STEPS, a safety stop), then writes the step
it stopped at to OUT_DIR/stopped_<id>.json. At step SIGNAL_STEP process 1, and only process 1,
sends itself SIGTERM; both processes then block until JAX's preemption service has published the
notice in the coordination service (its listener looks for SIGTERM once a second), so neither
races ahead before the service knows. Both must stop at the same step, after SIGNAL_STEP.
"""

import json
import os
import signal
import sys

import jax
from jax._src import distributed

from ilsgan_jax import parallel
from ilsgan_jax.train import preemption as preemption_lib

SIGNAL_STEP = 3
MAX_STEPS = 1_000_000  # only reached if the processes never agree on a sync point
# The key under which JAX's preemption sync manager publishes a preemption notice.
PREEMPTION_NOTICE_KEY = "RECEIVED_PREEMPTION_NOTICE"
NOTICE_TIMEOUT_MS = 60_000


def main(process_id: int, port: int, out_dir: str) -> None:
    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, process_id)
    with preemption_lib.install_preemption_handler() as preemption:
        step = 0
        while step < MAX_STEPS and not preemption.should_stop(step):
            if step == SIGNAL_STEP:
                if process_id == 1:
                    signal.raise_signal(signal.SIGTERM)
                distributed.global_state.client.blocking_key_value_get(
                    PREEMPTION_NOTICE_KEY, NOTICE_TIMEOUT_MS
                )
            step += 1
    with open(os.path.join(out_dir, f"stopped_{process_id}.json"), "w") as handle:
        json.dump({"step": step}, handle)
    jax.distributed.shutdown()


if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    os.environ["JAX_PLATFORMS"] = "cpu"
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
