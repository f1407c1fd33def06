#!/usr/bin/env bash
# The quick start (`--mode=demo`, runlocal on the synthetic data) once per seed, one after the
# other, each in its own workdir; prints every seed's report.json at the end.
#
#   bash launch/seed_sweep.sh RUNS_DIR "0 1 2 3 4" [extra flags...]
#   e.g. bash launch/seed_sweep.sh runs/sweep "0 1 2 3 4" --config.model.initial_mask_coverage=0.3
set -euo pipefail
runs_dir=${1:?runs directory}
seeds=${2:?seeds, e.g. "0 1 2 3 4"}
shift 2
python=${PYTHON:-python3}
mkdir -p "$runs_dir"
for seed in $seeds; do
  workdir="$runs_dir/seed$seed"
  if [[ -f "$workdir/report.json" ]]; then
    echo "seed $seed: done before ($workdir/report.json)"
    continue
  fi
  echo "seed $seed: $(date -u +%H:%M:%S) start"
  "$python" -m ilsgan_jax.main --mode=demo --config=configs/ilsgan.py:dataset=synthetic,runlocal \
    --config.seed="$seed" --workdir="$workdir" "$@" > "$runs_dir/seed$seed.log" 2>&1 \
    || echo "seed $seed: FAILED (see $runs_dir/seed$seed.log)"
  echo "seed $seed: $(date -u +%H:%M:%S) end"
done
for seed in $seeds; do
  echo "== seed $seed"; cat "$runs_dir/seed$seed/report.json" 2>/dev/null || echo "(no report)"
done
