"""Write a reduced-resolution copy of an ISBI-2015-layout dataset (for shipping to a GPU machine).

Images are shrunk by `--factor` with area interpolation and saved as JPEG; the
annotations are mapped exactly (pixel-centre convention, written as floats) and
the spacing grows by the same factor, so millimetre errors are unchanged:
python -m benchmarks.pack_isbi ../shared/data/isbi2015 devdata/isbi_half --factor 2
(then train with data.source.spacing=0.2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from landmark_exp.data.geometry import Geometry
from landmark_exp.data.images import read_grey
from landmark_exp.data.sources import ISBI2015Source, parse_points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--quality", type=int, default=95)
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    source = ISBI2015Source(src)
    for split in source.splits():
        folder = ISBI2015Source.SPLIT_DIRS[split]
        for rec in source.load(split):
            img = read_grey(rec.image_path)
            h, w = img.shape
            out_hw = (h // args.factor, w // args.factor)
            small = cv2.resize(img, out_hw[::-1], interpolation=cv2.INTER_AREA)
            geom = Geometry.for_resize((h, w), out_hw)
            out = dst / "RawImage" / folder / f"{rec.id}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), (small * 255).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, args.quality])
            for doctor, sub in ISBI2015Source.DOCTORS.items():
                pts = geom.to_model(parse_points(source.annotation_path(doctor, rec.id), 19))
                ann = dst / "AnnotationsByMD" / sub / f"{rec.id}.txt"
                ann.parent.mkdir(parents=True, exist_ok=True)
                ann.write_text("".join(f"{x:.4f},{y:.4f}\n" for x, y in pts))
        print(split, "done")


if __name__ == "__main__":
    main()
