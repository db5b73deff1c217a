#!/usr/bin/env bash
# The CPU configuration's headline and ablation runs on a 2-core machine (benchmarks/RESULTS.md, "CPU configuration"):
# experiment=isbi2015_cpu trained and tested with further seeds, then one-change-at-a-time variants scored on
# the validation split only (eval_split=val; Test1 never used to choose).
# Usage: bash benchmarks/cpu_runs.sh [data root] [out dir] [seeds...]
set -u
D=${1:-../shared/data/isbi2015}; R=${2:-outputs/cpu_runs}; shift 2 || true
SEEDS=${*:-1 2}
PY=${PYTHON:-python}
mkdir -p "$R"
for s in $SEEDS; do
  t=$(date +%s)
  $PY train.py experiment=isbi2015_cpu data.source.root=$D seed=$s logger=csv hydra.run.dir=$R/seed$s > "$R/seed$s.log" 2>&1
  echo "== seed $s rc=$? $(( $(date +%s) - t ))s"
done
COMMON="experiment=isbi2015_cpu data.source.root=$D logger=csv" PYTHON=$PY bash benchmarks/ablation.sh "$R/ablation" \
  "no_augmentation:data/augment=none" "mse_loss:loss=mse" "sigma3:heatmap.sigma=3" "no_scheduler:scheduler=none"
