"""Is there a per-landmark offset to correct? The mean residual (prediction - truth, mm) of each landmark in two
validation folds' predictions.csv, and the MRE of each fold after subtracting the other fold's mean residuals.

A systematic offset (e.g. a landmark the doctors place a little off the edge the network finds) would show as the
same mean residual in both folds, and subtracting one fold's would lower the other's MRE. Prints its figures.

    python benchmarks/landmark_bias.py <fold A>/predictions.csv <fold B>/predictions.csv
"""

import sys

import numpy as np
import pandas as pd


def residuals(path: str) -> pd.DataFrame:
    """One row per image and landmark, with the residual in mm."""
    d = pd.read_csv(path, dtype={"image_id": str})
    return d.assign(rx=d.pred_x_mm - d.true_x_mm, ry=d.pred_y_mm - d.true_y_mm)


def offsets(d: pd.DataFrame) -> pd.DataFrame:
    """Per landmark: mean residual (x, y) in mm and its t statistic."""
    g = d.groupby("landmark")[["rx", "ry"]]
    mean, t = g.mean(), g.mean() / (g.std() / np.sqrt(g.count()))
    return pd.concat([d.groupby("landmark").name.first(), mean.round(3), t.round(1).add_prefix("t_")], axis=1)


def corrected(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """`test`'s radial errors before and after subtracting `train`'s mean residuals, and its landmark names."""
    m = train.groupby("landmark")[["rx", "ry"]].mean().rename(columns={"rx": "bx", "ry": "by"})
    t = test.merge(m, left_on="landmark", right_index=True)
    return np.hypot(t.rx, t.ry).to_numpy(), np.hypot(t.rx - t.bx, t.ry - t.by).to_numpy(), t.name


def main(a_path: str, b_path: str) -> None:
    a, b = residuals(a_path), residuals(b_path)
    for path, d in ((a_path, a), (b_path, b)):
        print(f"{path}: mean residual per landmark (mm) and t\n{offsets(d).to_string()}\n")
    for (tp, tr), (ep, te) in (((a_path, a), (b_path, b)), ((b_path, b), (a_path, a))):
        before, after, names = corrected(tr, te)
        change = pd.Series(after - before).groupby(names.to_numpy()).mean().sort_values()
        print(f"{ep} corrected by {tp}'s offsets: MRE {before.mean():.4f} -> {after.mean():.4f} mm; "
              f"per landmark {', '.join(f'{n} {v:+.3f}' for n, v in change.items())}\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
