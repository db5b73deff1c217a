"""Where predict.py's time goes per image, stage by stage, on real Test1 JPEGs; and whether read_grey's
luma-only decoding of grey JPEGs gives the pixels of a plain full decode.

    python benchmarks/predict_profile.py --ckpt <run>/checkpoints/best.ckpt [--images 12] [--runtime tuned]

Stages (ms per image, mean over the images, median of 5 passes): read_grey (chroma check, luma-only decode, float), a plain
read for comparison (PIL convert("L"), /255), resize to the model input, network, decoding, spread. The
parity check reads all Test1 (and training) images both ways and counts those whose pixels differ.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from inference import plain_read  # the benchmark beside this one (benchmarks/ is sys.path[0])

from landmark_exp.data.images import read_grey
from landmark_exp.inference import load_predictor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2015" / "RawImage"


def per_image_ms(fn, items, passes: int = 5) -> tuple[float, list]:
    """Median over `passes` passes of the mean ms per item: this VM has spells of 2-5x slowness."""
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        out = [fn(x) for x in items]
        times.append(1000 * (time.perf_counter() - t0) / len(items))
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--runtime", default="tuned")
    args = ap.parse_args()
    files = sorted((DATA / "Test1Data").glob("*.jpg"))[: args.images]
    predictor = load_predictor(args.ckpt, "cpu", runtime=args.runtime)
    for f in files:  # into the page cache: the stages time decoding, not this VM's disk
        f.read_bytes()
    read_grey(files[0])
    predictor.predict([read_grey(files[0])])  # warm-up
    t_read, images = per_image_ms(read_grey, files)
    t_plain, _ = per_image_ms(plain_read, files)
    t_prep, prepared = per_image_ms(predictor.prepare, images)
    batch = np.stack([x for x, _ in prepared])
    t0 = time.perf_counter()
    heat = predictor.heatmaps(batch)
    t_net = 1000 * (time.perf_counter() - t0) / len(files)
    t0 = time.perf_counter()
    xy, _ = predictor.info.decoding(heat)
    t_dec = 1000 * (time.perf_counter() - t0) / len(files)
    t0 = time.perf_counter()
    predictor.info.decoding.spread(heat, xy)
    t_spread = 1000 * (time.perf_counter() - t0) / len(files)
    print(f"model {args.ckpt} ({predictor.backend}), {len(files)} Test1 images, ms per image:")
    for name, t in (("read_grey", t_read), ("plain read (comparison)", t_plain), ("resize", t_prep),
                    ("network", t_net), ("decoding", t_dec), ("spread", t_spread)):
        print(f"  {name:<32} {t:8.1f}")
    every = sorted(DATA.glob("*/*.jpg"))
    differ = [f.name for f in every if not np.array_equal(read_grey(f), plain_read(f))]
    print(f"read_grey differs from the plain read on {len(differ)} of {len(every)} images: {differ}")


if __name__ == "__main__":
    main()
