#!/usr/bin/env bash
# Train on one machine with all of its devices (CPU cores, every local GPU, or a single-host TPU VM).
#
# Usage: launch/local.sh CONFIG WORKDIR [extra flags...]
#   launch/local.sh configs/ilsgan.py:dataset=cub,res=128 runs/cub128
#   launch/local.sh configs/ilsgan.py:dataset=synthetic,runlocal runs/demo --config.train.batch_size=8
#
# Re-running with the same WORKDIR resumes from its latest checkpoint.
# Environment: PYTHON (default: .venv/bin/python if present, else python3).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '4,6p' "$0" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
default_python=python3
[[ -x "$repo_root/.venv/bin/python" ]] && default_python="$repo_root/.venv/bin/python"
python=${PYTHON:-$default_python}

# exec: SIGTERM/SIGINT reach the trainer directly, which saves a checkpoint and exits.
exec "$python" -m ilsgan_jax.main --mode=train --config="$config" --workdir="$workdir" "$@"
