#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice): create the VM, install, and run the same training
# command on every worker. JAX finds the other workers by itself (--distributed=on: jax.distributed
# auto-detection).
#
# Usage: launch/tpu_vm.sh create
#        launch/tpu_vm.sh install
#        launch/tpu_vm.sh train CONFIG WORKDIR [extra flags...]
#        launch/tpu_vm.sh delete
#   TPU_NAME=ilsgan ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 launch/tpu_vm.sh create
#   launch/tpu_vm.sh train configs/ilsgan.py:dataset=cub,res=128 gs://my-bucket/runs/cub128
#
# WORKDIR must be storage every worker sees (gs://...): checkpoints are written by all workers.
# Training runs in the foreground of `gcloud ... ssh`; use tmux/nohup on long runs if you prefer.
# Environment: TPU_NAME (ilsgan), ZONE (us-central2-b), ACCELERATOR_TYPE (v4-8),
#   RUNTIME_VERSION (tpu-ubuntu2204-base), PROJECT (gcloud default), SPOT (1: spot VM),
#   REMOTE_DIR (ilsgan_jax, relative to the remote home directory).
set -euo pipefail

tpu_name=${TPU_NAME:-ilsgan}
zone=${ZONE:-us-central2-b}
accelerator_type=${ACCELERATOR_TYPE:-v4-8}
runtime_version=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
remote_dir=${REMOTE_DIR:-ilsgan_jax}
project_flag=()
[[ -n "${PROJECT:-}" ]] && project_flag=(--project="$PROJECT")
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '5,10p' "$0" >&2; exit 2; }
on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" "${project_flag[@]}" \
    --worker=all --command="$1"
}

case "${1:-}" in
  create)
    spot_flag=()
    [[ "${SPOT:-0}" == 1 ]] && spot_flag=(--spot)
    gcloud compute tpus tpu-vm create "$tpu_name" --zone="$zone" "${project_flag[@]}" \
      --accelerator-type="$accelerator_type" --version="$runtime_version" "${spot_flag[@]}"
    ;;
  install)
    # Copy this checkout (without local runs and the venv) to every worker and install it there.
    archive=$(mktemp --suffix=.tar.gz)
    tar -C "$repo_root" --exclude=.venv --exclude=runs --exclude=.git -czf "$archive" .
    gcloud compute tpus tpu-vm scp "$archive" "$tpu_name":ilsgan_jax.tar.gz --zone="$zone" \
      "${project_flag[@]}" --worker=all
    rm -f "$archive"
    on_all_workers "mkdir -p $remote_dir && tar -C $remote_dir -xzf ilsgan_jax.tar.gz && \
      cd $remote_dir && python3 -m venv .venv && .venv/bin/pip install -q -U pip && \
      .venv/bin/pip install -q -e '.[gcs]' 'jax[tpu]'"
    ;;
  train)
    [[ $# -lt 3 ]] && usage
    config=$2
    workdir=$3
    shift 3
    extra=$(printf ' %q' "$@")
    on_all_workers "cd $remote_dir && .venv/bin/python -m ilsgan_jax.main --mode=train --distributed=on \
      --config=$(printf '%q' "$config") --workdir=$(printf '%q' "$workdir") \
      --config.model.compute_dtype=bfloat16$extra"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$tpu_name" --zone="$zone" "${project_flag[@]}" --quiet
    ;;
  *)
    usage
    ;;
esac
