"""Multi-process start-up, the device mesh and shardings for data-parallel training.

One 1-D mesh with axis `'data'` over all devices of all processes. The train state is replicated
(`replicated_sharding`), batches are split along their leading axis (`data_sharding`). Every
process feeds its own slice of the global batch (`make_global_batch`); the same jitted step then
runs unchanged on one device, several local devices or many hosts.

Start-up order matters: `initialize_distributed` must run before anything touches a JAX backend
(`jax.devices()`, `jax.process_count()`, creating arrays).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = object

DATA_AXIS = "data"
BATCH_SIZE_FIELD = "config.train.batch_size"

# Environment variables set by launch/multiprocess_cpu.sh (or any launcher without cluster
# auto-detection), read when no explicit argument is given.
ENV_COORDINATOR = "ILSGAN_COORDINATOR"
ENV_NUM_PROCESSES = "ILSGAN_NUM_PROCESSES"
ENV_PROCESS_ID = "ILSGAN_PROCESS_ID"


# ------------------------------------------------------------------------------------------------
# Start-up.


def _int_or_none(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}.") from None


# Launchers that JAX's `jax.distributed.initialize()` detects by itself, and the environment
# variable each sets to its process count (read here to skip start-up for a single process).
LAUNCHER_PROCESS_COUNTS = (("Slurm", "SLURM_NTASKS"), ("Open MPI", "OMPI_COMM_WORLD_SIZE"))
DISTRIBUTED_MODES = ("auto", "on", "off")
ENV_DISTRIBUTED = "ILSGAN_DISTRIBUTED"


def _launcher_process_count(environ: Mapping[str, str]) -> tuple[str, int] | None:
    """(launcher name, process count) of a Slurm or Open MPI launch, or None."""
    for name, variable in LAUNCHER_PROCESS_COUNTS:
        count = _int_or_none(environ.get(variable), variable)
        if count is not None:
            return name, count
    return None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Starts JAX's distributed runtime when this program is one of several processes.

    Where the settings come from, first match wins:
      1. the arguments (the `--coordinator_address/--num_processes/--process_id` flags),
      2. `$ILSGAN_COORDINATOR`, `$ILSGAN_NUM_PROCESSES`, `$ILSGAN_PROCESS_ID`
         (launch/multiprocess_cpu.sh), each argument falling back to its variable,
      3. `mode` (the `--distributed` flag, else `$ILSGAN_DISTRIBUTED`, else 'auto'):
         'on': `jax.distributed.initialize()` without arguments, JAX's own auto-detection of
         the cluster (Cloud TPU pods and GKE, Slurm, Open MPI; `launch/tpu_vm.sh` uses it);
         'auto': the same when a Slurm or Open MPI launch runs more than one process
         (`$SLURM_NTASKS`, `$OMPI_COMM_WORLD_SIZE`); under Slurm on GPUs JAX then gives each
         process one GPU (its SLURM_LOCALID) unless `$JAX_LOCAL_DEVICE_IDS` lists more;
         'off': never,
      4. otherwise: a single process, nothing to do.
    A process count of 1 is also a no-op. Calling it again after a successful start is a no-op.

    On CPU, cross-process collectives use gloo (JAX's default `jax_cpu_collectives_implementation`),
    and the persistent compilation cache is turned off (`_avoid_compilation_cache_skew_on_cpu`).

    Args:
      coordinator_address: 'host:port' of process 0's coordinator service, e.g. '127.0.0.1:12345'.
      num_processes: total number of processes (>= 1).
      process_id: this process's index in [0, num_processes).
      mode: 'auto' | 'on' | 'off', see 3.
      environ: where to read the ILSGAN_* and launcher variables (default: `os.environ`).

    Returns:
      True if the distributed runtime is running (started now or before), False for a single
      process.

    Raises:
      ValueError: explicit settings are incomplete or inconsistent (names the missing one), or
        an unknown mode.
    """
    if jax.distributed.is_initialized():
        return True
    environ = os.environ if environ is None else environ
    coordinator_address = coordinator_address or environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _int_or_none(environ.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _int_or_none(environ.get(ENV_PROCESS_ID), ENV_PROCESS_ID)

    explicit = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    if any(value is not None for value in explicit.values()):
        return _start_with_explicit_settings(**explicit)

    mode = mode or environ.get(ENV_DISTRIBUTED) or "auto"
    return _start_without_settings(mode, environ)


def _start_with_explicit_settings(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> bool:
    """Starts jax.distributed from explicit settings (one process: nothing to start)."""
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}.")
    if num_processes == 1 and process_id in (None, 0):
        logging.info("One process: not starting jax.distributed.")
        return False
    settings = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    missing = [name for name, value in settings.items() if value is None]
    if missing:
        raise ValueError(
            f"Multi-process start-up needs coordinator_address, num_processes and "
            f"process_id; missing: {', '.join(missing)} (flags --{missing[0]} or "
            f"${ENV_COORDINATOR}/${ENV_NUM_PROCESSES}/${ENV_PROCESS_ID})."
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in [0, num_processes={num_processes}), got {process_id}."
        )
    logging.info(
        "Starting jax.distributed: process %d of %d, coordinator %s.",
        process_id,
        num_processes,
        coordinator_address,
    )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    _avoid_compilation_cache_skew_on_cpu()
    return True


def _start_without_settings(mode: str, environ: Mapping[str, str]) -> bool:
    """'on': JAX's cluster auto-detection; 'auto': only for a multi-process launch; 'off'."""
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(
            f"--distributed (or ${ENV_DISTRIBUTED}) must be one of "
            f"{DISTRIBUTED_MODES}, got {mode!r}."
        )
    if mode == "off":
        return False
    if mode == "auto":
        launch = _launcher_process_count(environ)
        if launch is None:
            logging.info("No multi-process launch detected: single process.")
            return False
        launcher, count = launch
        if count == 1:
            logging.info("%s with a single process: not starting jax.distributed.", launcher)
            return False
        logging.info("Starting jax.distributed for a %s launch of %d processes.", launcher, count)
    else:
        logging.info("Starting jax.distributed with JAX's cluster auto-detection.")
    jax.distributed.initialize()
    _avoid_compilation_cache_skew_on_cpu()
    return True


def _avoid_compilation_cache_skew_on_cpu() -> None:
    """Turns JAX's persistent compilation cache off for multi-process runs on CPU.

    JAX keys cache entries per process and only process 0 writes them, so on a warm cache process
    0 loads its programs while the others compile theirs and fall minutes behind. On CPU the
    cross-process collectives (gloo) give up when the processes reach a new collective more than
    30 s apart ("Gloo context initialization failed: ... GetKeyValue() timed out"). Without the
    cache every process compiles, and they stay in step. Call after `jax.distributed.initialize`.
    """
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        logging.info("Multi-process on CPU: persistent compilation cache off (see parallel.py).")
        jax.config.update("jax_enable_compilation_cache", False)


def log_topology() -> None:
    """Logs process index/count and the local and global devices (every process logs its own)."""
    logging.info(
        "Process %d of %d; %d local of %d global devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.local_devices(),
    )


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes logs, summaries and images."""
    return jax.process_index() == 0


# ------------------------------------------------------------------------------------------------
# Mesh and shardings.


def create_mesh(axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over all devices of all processes.

    Devices are ordered by (process index, device id), so each process's devices form one
    contiguous block of the axis and its slice of the batch is a contiguous block of the global
    batch (what `make_global_batch` assumes).

    Returns:
      Mesh of shape `{axis_name: jax.device_count()}`.
    """
    devices = sorted(jax.devices(), key=lambda device: (device.process_index, device.id))
    return Mesh(np.asarray(devices), (axis_name,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Splits the leading (batch) axis over the mesh axis: `P('data')`."""
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device: `P()` (train state, PRNG keys, scalars)."""
    return NamedSharding(mesh, P())


def local_device_count(mesh: Mesh) -> int:
    """How many of the mesh's devices belong to this process."""
    return sum(device.process_index == jax.process_index() for device in mesh.devices.flat)


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
    """Raises ValueError (naming `config.train.batch_size`) unless the batch splits evenly.

    The global batch must split into equal per-process slices, and each slice into equal
    per-device slices.
    """
    num_devices = mesh.devices.size
    num_processes = len({device.process_index for device in mesh.devices.flat})
    if global_batch_size < 1 or global_batch_size % num_devices:
        raise ValueError(
            f"{BATCH_SIZE_FIELD}={global_batch_size} must be a positive multiple of the number of "
            f"devices ({num_devices} = {num_processes} process(es) x "
            f"{num_devices // num_processes} device(s))."
        )


def process_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """The number of examples this process feeds per step (after `check_batch_divisible`)."""
    check_batch_divisible(global_batch_size, mesh)
    num_processes = len({device.process_index for device in mesh.devices.flat})
    return global_batch_size // num_processes


def make_global_batch(mesh: Mesh, local_batch: PyTree) -> PyTree:
    """Assembles per-process batch slices into global arrays sharded along `'data'`.

    Args:
      mesh: from `create_mesh`.
      local_batch: pytree of NumPy arrays `[B_local, ...]`, this process's slice of the global
        batch (process p holds examples `[p * B_local, (p + 1) * B_local)`). Every process must
        pass the same tree structure, shapes and dtypes.

    Returns:
      The same tree of `jax.Array` `[B_local * num_processes, ...]` with `data_sharding(mesh)`.

    Raises:
      ValueError: `B_local` is not a multiple of this process's device count, or leaves disagree
        on `B_local` (names `config.train.batch_size`).
    """
    sharding = data_sharding(mesh)
    devices_here = local_device_count(mesh)
    leaves = jax.tree.leaves(local_batch)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "Every batch entry needs the same leading (batch) size; got sizes "
            f"{sorted(sizes, key=str)}."
        )
    (local_size,) = sizes
    if local_size % devices_here:
        raise ValueError(
            f"The per-process batch of {local_size} does not split over this process's "
            f"{devices_here} devices; {BATCH_SIZE_FIELD} must be a multiple of "
            f"{mesh.devices.size} (the number of devices)."
        )
    # The one intended host->device copy of a train step: allowed explicitly, so that the loop
    # can run under `jax.transfer_guard("disallow")` (multi-process, this copy goes through
    # `batched_device_put`, which the guard would otherwise refuse).
    with jax.transfer_guard("allow"):
        return jax.tree.map(
            lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)),
            local_batch,
        )


# ------------------------------------------------------------------------------------------------
# Host copies for logging.


def host_local_copy(tree: PyTree) -> PyTree:
    """Copies a pytree of (possibly multi-process) arrays to NumPy on this host, for logging.

    Fully addressable arrays are fetched directly; replicated arrays from the local copy; arrays
    sharded across processes are gathered with `multihost_utils.process_allgather`, which is a
    collective: in multi-process runs every process must call this with the same tree. It blocks
    until the values are computed, so call it only at the logging cadence.

    Returns:
      The same tree with `np.ndarray` leaves (global shapes).
    """
    from jax.experimental import multihost_utils

    def to_host(leaf):
        if not isinstance(leaf, jax.Array):
            return np.asarray(leaf)
        if leaf.is_fully_addressable:
            return np.asarray(jax.device_get(leaf))
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(to_host, tree)
