#!/usr/bin/env bash
# The peer benchmark's own environment: a venv that sees the project's .venv packages (torch, scipy, ...)
# through a .pth file and adds landmarker 0.4.1 without its dependencies (its heatmap module needs only
# torch, numpy and scipy). landmarker never enters the project's own environment.
#   bash benchmarks/landmarker_env.sh && .venv-landmarker/bin/python -m benchmarks.vs_landmarker
set -eu
cd "$(dirname "$0")/.."
python3.11 -m venv .venv-landmarker
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$(.venv-landmarker/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir(\"$site\")" > "$own/project_venv.pth"  # addsitedir: its .pth files (the editable install) count too
.venv-landmarker/bin/pip install -q --no-deps landmarker==0.4.1
.venv-landmarker/bin/python -c 'import landmarker, landmarker.heatmap; print("landmarker", landmarker.__version__)'
