"""How far off centre does a cascade cut its second-stage patches, against the training jitter?

A patch is cut at the first estimate plus a test-time shift, so the landmark sits at -(error + shift) from the
patch centre, in working pixels. The second stage was trained on uniform jitter of +/- `jitter` per axis only.
For first-stage predictions (predictions.csv, original pixels) this prints the quantiles of the first stage's
per-axis error (the larger of |dx| and |dy|) and the share of (patch, landmark) offsets beyond the jitter.

    python benchmarks/patch_offsets.py <first stage>/predictions.csv [...] [--jitter 12] [--shift 8]
        [--working 600 484] [--original 2400 1935]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def errors(path: str, working: tuple[int, int], original: tuple[int, int]) -> np.ndarray:
    """(n, 2) first-stage errors (dy, dx), prediction - truth, in working pixels."""
    p = pd.read_csv(path)
    sy, sx = working[0] / original[0], working[1] / original[1]
    return np.stack([(p.pred_y_px - p.true_y_px) * sy, (p.pred_x_px - p.true_x_px) * sx], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", nargs="+")
    ap.add_argument("--jitter", type=float, default=12.0)
    ap.add_argument("--shift", type=float, default=8.0, help="the stored shifts: centre and +/-shift on each axis")
    ap.add_argument("--working", type=int, nargs=2, default=(600, 484), metavar=("H", "W"))
    ap.add_argument("--original", type=int, nargs=2, default=(2400, 1935), metavar=("H", "W"))
    args = ap.parse_args()
    s = args.shift
    shifts = np.array([[0, 0], [-s, 0], [s, 0], [0, -s], [0, s]])
    for path in args.predictions:
        e = errors(path, tuple(args.working), tuple(args.original))
        q = np.percentile(np.abs(e).max(axis=1), [50, 90, 99])
        off = np.abs(e[:, None, :] + shifts[None]).max(axis=2)  # (n, shift): per-axis offset, the larger axis
        outside = off > args.jitter
        print(f"{path}: {len(e)} landmarks; first-stage per-axis error (px) median {q[0]:.1f}, 90th {q[1]:.1f}, "
              f"99th {q[2]:.1f}; beyond +/-{args.jitter:g} px: {100 * outside[:, 0].mean():.1f} % of centred "
              f"patches, {100 * outside[:, 1:].mean():.1f} % of shifted ones, {100 * outside.mean():.1f} % of all")


if __name__ == "__main__":
    main()
