"""The seed deck's figure: one test image predicted by each job of the `experiment=seed` epoch sweep, side by side.

    python -m benchmarks.seed_deck <sweep dir> --root <isbi2015> [--image 172] [--out seed_deck.png]

The sweep is `python train.py -m experiment=seed data=isbi2015 data.source.root=<isbi2015>
trainer.max_epochs=20,75,100,150` (benchmarks/gpu_session.sh). Every job tests on the same random test split
(the same seed), and writes its predictions in original pixels (predictions.csv); this draws them over the
original image: truth green, prediction red, joined by a line coloured by the error, each panel titled with
its epochs and its MRE on the whole test split. Runs on a CPU from the kept predictions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from landmark_exp.data.images import read_grey
from landmark_exp.data.sources import ISBI2015Source
from landmark_exp.pictures import draw_overlay


def jobs(sweep: Path) -> list[tuple[int, pd.DataFrame]]:
    """(max_epochs, predictions) of each finished job, fewest epochs first."""
    found = []
    for pred in sorted(sweep.glob("*/predictions.csv")):
        cfg = OmegaConf.load(pred.parent / "config.yaml")
        found.append((int(cfg.trainer.max_epochs), pd.read_csv(pred)))
    return sorted(found, key=lambda job: job[0])


def panel(image: np.ndarray, frame: pd.DataFrame, epochs: int, mre: float, width: int) -> np.ndarray:
    rgb = draw_overlay(image, frame[["true_x_px", "true_y_px"]].to_numpy(), frame[["pred_x_px", "pred_y_px"]].to_numpy(),
                       errors_mm=frame["error_mm"].to_numpy(), legend="none")
    small = cv2.resize(rgb, (width, round(rgb.shape[0] * width / rgb.shape[1])), interpolation=cv2.INTER_AREA)
    title = np.full((44, width, 3), 255, np.uint8)
    cv2.putText(title, f"{epochs} epoch{'s' if epochs != 1 else ''}: this image {frame['error_mm'].mean():.2f} mm, test split {mre:.2f} mm",
                (8, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.62, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([title, small])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--root", type=Path, required=True, help="the ISBI 2015 folder the sweep was trained on")
    ap.add_argument("--image", default=None, help="image id (default: the test image whose error is the median "
                                                 "of the longest run's)")
    ap.add_argument("--out", type=Path, default=Path("seed_deck.png"))
    ap.add_argument("--width", type=int, default=480, help="panel width in pixels")
    args = ap.parse_args()
    found = jobs(args.sweep)
    if not found:
        print(f"seed_deck: no */predictions.csv under {args.sweep}", file=sys.stderr)
        return 1
    last = found[-1][1].groupby("image_id")["error_mm"].mean().sort_values()
    image_id = args.image or str(last.index[len(last) // 2])
    paths = [args.root / "RawImage" / folder / f"{int(image_id):03d}.jpg" for folder in ISBI2015Source.SPLIT_DIRS.values()]
    image = read_grey(next(p for p in paths if p.is_file()))
    panels = []
    for epochs, frame in found:
        one = frame[frame["image_id"].astype(str).str.lstrip("0") == str(int(image_id))]
        if one.empty:
            print(f"seed_deck: image {image_id} is not in the {epochs}-epoch job's test split", file=sys.stderr)
            return 1
        panels.append(panel(image, one, epochs, frame["error_mm"].mean(), args.width))
    height = max(p.shape[0] for p in panels)
    row = np.hstack([np.vstack([p, np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in panels])
    cv2.imwrite(str(args.out), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
    print(f"{args.out}: image {image_id} at " + ", ".join(f"{e} epochs" for e, _ in found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
