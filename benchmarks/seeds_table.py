"""Mean +/- SD over seeds of the millimetre report, from run directories (metrics.json + per_landmark.csv).

    python -m benchmarks.seeds_table <run dir> <run dir> <run dir> [--per-landmark]

Prints one markdown row per run, the mean +/- SD row (SD over seeds, ddof=1), and with --per-landmark the
per-landmark table averaged over the runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ("mre", "sd", "median", "sdr_2", "sdr_2.5", "sdr_3", "sdr_4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--per-landmark", action="store_true")
    args = ap.parse_args()
    missing = [str(run / "metrics.json") for run in args.runs if not (run / "metrics.json").is_file()]
    if missing:
        raise SystemExit(f"seeds_table: no metrics.json (run unfinished?): {', '.join(missing)}")
    rows = [json.loads((run / "metrics.json").read_text()) for run in args.runs]
    print("| run | MRE | SD | median | SDR 2 | SDR 2.5 | SDR 3 | SDR 4 |")
    print("|---|---|---|---|---|---|---|---|")
    for run, m in zip(args.runs, rows, strict=True):
        print(f"| {run} | " + " | ".join(f"{m[k]:.3f}" if k in ("mre", "sd", "median") else f"{m[k]:.2f}" for k in KEYS) + " |")
    values = np.array([[m[k] for k in KEYS] for m in rows])
    mean, sd = values.mean(0), values.std(0, ddof=1) if len(rows) > 1 else np.zeros(len(KEYS))
    print(f"| mean +/- SD over {len(rows)} | " + " | ".join(
        f"{a:.3f} +/- {b:.3f}" if k in ("mre", "sd", "median") else f"{a:.2f} +/- {b:.2f}"
        for k, a, b in zip(KEYS, mean, sd, strict=True)) + " |")
    if args.per_landmark:
        frames = [pd.read_csv(run / "per_landmark.csv") for run in args.runs]
        avg = pd.concat(frames).groupby(["landmark", "name"], sort=True)[list(KEYS)].mean().reset_index()
        print("\n| # | landmark | MRE | SD | median | SDR 2 | SDR 2.5 | SDR 3 | SDR 4 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for _, r in avg.iterrows():
            print(f"| {r['landmark']} | {r['name']} | " + " | ".join(
                f"{r[k]:.3f}" if k in ("mre", "sd", "median") else f"{r[k]:.2f}" for k in KEYS) + " |")


if __name__ == "__main__":
    main()
