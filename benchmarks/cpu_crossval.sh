#!/usr/bin/env bash
# K-fold cross-validation of the CPU configuration inside 001-150 (benchmarks/RESULTS.md "Cross-validation"):
# trains the K fold models (each validated on its own fold, Test1 never used), then re-decodes every fold
# checkpoint with other decoding settings, and pools each setting over all folds with landmark_exp.crossval.
# Usage: bash benchmarks/cpu_crossval.sh [data root] [out dir] [K]      (SKIP_TRAIN=1: fold runs already there)
#        "<name>:<evaluate overrides>" variants in $VARIANTS (default below), one per line: decoding variants,
#        re-decoding the fold checkpoints; "<name>:<train overrides>" in $TRAIN_VARIANTS (default: none), one
#        per line: training-time variants, K more fold runs each, e.g.
#        TRAIN_VARIANTS="sigma1.0:heatmap.sigma=1.0
#        awing:loss=awing" SKIP_TRAIN=1 VARIANTS=" " bash benchmarks/cpu_crossval.sh
set -u
D=${1:-../shared/data/isbi2015}; R=${2:-outputs/cv5}; K=${3:-5}
PY=${PYTHON:-python}
FOLDS=$(seq -s, 0 $((K - 1)))
mkdir -p "$R"
if [ -z "${SKIP_TRAIN:-}" ]; then
  t=$(date +%s)
  $PY train.py -m experiment=isbi2015_cpu data.source.root=$D data.folds=$K "data.fold=$FOLDS" eval_split=val \
    logger=csv hydra.sweep.dir=$R/isbi2015_cpu > "$R/isbi2015_cpu.log" 2>&1
  echo "== $K fold runs rc=$? $(( $(date +%s) - t ))s"
fi
while IFS= read -r spec; do
  [ -z "$spec" ] && continue
  name=${spec%%:*}; t=$(date +%s)
  # shellcheck disable=SC2086
  $PY train.py -m experiment=isbi2015_cpu data.source.root=$D data.folds=$K "data.fold=$FOLDS" eval_split=val \
    ${spec#*:} logger=csv hydra.sweep.dir=$R/$name > "$R/$name.log" 2>&1
  echo "== $name: $K fold runs rc=$? $(( $(date +%s) - t ))s"
done <<< "${TRAIN_VARIANTS:-}"
VARIANTS=${VARIANTS:-"lsq_5x5:heatmap.decoder=lsq heatmap.window=2
lsq_7x7:heatmap.decoder=lsq heatmap.window=3
quadratic_3x3:heatmap.decoder=quadratic heatmap.window=1
argmax:heatmap.decoder=argmax
no_prior:heatmap.prior_sigma=0
tta_4shifts:tta_shifts=[[0,0],[0,4],[4,0],[4,4]]"}
while IFS= read -r spec; do
  [ -z "${spec// }" ] && continue
  name=${spec%%:*}; t=$(date +%s)
  for f in $(seq 0 $((K - 1))); do
    # shellcheck disable=SC2086
    $PY evaluate.py ckpt_path=$R/isbi2015_cpu/$f/checkpoints/best.ckpt split=val overlays=0 ${spec#*:} \
      hydra.run.dir=$R/$name/$f > "$R/$name.$f.log" 2>&1 || echo "== $name fold $f failed (see $R/$name.$f.log)"
  done
  echo "== $name $(( $(date +%s) - t ))s"
done <<< "$VARIANTS"
$PY -m landmark_exp.crossval "$R/isbi2015_cpu" $(while IFS= read -r spec; do [ -n "${spec// }" ] && echo "$R/${spec%%:*}"; done \
  <<< "${TRAIN_VARIANTS:-}
$VARIANTS")
