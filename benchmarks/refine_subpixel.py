"""Second-stage patches cut at the first estimate's exact sub-pixel position against the nearest whole pixel.

A cascade cuts each second-stage patch around a first estimate. Rounded to the nearest working pixel (the way
training cuts its patches), an estimate that moves by 1e-4 px can move its patch by a whole pixel, so two runtimes
that agree to 1e-4 px in the first stage can differ by tenths of a pixel after the second. Cut at the exact
position (bilinear, `cut_patches` with fractional origins), the cascade is a continuous function of the first
estimates. This scores both on a split of the first stage's data config (default: its validation fold), as
evaluate.py scores a cascade (same first-stage landmarks, same second stage, shifts, views and blend), and writes
one predictions.csv per arm for `benchmarks/paired_change.py`.

    python benchmarks/refine_subpixel.py <first stage ckpt> <second stage ckpt> OUT [--split val]
        [--views '[[0,1],[-6,1],[6,1],[0,0.94],[0,1.06]]'] [--runtime tuned]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from landmark_exp.data.images import read_grey  # noqa: E402
from landmark_exp.inference import combine_stages, load_predictor, refine_repeatedly  # noqa: E402
from landmark_exp.metrics import radial_errors_mm, summarize  # noqa: E402
from landmark_exp.module import load_module  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("out")
    ap.add_argument("--split", default="val")
    ap.add_argument("--views", default=None, help="JSON [[angle, zoom], ...]; default: the second stage's own")
    ap.add_argument("--runtime", default="tuned")
    args = ap.parse_args()
    dm = instantiate(OmegaConf.create(load_module(args.first).hparams.data))
    dm.prepare_data()
    dm.setup("test")
    records = dm.records[args.split]
    first = load_predictor(args.first, "cpu", runtime=args.runtime)
    second = load_predictor(args.second, "cpu", runtime=args.runtime)
    views = json.loads(args.views) if args.views else None
    blend = second.info.patch_blend or 0.0
    arms = {"whole_pixel": False, "subpixel": True}
    pred = {arm: [] for arm in arms}
    start = time.perf_counter()
    for rec in records:
        image = read_grey(rec.image_path)
        f = first.predict([image])[0]
        working = second.working_input(image)
        for arm, subpixel in arms.items():
            s = refine_repeatedly(second, working, f.xy, 1, None, views, subpixel=subpixel)
            pred[arm].append(combine_stages(f.xy, s.xy, np.ones(len(f.xy), dtype=bool), blend))
    true = np.stack([r.landmarks for r in records])
    spacing = np.stack([np.asarray(r.spacing, dtype=np.float64) for r in records])
    print(f"{args.first} + {args.second}: {len(records)} {args.split} images, views {views or second.info.patch_views}, "
          f"blend {blend}, {args.runtime}, {time.perf_counter() - start:.0f} s")
    for arm in arms:
        errors = radial_errors_mm(np.stack(pred[arm]), true, spacing)
        s = summarize(errors, dm.landmark_names)
        print(f"{arm:12s} MRE {s['mre']:.6f} mm  median {s['median']:.4f}  SDR@2 {s['sdr_2']:.2f} %")
        out = Path(args.out) / arm
        out.mkdir(parents=True, exist_ok=True)
        rows = [{"image_id": r.id, "landmark": j + 1, "error_mm": errors[n, j]}
                for n, r in enumerate(records) for j in range(errors.shape[1])]
        pd.DataFrame(rows).to_csv(out / "predictions.csv", index=False)
        (out / "metrics.json").write_text(json.dumps({"mre": s["mre"], "median": s["median"], "sdr_2": s["sdr_2"]}))


if __name__ == "__main__":
    main()
