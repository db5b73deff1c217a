"""Where predict.py's time goes per image, stage by stage, on real Test1 JPEGs; and what decoding only the
JPEG's luma channel would save and change.

    python benchmarks/predict_profile.py --ckpt <run>/checkpoints/best.ckpt [--images 12] [--runtime tuned]

Stages (ms per image, mean over the images): read_grey (decode + grey + float), the alternative luma-only
decode (PIL draft mode "L"), resize to the model input, network, decoding, spread. The luma check reads all
Test1 (and training) images both ways and counts those whose pixels differ.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from landmark_exp.data.images import _U8_TO_UNIT, read_grey
from landmark_exp.inference import load_predictor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2015" / "RawImage"


def luma_only(path: Path) -> np.ndarray:
    """The JPEG decoded straight to its Y channel (no colour conversion), as float32 in [0, 1] by the same table."""
    with Image.open(path) as im:
        im.draft("L", im.size)
        return _U8_TO_UNIT[np.asarray(im.convert("L"), dtype=np.uint8)]


def per_image_ms(fn, items) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = [fn(x) for x in items]
    return 1000 * (time.perf_counter() - t0) / len(items), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--runtime", default="tuned")
    args = ap.parse_args()
    files = sorted((DATA / "Test1Data").glob("*.jpg"))[: args.images]
    predictor = load_predictor(args.ckpt, "cpu", runtime=args.runtime)
    read_grey(files[0])
    predictor.predict([read_grey(files[0])])  # warm-up
    t_read, images = per_image_ms(read_grey, files)
    t_luma, _ = per_image_ms(luma_only, files)
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
    for name, t in (("read_grey", t_read), ("luma-only decode (alternative)", t_luma), ("resize", t_prep),
                    ("network", t_net), ("decoding", t_dec), ("spread", t_spread)):
        print(f"  {name:<32} {t:8.1f}")
    every = sorted(DATA.glob("*/*.jpg"))
    differ = [f.name for f in every if not np.array_equal(read_grey(f), luma_only(f))]
    print(f"luma-only differs from read_grey on {len(differ)} of {len(every)} images: {differ}")
    for name in differ:
        f = next(p for p in every if p.name == name)
        print(f"  {name}: up to {255 * float(np.abs(read_grey(f) - luma_only(f)).max()):.0f} grey levels")


if __name__ == "__main__":
    main()
