#!/usr/bin/env bash
# Runs on the lent GPU machine: trains first stages and second stages *in parallel* on the one GPU,
# then scores every (first stage, second stage) pair on the validation split and on Test1.
# Usage: bash benchmarks/gpu_cascade.sh "<coarse name>:<overrides>" ... -- "<fine name>:<overrides>" ...
# Eval pairs: every coarse x every fine, refine_iterations 1 and 2, split val and test.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
DATA="data.source.root=devdata/isbi3 data.source.spacing=0.3"
R=/tmp/outputs; mkdir -p $R "$OUT/runs"
coarse=(); fine=(); side=coarse
for spec in "$@"; do
  if [ "$spec" = "--" ]; then side=fine; continue; fi
  if [ $side = coarse ]; then coarse+=("$spec"); else fine+=("$spec"); fi
done
train() {  # name overrides...
  local name=$1; shift
  local start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "${RUN_TIMEOUT:-400}" python3 train.py "$@" $DATA paths.log_dir=$R hydra.run.dir=$R/$name logger=csv \
      callbacks.model_checkpoint.save_last=false > $R/$name.log 2>&1
  echo "== train $name rc=$? wall=$(( $(date +%s) - start ))s"
}
for spec in "${coarse[@]}" "${fine[@]}"; do
  # shellcheck disable=SC2086
  train "${spec%%:*}" ${spec#*:} &
done
wait
for c in "${coarse[@]}"; do for f in "${fine[@]}"; do for it in 1 2; do for split in val test; do
  cn=${c%%:*}; fn=${f%%:*}; name=ev_${cn}_${fn}_it${it}_${split}
  timeout 120 python3 evaluate.py ckpt_path=$R/$cn/checkpoints/best.ckpt refine_ckpt=$R/$fn/checkpoints/best.ckpt \
      refine_iterations=$it split=$split $DATA hydra.run.dir=$R/$name overlays=0 trainer.accelerator=gpu > $R/$name.log 2>&1
  echo "== $name rc=$? $(python3 -c "import json;m=json.load(open('$R/$name/metrics.json'));print(f\"mre {m['mre']:.4f} median {m['median']:.4f} sdr2 {m['sdr_2']:.2f} | first stage {m['reference']['mre']:.4f}\")" 2>&1 | tail -1)"
done; done; done; done
for d in $R/*/; do
  n=$(basename $d); mkdir -p "$OUT/runs/$n"
  cp $d/{metrics.json,per_landmark.csv,config.yaml} $R/$n.log "$OUT/runs/$n/" 2>/dev/null
  cp $d/csv/metrics.csv "$OUT/runs/$n/train_log.csv" 2>/dev/null
done
cd "$OUT" && tar czf runs.tgz runs && rm -rf runs
