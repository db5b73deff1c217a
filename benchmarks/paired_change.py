"""Per-image paired change of the radial error between two evaluate.py runs of the same images.

    python benchmarks/paired_change.py <run A> <run B> [<run A2> <run B2> ...]

For each pair: MRE of A and B, and the mean over images of (B - A) per-image MRE with its 95 % t interval
and how many images got better; pairs given together are also pooled (their images counted once per pair).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from scipy import stats


def per_image(run: str) -> pd.Series:
    p = pd.read_csv(f"{run}/predictions.csv", dtype={"image_id": str})
    return p.groupby("image_id")["error_mm"].mean()


def line(label: str, d: np.ndarray) -> str:
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{label}: {d.mean():+.4f} mm [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}], better on {(d < 0).sum()} of {len(d)}"


def main(runs: list[str]) -> None:
    if len(runs) < 2 or len(runs) % 2:
        raise SystemExit(__doc__)
    changes = []
    for a, b in zip(runs[::2], runs[1::2], strict=True):
        ea, eb = per_image(a), per_image(b)
        if not ea.index.equals(eb.index):
            raise SystemExit(f"{a} and {b} scored different images")
        d = (eb - ea).to_numpy()
        changes.append(d)
        print(f"{a} MRE {ea.mean():.4f} -> {b} MRE {eb.mean():.4f}; " + line("per image", d))
    if len(changes) > 1:
        print(line(f"pooled over the {len(changes)} pairs", np.concatenate(changes)))


if __name__ == "__main__":
    main(sys.argv[1:])
