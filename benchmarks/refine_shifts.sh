#!/usr/bin/env bash
# Second-stage test-time shifts (`refine_shifts=`), chosen on cross-validation folds: for each fold, the
# first stage and the second stage trained with that fold held out (data.folds=5 data.fold=F eval_split=val)
# re-locate the fold's own validation images with each set of shifts below (working pixels of the second
# stage: 0.4 mm at 600x484; its patches are 48 px, trained with +/-12 px jitter). Prints one line per
# (fold, set) and the pooled MRE over the folds; writes metrics.json etc. under OUT/<fold>/<set>/.
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
$PY - "$OUT" <<'EOF'
import glob, json, sys
import numpy as np
import pandas as pd
rows = []
for f in sorted(glob.glob(sys.argv[1] + "/fold*/*/predictions.csv")):
    fold, name = f.split("/")[-3:-1]
    p = pd.read_csv(f)
    K = p["landmark"].nunique()
    rows.append((name, fold, p.sort_values(["image_id", "landmark"])["error_mm"].to_numpy()))
names = sorted({r[0] for r in rows}, key=["none", "plus2", "plus4", "plus8", "plus12", "grid4", "grid8"].index)
base = {fold: e for name, fold, e in rows if name == "none"}
from scipy import stats
print("\nset     pooled MRE  median   SDR@2   per fold (change against none)       per-image change, 95% t interval")
for name in names:
    errs = [(fold, e) for n, fold, e in rows if n == name]
    pooled = np.concatenate([e for _, e in errs])
    per = "  ".join(f"{fold} {e.mean():.4f} ({e.mean() - base[fold].mean():+.4f})" for fold, e in errs)
    # per image: the change of its mean error over its K landmarks (rows are image-major, K per image)
    d = np.concatenate([(e - base[fold]).reshape(-1, K).mean(1) for fold, e in errs])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if name != "none" else 0.0
    print(f"{name:7s} {pooled.mean():.4f}     {np.median(pooled):.4f}  {100 * (pooled <= 2).mean():.2f}   {per}"
          f"   {d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}], better on {(d < 0).sum()}/{len(d)}")
EOF
