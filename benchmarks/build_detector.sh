#!/bin/bash
# One headline configuration from the ISBI 2015 data to one detector file (docs/results.md, "Headline"):
#   bash benchmarks/build_detector.sh <configuration> <isbi2015 folder> [work folder, default outputs/detectors/<configuration>]
# then score it:  python evaluate.py ckpt_path=<work>/<configuration>.pt data_root=<isbi2015 folder>
#
#   shipped   isbi2015_robust + isbi2015_robust_refine, seed 42, one centred patch, float16: the detector in
#             landmark_exp/pretrained/ (its checksum is compared at the end). About 12 + 17 min on 2 CPU cores.
#   cpu       isbi2015_cpu + isbi2015_cpu_refine, seed 42. About 12 + 17 min on 2 CPU cores.
#   cpu_best  3 seeds of each stage, each three as one ensemble. About 80 min on 2 CPU cores.
#   seed      isbi2015_seed, seed 42, first stage only (GPU).
#   gpu_best  isbi2015_best x 3 seeds + isbi2015_refine x 2 seeds (GPU, the 1/3-resolution recipe).
#   gpu_full  isbi2015_full x 3 seeds + isbi2015_full_refine x 3 seeds (GPU, full resolution; issue 32). Its second
#             stage at 0.2 mm/px instead of 0.15: REFINE_OVERRIDES="<the overrides of arm r20 in gpu_session.sh>".
# The GPU configurations calibrate the detector on the GPU (device=cuda); DETECTOR_ARGS="k=v ..." adds settings
# to the detector command (benchmarks/gpu_session.sh's dry run: device=cpu and one patch view); SEEDS="42" builds
# from those seeds only, for both stages.
# Ensemble members share the validation split of seed 42 (data.seed=42), the split the detector's reliability is
# calibrated on, so no member trained on a calibration image. A stage whose best.ckpt exists is not trained again.
# Bit for bit: each training runs on one thread (OMP_NUM_THREADS=1) with fixed seeds and per-sample augmentation
# seeds, so float sums happen in one order; that reproduces the weights on the same CPU type and library
# versions (torch 2.14.1), not across instruction sets (AVX2 vs AVX-512 kernels round differently).
# JOBS=2 trains two at a time, one per core (the same weights; the cores are shared by two runs instead of one).
set -euo pipefail
CONF=${1:?usage: build_detector.sh <shipped|cpu|cpu_best|seed|gpu_best|gpu_full> <isbi2015 folder> [work folder]}
ROOT=${2:?usage: build_detector.sh <configuration> <isbi2015 folder> [work folder]}
WORK=${3:-outputs/detectors/$CONF}
PY=${PYTHON:-python}
JOBS=${JOBS:-1}
case $CONF in
  shipped)  FIRST=isbi2015_robust; REFINE=isbi2015_robust_refine; FIRST_SEEDS=42; REFINE_SEEDS=42
            EXTRA=("refine_shifts=[[0,0]]" "refine_views=[[0,1]]" half=true); NAME=isbi2015_robust ;;
  cpu)      FIRST=isbi2015_cpu; REFINE=isbi2015_cpu_refine; FIRST_SEEDS=42; REFINE_SEEDS=42; EXTRA=(); NAME=$CONF ;;
  cpu_best) FIRST=isbi2015_cpu; REFINE=isbi2015_cpu_refine; FIRST_SEEDS="42 1 2"; REFINE_SEEDS="42 1 2"
            EXTRA=(); NAME=$CONF ;;
  seed)     FIRST=isbi2015_seed; REFINE=; FIRST_SEEDS=42; REFINE_SEEDS=; EXTRA=(device=cuda); NAME=$CONF ;;
  gpu_best) FIRST=isbi2015_best; REFINE=isbi2015_refine; FIRST_SEEDS="42 1 2"; REFINE_SEEDS="42 1"
            EXTRA=(device=cuda); NAME=$CONF ;;
  gpu_full) FIRST=isbi2015_full; REFINE=isbi2015_full_refine; FIRST_SEEDS="42 1 2"; REFINE_SEEDS="42 1 2"
            EXTRA=(device=cuda); NAME=$CONF ;;
  *) echo "build_detector.sh: configuration '$CONF' is not one of shipped, cpu, cpu_best, seed, gpu_best, gpu_full" >&2; exit 1 ;;
esac
if [ -n "${SEEDS:-}" ]; then FIRST_SEEDS=$SEEDS; [ -n "$REFINE" ] && REFINE_SEEDS=$SEEDS; fi
export OMP_NUM_THREADS=1

train() {  # experiment, seed, folder, overrides...: one training unless its best checkpoint is there
  [ -f "$3/checkpoints/best.ckpt" ] && { echo "$3: trained already"; return; }
  $PY train.py experiment="$1" data.source.root="$ROOT" seed="$2" data.seed=42 logger=none hydra.run.dir="$3" "${@:4}"
}
members() {  # stage, seeds -> "[a,b,c]" of their checkpoints
  local out=()
  for s in $2; do out+=("$WORK/$1_s$s/checkpoints/best.ckpt"); done
  (IFS=,; echo "[${out[*]}]")
}
pids=()  # every training of both stages (they are independent), JOBS at a time; a failed one stops the build
for job in $(for s in $FIRST_SEEDS; do echo "$FIRST:$s:first_s$s"; done; for s in $REFINE_SEEDS; do echo "$REFINE:$s:refine_s$s"; done); do
  IFS=: read -r experiment seed folder <<< "$job"
  overrides=(); [[ $folder == refine_* ]] && read -ra overrides <<< "${REFINE_OVERRIDES:-}"
  train "$experiment" "$seed" "$WORK/$folder" "${overrides[@]}" & pids+=($!)
  if [ "${#pids[@]}" -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
ARGS=("first=$(members first "$FIRST_SEEDS")")
[ -n "$REFINE" ] && ARGS+=("refine=$(members refine "$REFINE_SEEDS")")
read -ra MORE <<< "${DETECTOR_ARGS:-}"
$PY -m landmark_exp.detector "${ARGS[@]}" "${EXTRA[@]}" "${MORE[@]}" name="$NAME" data_root="$ROOT" \
    output="$WORK/$NAME.pt" overwrite=true hydra.run.dir="$WORK/detector"
if [ "$CONF" = shipped ]; then sha256sum "$WORK/$NAME.pt" landmark_exp/pretrained/isbi2015_robust.pt; fi
