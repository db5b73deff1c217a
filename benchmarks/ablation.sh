#!/usr/bin/env bash
# One-change-at-a-time ablation on the validation split (never Test1): each variant is a training run
# with eval_split=val, so metrics.json holds validation metrics of its best checkpoint; the table is
# rebuilt from the run directories by `python -m landmark_exp.sweep`.
# Usage: bash benchmarks/ablation.sh <out dir> "<name>:<overrides>" ...   (common overrides in $COMMON)
set -u
R=$1; shift
PY=${PYTHON:-python}
for spec in "$@"; do
  name=${spec%%:*}; s=$(date +%s)
  # shellcheck disable=SC2086
  $PY train.py ${COMMON:-} ${spec#*:} eval_split=val hydra.run.dir=$R/$name > "$R.$name.log" 2>&1
  echo "== $name rc=$? $(( $(date +%s) - s ))s"
done
$PY -m landmark_exp.sweep "$R"
