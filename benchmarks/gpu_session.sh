#!/usr/bin/env bash
# The GPU sessions of issue 32. A task lent a device gets 15 minutes of it (starts, transfers and idle time
# included) and one command at most 10, so the work is split by the issue's priorities into two sessions:
#
# `run`, the full-resolution GPU best (first): the original 0.1 mm/px images on the device, the 512x512 first
# stage (isbi2015_full) and the second stage on 128 px patches at 0.15 mm/px (isbi2015_full_refine), 3 seeds each,
# side by side, then their Test1 cascades and the GPU best detector file. 94.9 MB of JPEGs do not fit one call's
# 64 MiB, so the data travels in three calls, the last one runs the session:
#   here, once:  bash benchmarks/gpu_prepare.sh      (.whl/, devdata/full/part1..3, devdata/isbi3)
#   call 1: "bash benchmarks/gpu_session.sh receive 1", carry [".whl", "devdata/full/part1"], timeout_s 120
#   call 2, at once (the machine stays warm 30 s): "bash benchmarks/gpu_session.sh receive 2",
#           carry [".whl", "devdata/full/part2"], timeout_s 60
#   call 3, at once: "bash benchmarks/gpu_session.sh run", carry [".whl", "devdata/full/part3"], timeout_s 600
# Every call carries the wheels and installs them into /tmp/site, which need not outlive a call (about 55 MB a
# call with a part and the working tree); devdata/isbi_full, ignored inside the checkout, stays on the warm machine.
# Each call merges its part into devdata/isbi_full (ignored, kept on the warm machine) and checks every file that
# has arrived against the sha256 manifest; `run` refuses to start unless all 900 files match.
#
# `deck`, the seed deck's sweep and speed (a later session, one call): the seed deck's own multirun
# (experiment=seed, -m trainer.max_epochs=20,75,100,150; 300 images, its own random 70/15/15 split) alone on the
# GPU, then isbi2015_seed's fit alone and benchmarks.throughput (issue 32's 60 s and 1,200 samples/s). Everything
# there trains at 256x256, so it reads the 1/3-resolution copy, which fits one call with the wheels:
#   "bash benchmarks/gpu_session.sh deck", carry [".whl", "devdata/isbi3"], timeout_s 600
#   (its figure here: python -m benchmarks.seed_deck <runs/deck> --root devdata/isbi3 --out seed_deck.png)
#
# Why two sessions: in pixels the trainings are, against one isbi2015_seed run (150 epochs of 128 images at
# 256x256), 4.0 for a 512x512 first stage, 1.9 for a 0.15 mm/px second stage (60 epochs of 19 patches of 128 px
# per image), 1.1 for 0.2 mm/px (96 px) and 3.8 for the deck's 345 epochs of 210 images. The 2026-12-04 session
# trained about 6.8 of these side by side in 250 s on an H200; the first plan (3 first stages, both second-stage
# arms, the deck: 24.7) would have needed about 900 s where a call leaves about 330.
# Dry runs on this CPU (every step, tiny, on the local data):
#   DRY=1 DRY_DATA=devdata/isbi_full bash benchmarks/gpu_session.sh run      (ARMS="r15 r20": both arms)
#   DRY=1 bash benchmarks/gpu_session.sh deck
#
# Rules, written before the runs (2026-12-05):
# 1. Second-stage resolution: 0.15 mm/px (isbi2015_full_refine), fixed in advance: the middle of the issue's
#    0.1-0.2 mm/px, every length in mm as validated at 0.4 mm/px. ARMS="r15 r20" also trains arm r20 (0.2 mm/px,
#    the same lengths in mm) and takes the arm with the lower mean validation MRE over its three seeds, each in a
#    cascade with the seed-42 first stage (split=val: the 22 images of data.seed=42, never trained on by any run
#    here); only the chosen arm's Test1 figures are then computed. It costs the other runs about 15 % of their
#    epochs and, side by side, about 82 GiB of GPU memory (below): not in the plan.
# 2. GPU best = the three first stages as one + the three second stages as one, built as one detector file (bash
#    benchmarks/build_detector.sh gpu_full, calibrated on the GPU on the same validation images) and scored by
#    evaluate.py on that file alone. Single-model rows: mean and SD over the 3 seeds.
# 3. Each training of `run` gets the time the call leaves (Lightning's max_time) and plans its epochs and its
#    cosine schedule to end within 90 % of it (callbacks.schedule_fits_time), so every run anneals to its end;
#    the epochs each reached are in the log and reported with its figures.
# 4. Speed switches (`deck`) are reported, not adopted, unless a short run shows equal validation accuracy.
#
# Memory (python -m benchmarks.activation_memory, on the CPU: the tensors saved for backward under bf16, x1.1 for
# the allocator + 1.2 GiB per process): a 512x512 first stage at batch 16 13.1 GiB, an r15 second stage (8 images
# x 19 patches of 128 px) 8.3, r20 (96 px) 5.2: the plan's six about
# 64 GiB, within an H100's 78; with arm r20, 80 GiB, which only an H200 holds (with less, r20 is left out).
# Results: $OUT/session.log and $OUT/runs.tgz (metrics.json, per_landmark.csv, predictions.csv in original
# pixels, config.yaml, logs, the sweep table and plot), rewritten after every phase.
set -u
MODE=${1:?usage: gpu_session.sh receive <part> | run | deck}
BUDGET=${BUDGET:-570}
[ -n "${DRY:-}" ] && BUDGET=${DRY_BUDGET:-1500}
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
OUT=${OUT:-/tmp/gpu_session_out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # less memory lost between processes
if [ -n "${DRY:-}" ]; then PY=${PYTHON:-.venv/bin/python}; else PY=python3; export PYTHONPATH=/tmp/site:$PWD; fi
FULL=devdata/isbi_full

install_wheels() {  # the packages the device's image lacks, into /tmp/site (on PYTHONPATH)
  if [ -z "${DRY:-}" ] && [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed"; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi
}
if [ "$MODE" = receive ]; then
  install_wheels
  $PY -m benchmarks.pack_isbi merge "devdata/full/part$2" $FULL; rc=$?
  echo "# receive $2: rc $rc in $(( $(date +%s) - T0 ))s"; [ $rc -eq 2 ] && exit 0; exit $rc
fi
install_wheels

R=${RUNS:-/tmp/gpu_session}; rm -rf "$R"; mkdir -p "$R"
if [ "$MODE" = run ] && [ -d devdata/full/part3 ]; then  # carried by this call (on this CPU: left by gpu_prepare.sh)
  $PY -m benchmarks.pack_isbi merge devdata/full/part3 $FULL || { echo "# the data is not complete: rerun from call 1"; exit 1; }
fi
if [ -n "${DRY:-}" ]; then
  DATA="data.source.root=${DRY_DATA:-../shared/data/isbi2015}"
  # two batches of one epoch each, the small U-Net: every command and config of the session, on 2 slow cores
  TRAIN_EXTRA="model=unet_small trainer=cpu trainer.max_epochs=1 data.batch_size=2 trainer.limit_train_batches=2 trainer.limit_val_batches=2 trainer.limit_test_batches=2 data.num_workers=0"
  DECK_EXTRA="model=unet_small trainer=cpu data.batch_size=2 trainer.limit_train_batches=1 trainer.limit_val_batches=1 trainer.limit_test_batches=2 data.num_workers=0"
  DECK_EPOCHS=1,2; TEST=val; EVAL_CAP=900
  # one centred, unturned patch per landmark (25 on the GPU): the same commands, 2 cores
  EVAL_EXTRA="device=cpu refine_shifts=[[0,0]] refine_views=[[0,1]]"; DET_EXTRA="device=cpu refine_shifts=[[0,0]] refine_views=[[0,1]]"
  TP_ARGS="--device cpu --sizes 64 --steps 1 --no-loader"; SEEDS=${SEEDS:-42}
  FIT_EXTRA="model=unet_small trainer=cpu trainer.max_epochs=1 trainer.limit_train_batches=1 trainer.limit_val_batches=1 trainer.limit_test_batches=1 data.num_workers=0"
else
  DATA="data.source.root=$FULL"
  TRAIN_EXTRA=""; DECK_EXTRA="trainer=gpu data.num_workers=8"; DECK_EPOCHS=20,75,100,150
  EVAL_EXTRA="device=cuda"; DET_EXTRA=""; TEST=test; EVAL_CAP=120; TP_ARGS="--compile --no-loader --sizes 256"; SEEDS="42 1 2"
  FIT_EXTRA=""
fi
# the deck reads the 1/3-resolution copy (0.3 mm/px, annotations mapped exactly: millimetres unchanged)
[ "$MODE" = deck ] && DATA="data.source.root=${DRY_DATA3:-devdata/isbi3} data.source.spacing=0.3"
ROOT=${DATA#data.source.root=}; ROOT=${ROOT%% *}
$PY -c "import torch, lightning, hydra, albumentations, landmark_exp; print('torch', torch.__version__, \
'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())" || exit 1

summary() {  # run folder -> one line from its metrics.json, and the epochs its fit ran
  $PY - "$1" <<'EOF' 2>/dev/null || echo "no metrics.json"
import json, re, sys
from pathlib import Path
m = json.load(open(sys.argv[1] + "/metrics.json"))
log = Path(sys.argv[1], "train.log")
stop = re.findall(r"Trainer.fit` stopped: (.*)", log.read_text()) if log.is_file() else []
print(f"{m.get('split')}: mre {m['mre']:.4f} sd {m['sd']:.4f} sdr "
      + " / ".join(f"{m[k]:.2f}" for k in ("sdr_2", "sdr_2.5", "sdr_3", "sdr_4"))
      + (f" | best val {m['best_val_mre']:.4f}" if m.get("best_val_mre") is not None else "")
      + (f" | fit stopped: {stop[-1]}" if stop else ""))
EOF
}
pack() {  # the results so far -> $OUT/runs.tgz (at most 8 files come back, so one archive)
  (cd "$R" && find . \( -name metrics.json -o -name per_landmark.csv -o -name predictions.csv -o -name config.yaml \
     -o -name run_info.json -o -name '*.log' -o -name 'sweep_summary.*' -o -name 'sweep_*.png' -o -name metrics.csv \
     -o -name '*.txt' \) -not -path '*/tensorboard/*' -not -path '*/.hydra/*' -print0 |
     tar czf "$OUT/runs.tgz.tmp" --null -T - --transform 's,^\./,runs/,') && mv "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
}
hms() { printf "00:%02d:%02d:%02d" $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60)); }  # Lightning max_time
train() {  # name seconds overrides...
  local name=$1 secs=$2; shift 2
  local t=$(date +%s)
  # shellcheck disable=SC2086
  timeout -k 15 "$secs" $PY train.py "$@" $DATA data.seed=42 $TRAIN_EXTRA "+trainer.max_time=$(hms $((secs - 40)))" \
    paths.log_dir=$R hydra.run.dir=$R/$name logger=csv callbacks.model_checkpoint.save_last=false > "$R/$name.log" 2>&1
  echo "== train $name rc=$? wall=$(( $(date +%s) - t ))s $(summary "$R/$name")"
}
evaluate() {  # name seconds overrides...
  local name=$1 secs=$2; shift 2
  local t=$(date +%s)
  # shellcheck disable=SC2086
  timeout -k 15 "$secs" $PY evaluate.py "$@" data_root=$ROOT $EVAL_EXTRA hydra.run.dir=$R/$name overlays=0 > "$R/$name.log" 2>&1
  echo "== eval $name rc=$? wall=$(( $(date +%s) - t ))s $(summary "$R/$name")"
}
fit_seconds() {  # train.log -> the seconds from the trainer's set-up line to "`Trainer.fit` stopped"
  $PY - "$1" <<'EOF' 2>/dev/null || echo "fit time unknown"
import re, sys
from datetime import datetime
stamps = {}
for line in open(sys.argv[1]):
    m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\]", line)
    if m and ("GPU available" in line or "Trainer.fit` stopped" in line):
        stamps.setdefault("stop" if "stopped" in line else "start", datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f"))
print(f"Trainer.fit {(stamps['stop'] - stamps['start']).total_seconds():.1f} s")
EOF
}

if [ "$MODE" = deck ]; then
  echo "# the seed deck's sweep, alone on the GPU, $(left)s left"
  t=$(date +%s)
  # shellcheck disable=SC2086
  timeout -k 15 $(( $(left) - 200 )) $PY train.py -m experiment=seed data=isbi2015 $DATA $DECK_EXTRA logger=csv \
    trainer.max_epochs=$DECK_EPOCHS paths.log_dir=$R hydra.sweep.dir=$R/deck > "$R/deck.log" 2>&1
  echo "== seed deck sweep rc=$? wall=$(( $(date +%s) - t ))s"; cat "$R/deck/sweep_summary.csv" 2>/dev/null; pack
  echo "# speed, alone on the GPU, $(left)s left"
  t=$(date +%s)
  # shellcheck disable=SC2086
  timeout -k 10 $(min 130 $(( $(left) - 50 ))) $PY train.py experiment=isbi2015_seed $DATA $FIT_EXTRA logger=csv \
    paths.log_dir=$R hydra.run.dir=$R/seed_fit callbacks.model_checkpoint.save_last=false > "$R/seed_fit.log" 2>&1
  echo "== isbi2015_seed alone rc=$? wall=$(( $(date +%s) - t ))s, $(fit_seconds "$R/seed_fit/train.log") $(summary "$R/seed_fit")"
  pack
  if [ "$(left)" -gt 25 ]; then
    # shellcheck disable=SC2086
    timeout -k 5 $(( $(left) - 10 )) $PY -m benchmarks.throughput $TP_ARGS --batch 32 > "$R/throughput_b32.txt" 2>&1
    echo "== throughput batch 32 rc=$?"; grep -E "samples/s" "$R/throughput_b32.txt"
  fi
  pack; echo "# done in $(( $(date +%s) - T0 ))s"; exit 0
fi

ck() { echo "$R/$1/checkpoints/best.ckpt"; }
R20="data.input_size=[1200,968] data.patch.size=[96,96] data.patch.jitter=24 heatmap.sigma=5.0 heatmap.window=8 \
data.patch.shifts=[[0,0],[-16,0],[16,0],[0,-16],[0,16]]"

# phase 1: the stages side by side, each planning its epochs to its time (rule 3; leaves >= 170 s for phase 2)
GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
ARMS=${ARMS:-r15}
if [ "$ARMS" != r15 ] && [ -z "${DRY:-}" ] && [ "${GPU_MIB:-0}" -lt 120000 ]; then
  ARMS=r15; echo "# arm r20 left out (rule 1): GPU memory ${GPU_MIB:-unknown} MiB"
fi
secs=$(( $(left) - 170 ))
echo "# phase 1: training, ${secs}s at most each, $(left)s left, second-stage arms: $ARMS"
pids=()  # a bare `wait` would also wait for the tee above, forever
for s in $SEEDS; do train "full_s$s" "$secs" experiment=isbi2015_full seed=$s & pids+=($!); done
for s in $SEEDS; do train "r15_s$s" "$secs" experiment=isbi2015_full_refine seed=$s & pids+=($!); done
for s in $SEEDS; do [ "$ARMS" = r15 ] && break
  # shellcheck disable=SC2086
  train "r20_s$s" "$secs" experiment=isbi2015_full_refine seed=$s $R20 & pids+=($!); done
wait "${pids[@]}"; pack
$PY -m benchmarks.seeds_table $(for s in $SEEDS; do printf '%s ' "$R/full_s$s"; done)

# phase 2: (with two arms, rule 1 on validation,) then Test1: the three cascades and rule 2's detector
echo "# phase 2: evaluation, $(left)s left"
ARM=r15
if [ "$ARMS" != r15 ]; then
  secs=$(min $EVAL_CAP $(( ($(left) - 10) / 2 )))
  pids=()
  for arm in $ARMS; do for s in $SEEDS; do
    evaluate "val_${arm}_s$s" "$secs" ckpt_path="$(ck full_s42)" refine_ckpt="$(ck ${arm}_s$s)" split=val & pids+=($!)
  done; done
  wait "${pids[@]}"
  ARM=$($PY - "$R" $SEEDS <<'EOF'
import json, sys
from pathlib import Path
R, seeds = Path(sys.argv[1]), sys.argv[2:]
val = {}
for arm in ("r15", "r20"):
    try:
        val[arm] = [json.loads((R / f"val_{arm}_s{s}" / "metrics.json").read_text())["mre"] for s in seeds]
    except (OSError, KeyError):
        continue
    print(f"{arm}: validation MRE " + " / ".join(f"{v:.4f}" for v in val[arm])
          + f", mean {sum(val[arm]) / len(seeds):.4f}", file=sys.stderr)
print(min(val, key=lambda k: sum(val[k])) if val else "r15")
EOF
  )
  echo "rule 1, chosen on validation: $ARM"
fi
secs=$(min $((EVAL_CAP + 30)) $(( $(left) - 10 )))
pids=()
for s in $SEEDS; do
  evaluate "test_full_s${s}_${ARM}_s$s" "$secs" ckpt_path="$(ck full_s$s)" refine_ckpt="$(ck ${ARM}_s$s)" split=$TEST &
  pids+=($!)
done
# rule 2 through the documented command: build_detector.sh gpu_full finds every stage trained (linked here)
for s in $SEEDS; do ln -sfn "full_s$s" "$R/first_s$s"; ln -sfn "${ARM}_s$s" "$R/refine_s$s"; done
( t=$(date +%s); n=$(ls "$R"/first_s*/checkpoints/best.ckpt "$R"/refine_s*/checkpoints/best.ckpt 2>/dev/null | wc -l)
  if [ "$n" -ne $(( 2 * $(wc -w <<< "$SEEDS") )) ]; then echo "== detector not built: $n stages trained"; exit 0; fi
  REFINE_OVERRIDES=""; [ "$ARM" = r20 ] && REFINE_OVERRIDES=$R20  # only named: every stage is trained already
  timeout -k 15 "$secs" env PYTHON="$PY" SEEDS="$SEEDS" DETECTOR_ARGS="$DET_EXTRA" REFINE_OVERRIDES="$REFINE_OVERRIDES" \
    bash benchmarks/build_detector.sh gpu_full "$ROOT" "$R" > "$R/detector.log" 2>&1
  echo "== detector (bash benchmarks/build_detector.sh gpu_full) rc=$? wall=$(( $(date +%s) - t ))s"
  evaluate test_gpu_full $(( secs - ($(date +%s) - t) )) ckpt_path=$R/gpu_full.pt split=$TEST ) & pids+=($!)
wait "${pids[@]}"; rm -f "$R/gpu_full.pt"; pack
$PY -m benchmarks.seeds_table $(for s in $SEEDS; do printf '%s ' "$R/test_full_s${s}_${ARM}_s$s"; done)
echo "# done in $(( $(date +%s) - T0 ))s"
