#!/usr/bin/env bash
# Coarse to fine on Test1, scored once: every (first stage, second stage) pair, each with the second stage's
# stored test-time shifts (data.patch.shifts) and with one centred patch (refine_shifts=[[0,0]]), so the
# shifts' effect is a paired comparison on the same checkpoints; with two or more second stages also each
# first stage with all of them as one ensemble; then the first stages as one ensemble with all second stages.
# Mean +/- SD tables over the pairs via benchmarks/seeds_table.py. Skips evaluations already done.
# Usage: bash benchmarks/cascade_pairs.sh OUT "<first run dir> ..." "<second-stage run dir> ..." [split]
set -u
OUT=$1; FIRSTS=$2; SECONDS_=$3; SPLIT=${4:-test}
PY=${PYTHON:-python}
ck=checkpoints/best.ckpt
mkdir -p "$OUT"
evaluate() {  # name overrides...
  local name=$1; shift
  [ -f "$OUT/$name/metrics.json" ] && return
  local t=$(date +%s)
  $PY evaluate.py "$@" split=$SPLIT overlays=0 hydra.run.dir="$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "== $name rc=$? $(( $(date +%s) - t ))s $($PY -c "import json; m = json.load(open('$OUT/$name/metrics.json')); print(f\"MRE {m['mre']:.4f} SDR@2 {m['sdr_2']:.2f}\")" 2>/dev/null)"
}
list() { local out=""; for d in $1; do out="$out,$d/$ck"; done; echo "[${out#,}]"; }
declare -A PAIRS=([shifts]="" [noshift]="")
for f in $FIRSTS; do for r in $SECONDS_; do
  fn=$(basename "$f"); rn=$(basename "$r")
  evaluate "${fn}_${rn}_shifts" ckpt_path="$f/$ck" refine_ckpt="$r/$ck"
  evaluate "${fn}_${rn}_noshift" ckpt_path="$f/$ck" refine_ckpt="$r/$ck" "refine_shifts=[[0,0]]"
  PAIRS[shifts]+=" $OUT/${fn}_${rn}_shifts"; PAIRS[noshift]+=" $OUT/${fn}_${rn}_noshift"
done; done
n_seconds=$(echo $SECONDS_ | wc -w)
declare -A BOTH=([shifts]="" [noshift]="")
if [ "$n_seconds" -gt 1 ]; then
  for f in $FIRSTS; do
    fn=$(basename "$f")
    evaluate "${fn}_all_shifts" ckpt_path="$f/$ck" "refine_ckpt=$(list "$SECONDS_")"
    evaluate "${fn}_all_noshift" ckpt_path="$f/$ck" "refine_ckpt=$(list "$SECONDS_")" "refine_shifts=[[0,0]]"
    BOTH[shifts]+=" $OUT/${fn}_all_shifts"; BOTH[noshift]+=" $OUT/${fn}_all_noshift"
  done
fi
if [ "$(echo $FIRSTS | wc -w)" -gt 1 ]; then
  evaluate "ensemble_all_shifts" "ckpt_path=$(list "$FIRSTS")" "refine_ckpt=$(list "$SECONDS_")"
  evaluate "ensemble_all_noshift" "ckpt_path=$(list "$FIRSTS")" "refine_ckpt=$(list "$SECONDS_")" "refine_shifts=[[0,0]]"
fi
for v in noshift shifts; do
  echo; echo "# pairs, $v"
  # shellcheck disable=SC2086
  $PY benchmarks/seeds_table.py ${PAIRS[$v]} --per-landmark | tee "$OUT/pairs_${v}_table.md"
  if [ -n "${BOTH[$v]}" ]; then
    echo; echo "# each first stage with all second stages as one, $v"
    # shellcheck disable=SC2086
    $PY benchmarks/seeds_table.py ${BOTH[$v]} --per-landmark | tee "$OUT/all_${v}_table.md"
  fi
done
