"""Where a cascade's landmarks differ between runtimes (eager PyTorch against ONNX Runtime), stage by stage.

Prints the largest landmark difference, in original pixels, over real Test1 images:
1. the first stage alone;
2. the second stage alone, both runtimes refining the same (eager) first estimates;
3. the whole cascade, each runtime from its own first estimates, with the patches cut at the nearest working
   pixel (the default) and at the exact estimate (`subpixel`, `benchmarks/refine_subpixel.py`).
and, for the largest difference in 2, the highest values of that landmark's heatmap on its centred patch: how flat
its top is (the decoder starts its sub-pixel fit from the highest pixel, pixels within 1e-4 of it counting as tied).

    python benchmarks/cascade_parity.py --ckpt <first stage> --refine <second stage> [--images 50]
        [--views '[[0,1],[-6,1],[6,1],[0,0.94],[0,1.06]]']
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landmark_exp.data.images import read_grey  # noqa: E402
from landmark_exp.inference import load_predictor, refine_repeatedly  # noqa: E402

TEST1 = ROOT.parent / "shared" / "data" / "isbi2015" / "RawImage" / "Test1Data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--refine", required=True)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--views", default=None, help="JSON [[angle, zoom], ...]; default: the second stage's own")
    args = ap.parse_args()
    files = sorted(TEST1.glob("*.jpg"))[: args.images]
    if not files:
        sys.exit(f"needs the real Test1 images at {TEST1}")
    views = json.loads(args.views) if args.views else None
    first = {rt: load_predictor(args.ckpt, "cpu", runtime=rt) for rt in ("eager", "onnxruntime")}
    second = {rt: load_predictor(args.refine, "cpu", runtime=rt) for rt in ("eager", "onnxruntime")}
    worst = {"first stage": 0.0, "second stage, same first estimates": 0.0,
             "cascade, nearest pixel": 0.0, "cascade, exact estimate (subpixel)": 0.0}
    where = None
    for f in files:
        image = read_grey(f)
        a, b = (first[rt].predict([image])[0] for rt in ("eager", "onnxruntime"))
        working = second["eager"].working_input(image)
        worst["first stage"] = max(worst["first stage"], float(np.abs(a.xy - b.xy).max()))
        same = [refine_repeatedly(second[rt], working, a.xy, 1, None, views) for rt in ("eager", "onnxruntime")]
        d = np.abs(same[0].xy - same[1].xy)
        if d.max() > worst["second stage, same first estimates"]:
            worst["second stage, same first estimates"] = float(d.max())
            where = (f.name, int(d.max(axis=1).argmax()), a.xy, working)
        for label, subpixel in (("cascade, nearest pixel", False), ("cascade, exact estimate (subpixel)", True)):
            own = [refine_repeatedly(second[rt], working, start.xy, 1, None, views, subpixel=subpixel)
                   for rt, start in (("eager", a), ("onnxruntime", b))]
            worst[label] = max(worst[label], float(np.abs(own[0].xy - own[1].xy).max()))
    print(f"{args.ckpt} + {args.refine}, views {views or second['eager'].info.patch_views}, {len(files)} Test1 images; "
          "largest landmark difference eager vs ONNX Runtime (original px):")
    for label, value in worst.items():
        print(f"  {label}: {value:.2e}")
    if where is not None:
        name, j, centres, (resized, geom) = where
        from landmark_exp.data.patches import cut_patches, patch_origins

        p = second["eager"]
        origins = patch_origins(geom.to_model(centres[j:j + 1]), p.info.input_size)
        heat = p.heatmaps(cut_patches(resized, origins, p.info.input_size, p.info.patch_context))[0, j].double().numpy()
        top = np.sort(heat.ravel())[::-1][:6]
        print(f"  largest second-stage difference: {name}, landmark {j + 1}; its centred patch's 6 highest heatmap "
              f"values (float32): {', '.join(f'{v:.8f}' for v in top)}; pixels at exactly 1.0: {(heat == 1.0).sum()}")


if __name__ == "__main__":
    main()
