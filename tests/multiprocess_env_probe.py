"""Stand-in for `python -m ilsgan_jax.main` when tests/test_multiprocess.py runs the launch script.

Usage (what launch/multiprocess_cpu.sh runs through a shim): multiprocess_env_probe.py -m
ilsgan_jax.main --mode=train --config=C --workdir=W [extra flags...]

Starts jax.distributed from the ILSGAN_* environment only (no arguments), sums the process
indices over a global batch with a cross-process collective, and writes what it saw to
W/probe_<process index>.json.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ilsgan_jax import parallel


def main(argv: list[str]) -> None:
    flags = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    started = parallel.initialize_distributed()
    mesh = parallel.create_mesh()
    local_rows = parallel.local_device_count(mesh)
    local_batch = np.full((local_rows,), jax.process_index() + 1, dtype=np.float32)
    batch = parallel.make_global_batch(mesh, local_batch)
    total = jax.jit(jnp.sum, out_shardings=parallel.replicated_sharding(mesh))(batch)
    record = {
        "argv": argv,
        "started": started,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_device_count": jax.local_device_count(),
        "device_count": jax.device_count(),
        "total": float(parallel.host_local_copy(total)),
    }
    with open(os.path.join(flags["workdir"], f"probe_{jax.process_index()}.json"), "w") as handle:
        json.dump(record, handle)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
