"""Second-stage time per image against the number of patches per forward pass (`Predictor.patch_batch`).

The cascade's second stage cuts shifts x views patches per landmark (25 x 19 = 475 for the CPU second stage with
its stored shifts and views) and runs them in chunks. This times `Predictor.refine_working`, the code evaluate.py
and predict.py both run, on real Test1 images already resized to the working resolution (as evaluate.py has them
cached), for each chunk size in turn, `--rounds` times; the positions are random points inside the image (the
time does not depend on them).

    python benchmarks/patch_batch.py --refine <second stage>/checkpoints/best.ckpt [--runtime tuned|onnxruntime]
        [--images 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landmark_exp.data.images import read_grey  # noqa: E402
from landmark_exp.inference import load_predictor  # noqa: E402

TEST1 = ROOT.parent / "shared" / "data" / "isbi2015" / "RawImage" / "Test1Data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refine", required=True, help="a second-stage checkpoint")
    ap.add_argument("--views", default=None, help="JSON [[angle, zoom], ...]; default: the checkpoint's own")
    ap.add_argument("--runtime", default="tuned", help="tuned | eager | onnxruntime (as predict.py runtime=)")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="38,64,128,256,100000", help="patches per forward pass, comma-separated")
    args = ap.parse_args()
    files = sorted(TEST1.glob("*.jpg"))[: args.images]
    if not files:
        sys.exit(f"needs the real Test1 images at {TEST1}")
    second = load_predictor(args.refine, "cpu", runtime=args.runtime)
    views = json.loads(args.views) if args.views else None
    working = [second.working_input(read_grey(f)) for f in files]
    rng = np.random.default_rng(0)
    k = second.info.num_landmarks
    centres = [np.column_stack([rng.uniform(0.1, 0.9, k) * im.shape[1] / g.as_array()[0],
                                rng.uniform(0.1, 0.9, k) * im.shape[0] / g.as_array()[1]]) for im, g in working]
    per_image = len(second.info.patch_shifts or [[0, 0]]) * len(views or second.info.patch_views or [[0, 1]]) * k
    print(f"{args.refine}: {per_image} patches per image of {second.info.input_size}, {len(files)} Test1 images, "
          f"cpu, {second.backend}, {args.rounds} rounds")
    for r in range(args.rounds):
        for b in (int(x) for x in args.batches.split(",")):
            second.patch_batch = b
            t = time.perf_counter()
            for (im, g), c in zip(working, centres, strict=True):
                second.refine_working(im, g, c, None, views)
            print(f"round {r + 1}  patches per pass {min(b, per_image):4d}: {(time.perf_counter() - t) / len(files):.3f} s "
                  "per image", flush=True)


if __name__ == "__main__":
    main()
