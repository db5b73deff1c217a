"""Where `outlier_landmarks`' 5x threshold comes from, and what one lost landmark looks like.

    python benchmarks/landmark_failures.py                      # every per_landmark.csv under benchmarks/results
    python benchmarks/landmark_failures.py --predictions <predictions.csv> --landmark sella

The first prints, for each kept 19-landmark report, the worst landmark's MRE over the median landmark's,
sorted, so the gap between healthy runs and lost landmarks is visible. The second counts a landmark's
predictions off by more than 5 mm and their mean offset (x right, y down, mm).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def worst_over_median(root: Path) -> pd.DataFrame:
    rows = []
    for f in sorted(root.rglob("per_landmark.csv")):
        table = pd.read_csv(f)
        if len(table) != 19 or "mre" not in table:
            continue
        worst = table.loc[table["mre"].idxmax()]
        rows.append({"ratio": worst["mre"] / table["mre"].median(), "landmark": worst["name"],
                     "mre": worst["mre"], "report": str(f.relative_to(root.parent))})
    return pd.DataFrame(rows).sort_values("ratio").reset_index(drop=True)


def far_predictions(predictions: Path, landmark: str, limit_mm: float = 5.0) -> str:
    p = pd.read_csv(predictions)
    p = p[p["name"] == landmark]
    dx, dy = (p["pred_x_mm"] - p["true_x_mm"]).to_numpy(), (p["pred_y_mm"] - p["true_y_mm"]).to_numpy()
    far = np.hypot(dx, dy) > limit_mm
    return (f"{landmark}: {far.sum()} of {len(p)} images off by > {limit_mm:g} mm; their mean offset "
            f"x {dx[far].mean():+.1f} mm, y {dy[far].mean():+.1f} mm (y down)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", type=Path)
    ap.add_argument("--landmark", default="sella")
    args = ap.parse_args()
    if args.predictions:
        print(far_predictions(args.predictions, args.landmark))
        return
    table = worst_over_median(RESULTS)
    print(f"{len(table)} reports; worst landmark's MRE over the median landmark's, sorted:")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
