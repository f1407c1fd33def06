#!/usr/bin/env bash
# ILS on vs ILS off on the synthetic data's structured background (large sharp-edged structures
# that a layered GAN can leak into the foreground): the quick start (`--mode=demo`, runlocal) once
# per seed and arm, one after the other, each in its own workdir RUNS_DIR/{on,off}_seed$S (one
# with a report.json is done and skipped); then the layer figure of the first seed
# (RUNS_DIR/ils_on_vs_off.png: composite, foreground, background and mask rows of both arms on
# the same latents) and the markdown table of every report (launch/ablation_table.py).
#
#   bash launch/ils_ablation.sh RUNS_DIR "SEEDS" [extra flags...]
#   e.g. KIMG=60 bash launch/ils_ablation.sh runs/ablation "0 1 2"
#
# Equal kimg: with KIMG set, every run trains exactly KIMG kimg (--config.train.total_kimg=KIMG,
# no time budget); without it every run gets the config's time budget (the demo's, capped at its
# total_kimg) and the table's kimg column says what each reached. Extra flags go to every run
# and to the figure. Logs: RUNS_DIR/{on,off}_seed$S.log. Exits non-zero if a step failed.
set -euo pipefail
runs_dir=${1:?runs directory}
seeds=${2:?seeds, e.g. "0 1 2"}
shift 2
python=${PYTHON:-python3}
config=configs/ilsgan.py:dataset=synthetic,runlocal
flags=(--config.data.synthetic_background=structured)
if [[ -n "${KIMG:-}" ]]; then
  flags+=(--config.train.total_kimg="$KIMG" --config.train.time_budget_minutes=0)
fi
mkdir -p "$runs_dir"
status=0
for seed in $seeds; do
  for arm in on off; do
    workdir="$runs_dir/${arm}_seed$seed"
    if [[ -f "$workdir/report.json" ]]; then
      echo "ILS $arm, seed $seed: done before ($workdir/report.json)"
      continue
    fi
    variant=$config
    [[ $arm == off ]] && variant="$config,ils=0"
    echo "ILS $arm, seed $seed: $(date -u +%H:%M:%S) start (log: $workdir.log)"
    "$python" -m ilsgan_jax.main --mode=demo --config="$variant" "${flags[@]}" \
      --config.seed="$seed" --workdir="$workdir" "$@" > "$workdir.log" 2>&1 \
      || { echo "ILS $arm, seed $seed: FAILED (see $workdir.log)"; status=1; }
    echo "ILS $arm, seed $seed: $(date -u +%H:%M:%S) end"
  done
done
read -r first _ <<< "$seeds"
figure="$runs_dir/ils_on_vs_off.png"
"$python" -m ilsgan_jax.main --mode=layer_figure --config="$config" "${flags[@]}" \
  --config.seed="$first" --workdir="$runs_dir" --output="$figure" \
  --runs="ILS on=$runs_dir/on_seed$first,ILS off=$runs_dir/off_seed$first" "$@" \
  > "$runs_dir/figure.log" 2>&1 \
  && echo "figure (seed $first): $figure" \
  || { echo "figure: FAILED (see $runs_dir/figure.log)"; status=1; }
"$python" launch/ablation_table.py "$runs_dir" "$seeds"
exit $status
