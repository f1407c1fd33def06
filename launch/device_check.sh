#!/usr/bin/env bash
# One check for a machine with an accelerator (one GPU or a TPU VM; about 10 minutes): prints the
# devices; times the train step (launch/benchmark.py) at paper widths 64 px in float32 and
# bfloat16 and at the runlocal widths 32 px; trains ILSGAN at paper widths 64 px on the synthetic
# data for 3 minutes, exports 512 pairs and trains the segmenter for 300 steps (--mode=demo);
# writes OUTDIR/device_check.json and prints a summary (launch/device_check_report.py).
# Without an accelerator it runs a reduced size and says so: runlocal widths at 32 px, a short
# benchmark, 1 minute of training, 64 pairs, 20 segmenter steps (7.3 minutes on 2 CPU cores
# shared with other jobs: too long for CI, where only its dry run is tested).
#
# Usage: launch/device_check.sh [--dry-run] [OUTDIR]     (OUTDIR default: /tmp/device_check)
#   --dry-run prints the commands without running them.
# OUTDIR must be new, empty or an earlier check's (its results are replaced).
# Environment: PYTHON (default: .venv/bin/python if present, else python3);
#   DEVICE_CHECK_PLATFORM=cpu|gpu|tpu skips the detection (jax.default_backend()).
set -euo pipefail

dry_run=0
if [[ ${1:-} == --dry-run ]]; then
  dry_run=1
  shift
fi
if [[ $# -gt 1 || ${1:-} == -* ]]; then
  sed -n '/^# Usage:/,/^#   --dry-run/p' "$0" >&2
  exit 2
fi
out=${1:-/tmp/device_check}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
default_python=python3
[[ -x .venv/bin/python ]] && default_python=.venv/bin/python
python=${PYTHON:-$default_python}

platform=${DEVICE_CHECK_PLATFORM:-}
if [[ -z $platform ]]; then
  platform=$("$python" -c 'import jax; print(jax.default_backend())' 2>/dev/null) || true
  platform=${platform##*$'\n'}  # the last line
fi
if [[ -z $platform ]]; then
  echo "could not start JAX with $python (set PYTHON)" >&2
  exit 1
fi
reduced=0
[[ $platform == cpu ]] && reduced=1

if [[ $dry_run == 0 ]]; then
  if [[ -d $out && -n $(ls -A "$out") && ! -f $out/platform.json ]]; then
    echo "$out exists and holds no earlier device check; choose a new OUTDIR" >&2
    exit 2
  fi
  rm -rf -- "$out/demo" "$out"/benchmark_*.json "$out"/*.log "$out/steps.tsv"
  mkdir -p "$out"
  "$python" -c '
import json, sys
import jax
info = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "reduced": sys.argv[2] == "1"}
json.dump(info, open(sys.argv[1], "w"), indent=2)
print("backend:", info["backend"])
print("devices:", *info["devices"], sep="\n  ")
' "$out/platform.json" "$reduced" 2>/dev/null
fi
if [[ $reduced == 1 ]]; then
  echo "No accelerator (backend cpu): REDUCED run, runlocal widths at 32 px, 1 minute of training."
fi

failed=0
# step NAME COMMAND...: prints the command; runs it with its output in OUTDIR/NAME.log and its
# exit status and seconds in OUTDIR/steps.tsv; a failure is reported and the next step runs.
step() {
  local name=$1
  shift
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  [[ $dry_run == 1 ]] && return 0
  local start=$SECONDS status=0
  "$@" >"$out/$name.log" 2>&1 || status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >>"$out/steps.tsv"
  if [[ $status != 0 ]]; then
    failed=1
    echo "  $name FAILED (exit $status); last lines of $out/$name.log:" >&2
    tail -n 20 "$out/$name.log" >&2
  else
    echo "  $name: $((SECONDS - start)) s"
  fi
}

main=("$python" -m ilsgan_jax.main --mode=demo --workdir="$out/demo")
if [[ $reduced == 1 ]]; then
  step benchmark_runlocal "$python" launch/benchmark.py --widths=runlocal --resolutions=32 \
    --dtypes=float32 --steps=4 --batch_size=32 --output="$out/benchmark_runlocal.json"
  step demo "${main[@]}" --config=configs/ilsgan.py:dataset=synthetic,runlocal \
    --config.train.time_budget_minutes=1 --config.export.num_pairs=64 \
    --config.export.shard_size=64 --config.segmenter.num_steps=20 \
    --config.segmenter.eval_every_steps=10 --config.segmenter.lr_decay_steps=20
else
  step benchmark_paper "$python" launch/benchmark.py --widths=paper --resolutions=64 \
    --dtypes=float32,bfloat16 --steps=16 --batch_size=32 --output="$out/benchmark_paper.json"
  step benchmark_runlocal "$python" launch/benchmark.py --widths=runlocal --resolutions=32 \
    --dtypes=float32 --steps=16 --batch_size=32 --output="$out/benchmark_runlocal.json"
  # A synthetic training set of 5000 images (the paper config: 20000) renders in under a minute.
  step demo "${main[@]}" --config=configs/ilsgan.py:dataset=synthetic,res=64 \
    --config.train.time_budget_minutes=3 --config.data.synthetic_train_size=5000 \
    --config.data.synthetic_test_size=500 --config.export.num_pairs=512 \
    --config.export.shard_size=256 --config.segmenter.num_steps=300 \
    --config.segmenter.eval_every_steps=100 --config.segmenter.lr_decay_steps=200
fi

[[ $dry_run == 1 ]] && exit 0
"$python" launch/device_check_report.py "$out" || failed=1
exit "$failed"
