#!/usr/bin/env bash
# Prepares, on this (CPU) machine and at no device time, what a lent GPU machine needs for
# benchmarks/gpu_session.sh: wheels of the packages its image lacks (it has torch, lightning, torchmetrics,
# opencv, timm, onnxruntime, rich, ...; not hydra, albumentations, smp, pydicom), and the ISBI data at full
# resolution in three parts of about 32 MB with a sha256 manifest, one per device call (64 MiB each, with the
# 12 MB working tree and, in the first call, 11 MB of wheels).
# Usage: bash benchmarks/gpu_prepare.sh [data root]      then the device call in benchmarks/gpu_session.sh.
# Writes .whl/ (gitignored, carried), devdata/full/part1..3 and devdata/isbi3 (excluded in .git/info/exclude,
# carried).
set -eu
D=${1:-../shared/data/isbi2015}
PY=${PYTHON:-.venv/bin/python}
grep -qx '/devdata/' .git/info/exclude 2>/dev/null || echo '/devdata/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
# the versions this checkout is tested with, read from the local environment
pins=$($PY - <<'EOF'
from importlib.metadata import version
names = ["hydra-core", "omegaconf", "albumentations", "albucore", "stringzilla", "simsimd", "pydantic",
         "pydantic_core", "annotated-types", "typing-inspection", "segmentation_models_pytorch", "pydicom"]
print(" ".join(f"{n}=={version(n)}" for n in names))
EOF
)
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins 2>&1 | grep -v '^WARNING' || true
# antlr4-python3-runtime 4.9.3 (pinned by omegaconf 2.3) is published as a source archive only
$PY -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$($PY -c 'from importlib.metadata import version; print(version("antlr4-python3-runtime"))')" \
  2>&1 | grep -v '^WARNING' || true
n=$(ls .whl/*.whl | wc -l)
[ "$n" -eq 13 ] || { echo "gpu_prepare: expected 13 wheels in .whl, found $n" >&2; exit 1; }
$PY -m benchmarks.pack_isbi split "$D" devdata/full --parts 3
# the 1/3-resolution copy for the `deck` session (everything there trains at 256x256)
rm -rf devdata/isbi3 && $PY -m benchmarks.pack_isbi shrink "$D" devdata/isbi3 --factor 3
du -sh .whl devdata/full/* devdata/isbi3
