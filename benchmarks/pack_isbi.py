"""Ship an ISBI-2015-layout dataset to a GPU machine whose calls carry at most 64 MiB each.

Full resolution (the files as they are, in parts that travel in separate device calls, checked by checksum
where they land):
    python -m benchmarks.pack_isbi split ../shared/data/isbi2015 devdata/full --parts 3
    (device, one call per part)  python -m benchmarks.pack_isbi merge devdata/full/part2 devdata/isbi_full
Each part holds about 1/N of the bytes and `isbi2015.sha256` (every file of every part, sha256sum's format);
`merge` copies a part's files in and checks every file that has arrived, and says which parts are still missing.

A reduced-resolution copy (images shrunk by `--factor` with area interpolation, saved as JPEG; annotations
mapped exactly and the spacing grown by the same factor, so millimetre errors are unchanged):
    python -m benchmarks.pack_isbi shrink ../shared/data/isbi2015 devdata/isbi3 --factor 3
    (then train with data.source.spacing=0.3)
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from landmark_exp.data.geometry import Geometry
from landmark_exp.data.images import read_grey
from landmark_exp.data.sources import ISBI2015Source, parse_points

MANIFEST = "isbi2015.sha256"


def shrink(src: Path, dst: Path, factor: int, quality: int) -> None:
    source = ISBI2015Source(src)
    for split in source.splits():
        folder = ISBI2015Source.SPLIT_DIRS[split]
        for rec in source.load(split):
            img = read_grey(rec.image_path)
            h, w = img.shape
            out_hw = (h // factor, w // factor)
            small = cv2.resize(img, out_hw[::-1], interpolation=cv2.INTER_AREA)
            geom = Geometry.for_resize((h, w), out_hw)
            out = dst / "RawImage" / folder / f"{rec.id}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), (small * 255).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
            for doctor, sub in ISBI2015Source.DOCTORS.items():
                pts = geom.to_model(parse_points(source.annotation_path(doctor, rec.id), 19))
                ann = dst / "AnnotationsByMD" / sub / f"{rec.id}.txt"
                ann.parent.mkdir(parents=True, exist_ok=True)
                ann.write_text("".join(f"{x:.4f},{y:.4f}\n" for x, y in pts))
        print(split, "done")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split(src: Path, dst: Path, parts: int) -> None:
    """The files of `src` (images and annotations) in `parts` folders of about equal bytes, largest first."""
    files = sorted((p for p in src.rglob("*") if p.is_file() and p.parts[len(src.parts)] in ("RawImage",
                                                                                         "AnnotationsByMD")),
                   key=lambda p: (-p.stat().st_size, str(p)))
    if dst.exists():
        shutil.rmtree(dst)
    sizes = [0] * parts
    lines = []
    for f in files:
        k = sizes.index(min(sizes))  # the lightest part so far
        rel = f.relative_to(src)
        (dst / f"part{k + 1}" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst / f"part{k + 1}" / rel)
        sizes[k] += f.stat().st_size
        lines.append(f"{sha256(f)}  {rel.as_posix()}\n")
    manifest = "".join(sorted(lines, key=lambda line: line.split("  ", 1)[1]))
    for k in range(parts):
        (dst / f"part{k + 1}" / MANIFEST).write_text(manifest)
    print(f"{len(files)} files, {sum(sizes) / 1e6:.1f} MB in {parts} parts of "
          + " / ".join(f"{s / 1e6:.1f}" for s in sizes) + f" MB: {dst}/part1..{parts}")


def merge(part: Path, dst: Path) -> int:
    """Copy `part` into `dst`, then check every file the manifest lists: 0 when all are there and match."""
    if not (part / MANIFEST).is_file():
        print(f"merge: {part} holds no {MANIFEST}; was it carried?")
        return 1
    for f in sorted(p for p in part.rglob("*") if p.is_file()):
        target = dst / f.relative_to(part)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    missing, wrong, ok = [], [], 0
    for line in (dst / MANIFEST).read_text().splitlines():
        digest, rel = line.split("  ", 1)
        if not (dst / rel).is_file():
            missing.append(rel)
        elif sha256(dst / rel) != digest:
            wrong.append(rel)
        else:
            ok += 1
    print(f"merge {part.name}: {ok} files match their sha256, {len(missing)} not here yet, {len(wrong)} differ"
          + (f" (e.g. {wrong[0]})" if wrong else ""))
    return 1 if wrong else (2 if missing else 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("shrink")
    s.add_argument("src", type=Path)
    s.add_argument("dst", type=Path)
    s.add_argument("--factor", type=int, default=2)
    s.add_argument("--quality", type=int, default=95)
    p = sub.add_parser("split")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--parts", type=int, default=3)
    m = sub.add_parser("merge", help="exit status 0: complete, 2: parts still missing, 1: a file differs")
    m.add_argument("part", type=Path)
    m.add_argument("dst", type=Path)
    args = ap.parse_args()
    if args.command == "shrink":
        shrink(args.src, args.dst, args.factor, args.quality)
    elif args.command == "split":
        split(args.src, args.dst, args.parts)
    else:
        return merge(args.part, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
