#!/bin/bash
# Rebuilds the detector shipped in landmark_exp/pretrained/ from ISBI 2015 images 001-150, on CPU:
#   bash benchmarks/build_pretrained.sh <isbi2015 folder> [work folder, default outputs/pretrained]
# About 12 + 17 minutes of training on 2 cores when alone, then the detector (shape model, calibration on the
# seed's 22 validation images, float16 weights) and its checksum against the shipped file.
# Bit for bit: each training runs on one thread (OMP_NUM_THREADS=1) with fixed seeds and per-sample augmentation
# seeds, so float sums happen in one order; that reproduces the weights on the same CPU type and library
# versions (torch 2.14.1), not across instruction sets (AVX2 vs AVX-512 kernels round differently).
set -euo pipefail
ROOT=${1:?usage: build_pretrained.sh <isbi2015 folder> [work folder]}
WORK=${2:-outputs/pretrained}
PY=${PYTHON:-python}
export OMP_NUM_THREADS=1
$PY train.py experiment=isbi2015_robust data.source.root="$ROOT" seed=42 logger=none hydra.run.dir="$WORK/first"
$PY train.py experiment=isbi2015_robust_refine data.source.root="$ROOT" seed=42 logger=none hydra.run.dir="$WORK/refine"
$PY -m landmark_exp.detector first="$WORK/first/checkpoints/best.ckpt" refine="$WORK/refine/checkpoints/best.ckpt" \
    'refine_shifts=[[0,0]]' 'refine_views=[[0,1]]' half=true name=isbi2015_robust data_root="$ROOT" output="$WORK/isbi2015_robust.pt" \
    overwrite=true hydra.run.dir="$WORK/detector"
sha256sum "$WORK/isbi2015_robust.pt" landmark_exp/pretrained/isbi2015_robust.pt
