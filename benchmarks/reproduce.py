"""Do stored results reproduce? A model scored by evaluate.py and predicted by predict.py, both compared landmark by
landmark with each other and with a kept predictions.csv (docs/results.md keeps one per headline row):

    python -m benchmarks.reproduce --ckpt <detector.pt | best.ckpt | '[a.ckpt,b.ckpt]'> [--refine <ckpt>] \
        --root ../shared/data/isbi2015 [--stored benchmarks/results/<row>/predictions.csv] [--split test1] \
        [--runtime tuned]

Runs the two documented commands as a user would (subprocesses, one thread each), then prints the largest
difference in original-image pixels between evaluate and the stored file, and between predict and evaluate, for
every landmark of every image; exits 1 when either is over --tolerance (1e-6 px by default: the same code and
weights on the same CPU give the same floats, which the CSVs' 6 significant digits print identically; another
instruction set may round the last digits differently). --runtime is given to both commands (default: their own
default, auto); a file stored by another runtime reproduces only with that one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_FOLDERS = {"test1": "Test1Data", "test2": "Test2Data"}


def _run(args: list[str], env: dict) -> None:
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args[:1])} failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _points(path: Path, x: str, y: str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"image_id": str})
    return frame.set_index(["image_id", "landmark"])[[x, y]].set_axis(["x", "y"], axis=1).sort_index()


def largest_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """The largest distance (px) between two tables of the same landmarks; inf when they hold different ones."""
    if not a.index.equals(b.index):
        return float("inf")
    return float(np.hypot(*(a.to_numpy() - b.to_numpy()).T).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--refine", default=None)
    parser.add_argument("--root", required=True, help="the ISBI 2015 folder (challenge layout)")
    parser.add_argument("--stored", type=Path, help="a kept evaluate predictions.csv (none: predict vs evaluate only)")
    parser.add_argument("--split", default="test1", choices=sorted(SPLIT_FOLDERS))
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--runtime", default=None, help="auto | tuned | eager | onnxruntime, for both commands")
    a = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ([f"refine_ckpt={a.refine}"] if a.refine else []) + ([f"runtime={a.runtime}"] if a.runtime else [])
    with tempfile.TemporaryDirectory(prefix="reproduce_") as tmp:
        _run(["evaluate.py", f"ckpt_path={a.ckpt}", *common, f"data_root={a.root}", f"split={a.split}", "overlays=0",
              f"hydra.run.dir={tmp}/evaluate"], env)
        _run(["predict.py", f"ckpt_path={a.ckpt}", *common, f"input={Path(a.root) / 'RawImage' / SPLIT_FOLDERS[a.split]}",
              "overlay=false", f"output_dir={tmp}/predict", f"hydra.run.dir={tmp}/predict_run"], env)
        evaluated = _points(Path(tmp) / "evaluate" / "predictions.csv", "pred_x_px", "pred_y_px")
        predicted = _points(Path(tmp) / "predict" / "predictions.csv", "x_px", "y_px")
    diffs = {"predict vs evaluate": largest_difference(predicted, evaluated)}
    if a.stored:
        diffs["evaluate vs stored"] = largest_difference(evaluated, _points(a.stored, "pred_x_px", "pred_y_px"))
    for what, d in diffs.items():
        print(f"{what}: {len(evaluated)} landmarks, largest difference {d:.3g} px")
    sys.exit(int(max(diffs.values()) > a.tolerance))


if __name__ == "__main__":
    main()
