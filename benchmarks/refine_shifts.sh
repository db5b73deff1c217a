#!/usr/bin/env bash
# Second-stage test-time shifts (`refine_shifts=`), chosen on cross-validation folds: for each fold, the
# first stage and the second stage trained with that fold held out (data.folds=5 data.fold=F eval_split=val)
# re-locate the fold's own validation images with each set of shifts below (working pixels of the second
# stage: 0.4 mm at 600x484; its patches are 48 px, trained with +/-12 px jitter). Prints one line per
# (fold, set), then the pooled MRE over the folds with paired per-image intervals (benchmarks/paired_change.py)
# and per landmark, the first stage alone included; writes metrics.json etc. under OUT/<fold>/<set>/.
# Usage: bash benchmarks/refine_shifts.sh OUT FOLD:FIRST_CKPT:SECOND_CKPT [FOLD:FIRST:SECOND ...]
set -eu
OUT=$1; shift
PY=${PYTHON:-python}
declare -A SETS=(
  [none]="null"
  [plus2]="[[0,0],[-2,0],[2,0],[0,-2],[0,2]]"
  [plus4]="[[0,0],[-4,0],[4,0],[0,-4],[0,4]]"
  [plus8]="[[0,0],[-8,0],[8,0],[0,-8],[0,8]]"
  [plus12]="[[0,0],[-12,0],[12,0],[0,-12],[0,12]]"
  [grid4]="[[-4,-4],[-4,0],[-4,4],[0,-4],[0,0],[0,4],[4,-4],[4,0],[4,4]]"
  [grid8]="[[-8,-8],[-8,0],[-8,8],[0,-8],[0,0],[0,8],[8,-8],[8,0],[8,8]]"
)
for spec in "$@"; do   # SUMMARY_ONLY=1: only the table, from what OUT holds
  [ -n "${SUMMARY_ONLY:-}" ] && break
  IFS=: read -r fold first second <<< "$spec"
  # the first stage alone on the same images: the predictions its training run scored (eval_split=val)
  own=$(dirname "$(dirname "$first")")/predictions.csv
  [ -f "$own" ] && mkdir -p "$OUT/fold$fold/first" && cp "$own" "$OUT/fold$fold/first/"
  for name in ${SETS_RUN:-none plus2 plus4 plus8 plus12 grid4 grid8}; do
    dir=$OUT/fold$fold/$name; mkdir -p "$OUT/fold$fold"
    s=$(date +%s)
    $PY evaluate.py ckpt_path="$first" refine_ckpt="$second" split=val overlays=0 \
        "refine_shifts=${SETS[$name]}" hydra.run.dir="$dir" > "$dir.log" 2>&1 || { echo "failed: $dir.log"; exit 1; }
    $PY - "$dir" "$fold" "$name" "$(( $(date +%s) - s ))" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1] + "/metrics.json"))
print(f"fold {sys.argv[2]} {sys.argv[3]:6s} MRE {m['mre']:.4f} median {m['median']:.4f} SDR@2 {m['sdr_2']:.2f} ({sys.argv[4]} s)")
EOF
  done
done
PYTHONPATH=benchmarks${PYTHONPATH:+:$PYTHONPATH} $PY - "$OUT" <<'EOF'
import glob, sys
import numpy as np
import pandas as pd
from paired_change import line, per_image
ORDER = ["first", "none", "plus2", "plus4", "plus8", "plus12", "grid4", "grid8"]
runs = {}  # (set, fold) -> run dir
for f in sorted(glob.glob(sys.argv[1] + "/fold*/*/predictions.csv")):
    fold, name = f.split("/")[-3:-1]
    runs[name, fold] = f.rsplit("/", 1)[0]
folds = sorted({fold for _, fold in runs})
print("\nset     pooled MRE  median   SDR@2   per fold (change against none)       per-image change against none")
per_landmark = {}
for name in sorted({n for n, _ in runs}, key=ORDER.index):
    frames = [pd.read_csv(runs[name, fold] + "/predictions.csv") for fold in folds]
    err = np.concatenate([f["error_mm"].to_numpy() for f in frames])
    per_landmark[name] = pd.concat(frames).groupby(["landmark", "name"])["error_mm"].mean()
    base = [per_image(runs["none", fold]) for fold in folds]
    per = "  ".join(f"{fold} {f['error_mm'].mean():.4f} ({f['error_mm'].mean() - b.mean():+.4f})"
                    for fold, f, b in zip(folds, frames, base, strict=True))
    d = np.concatenate([(per_image(runs[name, fold]) - b).to_numpy() for fold, b in zip(folds, base, strict=True)])
    print(f"{name:7s} {err.mean():.4f}     {np.median(err):.4f}  {100 * (err <= 2).mean():.2f}   {per}   "
          + (line("", d)[2:] if name != "none" else ""))
print("\nper landmark, pooled MRE (mm):")
print(pd.DataFrame(per_landmark).round(3).to_string())
EOF
