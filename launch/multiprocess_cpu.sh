#!/usr/bin/env bash
# N processes on this machine talking over loopback, each with D simulated CPU devices: the test
# bed for multi-host code (jax.distributed + gloo collectives) without a cluster.
#
# Usage: launch/multiprocess_cpu.sh NUM_PROCESSES DEVICES_PER_PROCESS CONFIG WORKDIR [extra flags...]
#   launch/multiprocess_cpu.sh 2 2 configs/ilsgan.py:dataset=synthetic,runlocal runs/mp_demo
#
# Process 0 prints to the console; process i>0 logs to WORKDIR/process_<i>.log.
# Each process gets ILSGAN_COORDINATOR / ILSGAN_NUM_PROCESSES / ILSGAN_PROCESS_ID, which
# ilsgan_jax.parallel.initialize_distributed reads. SIGTERM and Ctrl-C (SIGINT) reach all processes
# as SIGTERM: they save a checkpoint at the same step and exit (a second Ctrl-C kills them).
# Environment: PORT (coordinator port, default random in 20000-39999), PYTHON.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '5,6p' "$0" >&2
  exit 2
fi
num_processes=$1
devices_per_process=$2
config=$3
workdir=$4
shift 4

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
default_python=python3
[[ -x "$repo_root/.venv/bin/python" ]] && default_python="$repo_root/.venv/bin/python"
python=${PYTHON:-$default_python}
port=${PORT:-$((20000 + RANDOM % 20000))}
mkdir -p "$workdir"

pids=()
forward() { kill -s "$1" "${pids[@]}" 2>/dev/null || true; }
# Several processes stop together only through JAX's preemption service, which listens for
# SIGTERM (a SIGINT would reach each process's own handler and stop none of them). So Ctrl-C is
# sent on as SIGTERM: all processes save at one agreed step and exit. A second Ctrl-C kills them.
interrupts=0
on_interrupt() {
  interrupts=$((interrupts + 1))
  if ((interrupts == 1)); then forward TERM; else forward KILL; fi
}
trap 'forward TERM' TERM
trap on_interrupt INT

for ((rank = 0; rank < num_processes; rank++)); do
  log=/dev/stdout
  ((rank > 0)) && log="$workdir/process_$rank.log"
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices_per_process" \
  ILSGAN_COORDINATOR="127.0.0.1:$port" \
  ILSGAN_NUM_PROCESSES="$num_processes" \
  ILSGAN_PROCESS_ID="$rank" \
    "$python" -m ilsgan_jax.main --mode=train --config="$config" --workdir="$workdir" "$@" \
    >"$log" 2>&1 &
  pids+=($!)
done

# Wait for every process (again after a forwarded signal interrupts `wait`); fail if any failed.
status=0
for pid in "${pids[@]}"; do
  while true; do
    code=0
    wait "$pid" || code=$?
    ((code == 0)) && break
    kill -0 "$pid" 2>/dev/null && continue  # `wait` was interrupted by a forwarded signal
    status=$code
    break
  done
done
exit "$status"
