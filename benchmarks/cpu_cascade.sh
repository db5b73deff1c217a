#!/usr/bin/env bash
# The CPU configuration end to end on this machine: first stage, second stage, then the cascade scored
# on the validation split and on Test1. Wall times are printed per step and in total.
# Usage: bash benchmarks/cpu_cascade.sh [data root] [out dir] [extra overrides for both stages...]
set -eu
D=${1:-../shared/data/isbi2015}; R=${2:-outputs/cpu_cascade}; shift 2 || true
PY=${PYTHON:-python}
t0=$(date +%s)
step() { local s=$(date +%s); "$@"; echo "== $(date +%T) step took $(( $(date +%s) - s ))s: ${*:1:4}"; }
step $PY train.py experiment=isbi2015_cpu data.source.root=$D hydra.run.dir=$R/coarse "$@"
step $PY train.py experiment=isbi2015_cpu_refine data.source.root=$D hydra.run.dir=$R/fine "$@"
echo "== training total $(( $(date +%s) - t0 ))s"
for split in val test; do
  step $PY evaluate.py ckpt_path=$R/coarse/checkpoints/best.ckpt refine_ckpt=$R/fine/checkpoints/best.ckpt \
      split=$split hydra.run.dir=$R/cascade_$split
done
echo "== total $(( $(date +%s) - t0 ))s"
