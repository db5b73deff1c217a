#!/usr/bin/env bash
# The CPU configuration as an ensemble of 3 seeds (benchmarks/RESULTS.md, "Ensemble"): chosen on validation,
# then scored once on Test1.
#  1. validation: two more seeds trained with the split of data seed 42 (so no member saw the others'
#     validation images), ensembled with the seed-42 run, scored on that validation split;
#  2. Test1: the three headline runs (seeds 42, 1, 2) ensembled.
# Usage: bash benchmarks/cpu_ensemble.sh [data root] [out dir] <seed-42 run> <seed-1 run> <seed-2 run>
set -u
D=${1:-../shared/data/isbi2015}; R=${2:-outputs/cpu192}; shift 2
PY=${PYTHON:-python}
S42=$1; S1=$2; S2=$3
for s in 1 2; do
  [ -f "$R/val_s${s}_d42/checkpoints/best.ckpt" ] && continue
  t=$(date +%s)
  $PY train.py experiment=isbi2015_cpu data.source.root=$D seed=$s data.seed=42 eval_split=val logger=csv \
    hydra.run.dir=$R/val_s${s}_d42 > "$R/val_s${s}_d42.log" 2>&1
  echo "== validation member seed $s rc=$? $(( $(date +%s) - t ))s"
done
ck=checkpoints/best.ckpt
$PY evaluate.py "ckpt_path=[$S42/$ck,$R/val_s1_d42/$ck,$R/val_s2_d42/$ck]" split=val hydra.run.dir=$R/ensemble_val > "$R/ensemble_val.log" 2>&1
echo "== ensemble on validation rc=$?"
$PY evaluate.py "ckpt_path=[$S42/$ck,$S1/$ck,$S2/$ck]" hydra.run.dir=$R/ensemble_test1 > "$R/ensemble_test1.log" 2>&1
echo "== ensemble on Test1 rc=$?"
