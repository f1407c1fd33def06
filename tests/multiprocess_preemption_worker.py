"""One process of the two-process preemption test (launched by tests/test_multiprocess.py).

Usage: python tests/multiprocess_preemption_worker.py PROCESS_ID PORT OUT_DIR

Joins jax.distributed (2 processes, 1 CPU device each), writes OUT_DIR/ready_<id>, then steps
until `PreemptionHandler.should_stop(step)` is True (or MAX_STEPS) and writes the step it stopped
at to OUT_DIR/stopped_<id>.json. The test sends SIGTERM to one process only; both must stop at
the same step.
"""

import json
import os
import sys
import time

import jax

from ilsgan_jax import parallel
from ilsgan_jax.train import checkpointing

MAX_STEPS = 1000
STEP_SECONDS = 0.02


def main(process_id: int, port: int, out_dir: str) -> None:
    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, process_id)
    with checkpointing.install_preemption_handler() as preemption:
        open(os.path.join(out_dir, f"ready_{process_id}"), "w").close()
        step = 0
        while step < MAX_STEPS and not preemption.should_stop(step):
            time.sleep(STEP_SECONDS)
            step += 1
    with open(os.path.join(out_dir, f"stopped_{process_id}.json"), "w") as handle:
        json.dump({"step": step}, handle)
    jax.distributed.shutdown()


if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    os.environ["JAX_PLATFORMS"] = "cpu"
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
