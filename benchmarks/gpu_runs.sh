#!/usr/bin/env bash
# Runs on the lent GPU machine (see benchmarks/RESULTS.md for the exact device call).
# Usage: [ENSEMBLE=test|val] bash benchmarks/gpu_runs.sh "<run name>:<overrides>" ...
# ENSEMBLE: also score the runs as one ensemble (ckpt_path=[...]) on that split.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p "$OUT/runs"
for spec in "$@"; do
  name=${spec%%:*}; overrides=${spec#*:}
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "${RUN_TIMEOUT:-280}" python3 train.py $overrides data.source.root=devdata/isbi3 data.source.spacing=0.3 \
      paths.log_dir=/tmp/outputs hydra.run.dir=/tmp/outputs/$name logger=csv > "/tmp/$name.log" 2>&1
  rc=$?
  echo "== $name rc=$rc wall=$(( $(date +%s) - start ))s"
  grep -E "^│ model|^│ mean-shape|val/mre" "/tmp/$name.log" | tail -3
  tail -5 "/tmp/$name.log" | grep -iE "error|Traceback" || true
  mkdir -p "$OUT/runs/$name"
  cp /tmp/outputs/$name/{metrics.json,per_landmark.csv,config.yaml} "/tmp/$name.log" "$OUT/runs/$name/" 2>/dev/null
  cp /tmp/outputs/$name/csv/metrics.csv "$OUT/runs/$name/train_log.csv" 2>/dev/null
done
if [ -n "${ENSEMBLE:-}" ] && [ $# -gt 1 ]; then  # the runs as one ensemble (mean heatmaps), on ENSEMBLE's split
  cks=$(for spec in "$@"; do printf '%s,' "/tmp/outputs/${spec%%:*}/checkpoints/best.ckpt"; done)
  timeout 120 python3 evaluate.py "ckpt_path=[${cks%,}]" split=$ENSEMBLE \
      hydra.run.dir=/tmp/outputs/ensemble overlays=0 trainer.accelerator=gpu > /tmp/ensemble.log 2>&1
  echo "== ensemble ($ENSEMBLE) rc=$?"; grep -E "^│ model" /tmp/ensemble.log | head -1
  mkdir -p "$OUT/runs/ensemble" && cp /tmp/outputs/ensemble/{metrics.json,per_landmark.csv} /tmp/ensemble.log "$OUT/runs/ensemble/" 2>/dev/null
fi
cd "$OUT" && tar czf runs.tgz runs && rm -rf runs
