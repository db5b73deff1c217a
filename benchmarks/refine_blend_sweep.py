"""Which share of the first-stage estimate to keep in a cascade's final position (`refine_blend`), on validation.

    python benchmarks/refine_blend_sweep.py <first-stage run> <cascade run with refine_blend=0> [<first> <cascade> ...]

Each pair is one fold: the first stage's evaluate.py run and the cascade's on the same images. The blend is
linear in original pixels (and millimetres), so every weight is computed from the two predictions.csv files without running a
model again; `evaluate.py refine_blend=w` gives the same figures (checked for the chosen weight). Prints, for
weights 0 to 0.5, the pooled MRE, SDR@2 and each fold's MRE, then per landmark for 0, the best and 0.5.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def pair(first: str, cascade: str, fold: int) -> pd.DataFrame:
    a = pd.read_csv(f"{first}/predictions.csv", dtype={"image_id": str})
    b = pd.read_csv(f"{cascade}/predictions.csv", dtype={"image_id": str})
    m = a.merge(b, on=["image_id", "landmark"], suffixes=("_first", ""), validate="one_to_one")
    if len(m) != len(a) or len(m) != len(b):
        raise SystemExit(f"{first} and {cascade} scored different images")
    m["fold"] = fold
    return m


def main(runs: list[str]) -> None:
    if len(runs) < 2 or len(runs) % 2:
        raise SystemExit(__doc__)
    m = pd.concat([pair(a, b, i) for i, (a, b) in enumerate(zip(runs[::2], runs[1::2], strict=True))])
    for w in WEIGHTS:
        x = (1 - w) * m["pred_x_mm"] + w * m["pred_x_mm_first"]  # millimetres are pixels times the spacing
        y = (1 - w) * m["pred_y_mm"] + w * m["pred_y_mm_first"]
        m[f"e{w}"] = np.hypot(x - m["true_x_mm"], y - m["true_y_mm"])
    print("| first-stage weight | pooled MRE (mm) | SDR@2 % | " + " | ".join(f"pair {i + 1}" for i in sorted(m["fold"].unique())) + " |")
    for w in WEIGHTS:
        folds = " | ".join(f"{v:.4f}" for v in m.groupby("fold")[f"e{w}"].mean())
        print(f"| {w:.1f} | {m[f'e{w}'].mean():.4f} | {100 * (m[f'e{w}'] <= 2).mean():.2f} | {folds} |")
    best = min(WEIGHTS, key=lambda w: m[f"e{w}"].mean())
    cols = sorted({0.0, best, 0.5})
    table = m.groupby(["landmark", "name"])[[f"e{w}" for w in cols] + ["error_mm_first"]].mean().round(3)
    table.columns = [f"weight {w:.1f}" for w in cols] + ["first stage"]
    print(f"\nlowest pooled MRE at weight {best:.1f}; per landmark (mm):\n")
    print(table.to_string())


if __name__ == "__main__":
    main(sys.argv[1:])
