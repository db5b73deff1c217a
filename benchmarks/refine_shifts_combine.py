"""How to combine the second stage's shifted estimates: the mean (what `refine_shifts` does) or the median.

Reads evaluate.py runs that each applied one shift (`refine_shifts=[[dy,dx]]`, same first stage, second stage
and split) and prints each run's MRE and the MRE of their per-landmark mean and coordinate-wise median.
    python benchmarks/refine_shifts_combine.py outputs/refine_shifts/single/fold3/s*
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd


def main(dirs: list[str]) -> None:
    frames = [pd.read_csv(f"{d}/predictions.csv").sort_values(["image_id", "landmark"]) for d in dirs]
    xy = np.stack([f[["pred_x_px", "pred_y_px"]].to_numpy() for f in frames])
    first = frames[0]
    true = first[["true_x_px", "true_y_px"]].to_numpy()
    mm_per_px = np.stack([first["true_x_mm"] / first["true_x_px"], first["true_y_mm"] / first["true_y_px"]], 1)
    for d, f in zip(dirs, frames, strict=True):
        print(f"{d}: MRE {f['error_mm'].mean():.4f}")
    for name, est in (("mean", xy.mean(0)), ("median", np.median(xy, 0))):
        e = np.linalg.norm((est - true) * mm_per_px, axis=1)
        print(f"{name:6s} of the {len(dirs)}: MRE {e.mean():.4f}  median {np.median(e):.4f}  SDR@2 {100 * (e <= 2).mean():.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
