#!/usr/bin/env bash
# Coarse to fine on Test1, scored once: every (first stage, second stage) pair in each variant, so that a
# variant's effect is a paired comparison on the same checkpoints; with two or more second stages also each
# first stage with all of them as one ensemble; then the first stages as one ensemble with all second stages.
# Mean +/- SD tables over the pairs via benchmarks/seeds_table.py. Skips evaluations already done.
# Variants (VARIANTS, words "name=override", the override may be empty), by default the second stage's
# stored test-time shifts against one centred patch: VARIANTS="shifts= noshift=refine_shifts=[[0,0]]".
# EXTRA: overrides (space-separated words) given to every evaluation, e.g. the views a second stage trained before
# they were stored needs: EXTRA="refine_views=[[0,1],[-6,1],[6,1],[0,0.94],[0,1.06]]".
# Usage: [VARIANTS=...] [EXTRA=...] bash benchmarks/cascade_pairs.sh OUT "<first run dir> ..." "<second-stage run dir> ..." [split]
set -u
OUT=$1; FIRSTS=$2; SECONDS_=$3; SPLIT=${4:-test}
PY=${PYTHON:-python}
VARIANTS=${VARIANTS:-"shifts= noshift=refine_shifts=[[0,0]]"}
EXTRA=${EXTRA:-}
ck=checkpoints/best.ckpt
mkdir -p "$OUT"
evaluate() {  # name override overrides...
  local name=$1 extra=$2; shift 2
  [ -n "$extra" ] && set -- "$@" "$extra"
  [ -f "$OUT/$name/metrics.json" ] && return
  local t=$(date +%s)
  # shellcheck disable=SC2086
  $PY evaluate.py "$@" $EXTRA split=$SPLIT overlays=0 hydra.run.dir="$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "== $name rc=$? $(( $(date +%s) - t ))s $($PY -c "import json; m = json.load(open('$OUT/$name/metrics.json')); print(f\"MRE {m['mre']:.4f} SDR@2 {m['sdr_2']:.2f}\")" 2>/dev/null)"
}
list() { local out=""; for d in $1; do out="$out,$d/$ck"; done; echo "[${out#,}]"; }
declare -A PAIRS=() BOTH=()
n_seconds=$(echo $SECONDS_ | wc -w)
for variant in $VARIANTS; do
  v=${variant%%=*}; ov=${variant#*=}
  for f in $FIRSTS; do for r in $SECONDS_; do
    fn=$(basename "$f"); rn=$(basename "$r")
    evaluate "${fn}_${rn}_$v" "$ov" ckpt_path="$f/$ck" refine_ckpt="$r/$ck"
    PAIRS[$v]+=" $OUT/${fn}_${rn}_$v"
  done; done
  if [ "$n_seconds" -gt 1 ]; then
    for f in $FIRSTS; do
      fn=$(basename "$f")
      evaluate "${fn}_all_$v" "$ov" ckpt_path="$f/$ck" "refine_ckpt=$(list "$SECONDS_")"
      BOTH[$v]+=" $OUT/${fn}_all_$v"
    done
  fi
  if [ "$(echo $FIRSTS | wc -w)" -gt 1 ]; then
    evaluate "ensemble_all_$v" "$ov" "ckpt_path=$(list "$FIRSTS")" "refine_ckpt=$(list "$SECONDS_")"
  fi
done
for variant in $VARIANTS; do
  v=${variant%%=*}
  echo; echo "# pairs, $v"
  # shellcheck disable=SC2086
  $PY benchmarks/seeds_table.py ${PAIRS[$v]} --per-landmark | tee "$OUT/pairs_${v}_table.md"
  if [ -n "${BOTH[$v]:-}" ]; then
    echo; echo "# each first stage with all second stages as one, $v"
    # shellcheck disable=SC2086
    $PY benchmarks/seeds_table.py ${BOTH[$v]} --per-landmark | tee "$OUT/all_${v}_table.md"
  fi
done
