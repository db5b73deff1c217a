"""End-to-end prediction speed on real X-rays: eager fp32 PyTorch against the tuned runtimes, same model and images.

Each runtime predicts the same Test1 images through `landmark_exp.inference` exactly as `predict.py`
does (read + decode the 2400x1935 JPEG, resize, network, sub-pixel decoding, back to original pixels;
with `--refine` the coarse-to-fine second stage too). Each run is a runtime and a number of reader
threads; the first run is the baseline. Reader `plain` is what a plain script does (PIL, convert("L"),
/255, one image after the other); an integer N is landmark_exp's `read_grey` (luma-only decoding of grey
JPEGs), decoded N at a time ahead of the network (1: sequential); a `p` after N (e.g. onnxruntime:4p) also
resizes in the reader threads, as predict.py does. The default baseline is eager PyTorch with plain reading.
Printed: images/s, the ratio to the baseline, and the largest landmark difference from it in original pixels.

    python -m benchmarks.inference --ckpt <run>/checkpoints/best.ckpt [--refine <stage 2>/best.ckpt]
                                   [--images 20] [--batch 4] [--rounds 5] [--device cpu]
                                   [--runs eager:plain eager:1 tuned:4p onnxruntime:4p]

Without --ckpt a spec U-Net (random weights, 256x256) is timed; its landmarks are meaningless, so its
parity column only says the runtimes compute the same function.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landmark_exp.cascade import load_predictor
from landmark_exp.data.images import read_ahead, read_grey

ROOT = Path(__file__).resolve().parents[1]
TEST1 = ROOT.parent / "shared" / "data" / "isbi2015" / "RawImage" / "Test1Data"


def plain_read(path: Path) -> np.ndarray:
    """An X-ray read as a plain PyTorch script would: Pillow, convert to grey, float in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255)


def images_of(files: list[Path], readers: str, depth: int, predictor) -> Iterator[tuple[np.ndarray, Any]]:
    """(image, prepared network input or None), in order, by the run's reader: `plain`, a number of read_grey
    threads, or that number with a `p`: the threads also resize to the network input, as predict.py does."""
    if readers == "plain":
        return ((im, None) for im in map(plain_read, files))
    if readers.endswith("p"):
        return read_ahead(files, workers=int(readers[:-1]), depth=depth, then=lambda im: (im, predictor.prepare(im)))
    return ((im, None) for im in read_ahead(files, workers=int(readers), depth=depth))


def random_spec_checkpoint(folder: Path) -> Path:
    """A checkpoint of the spec U-Net at 256x256 with random weights, saved as train.py would."""
    import lightning as L

    from landmark_exp.module import LandmarkModule

    L.seed_everything(0, verbose=False)
    module = LandmarkModule(model={"_target_": "landmark_exp.models.unet.UNet", "out_channels": 19},
                            loss={"_target_": "landmark_exp.losses.DiceLoss"},
                            optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3}, input_size=(256, 256),
                            data={"source": {"spacing": 0.1}})
    path = folder / "spec_random.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--refine", type=Path)
    ap.add_argument("--refine-shifts", type=json.loads,
                    help="as predict.py refine_shifts=, JSON, e.g. '[[0,0]]' (default: the second stage's own)")
    ap.add_argument("--refine-views", type=json.loads,
                    help="as predict.py refine_views=, JSON, e.g. '[[0,1]]' (default: the second stage's own)")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--decoder", help="decoding override, as predict.py heatmap.decoder= (default: the checkpoint's)")
    ap.add_argument("--window", type=int, help="as predict.py heatmap.window=")
    ap.add_argument("--runs", nargs="+", default=["eager:plain", "eager:1", "tuned:4p", "onnxruntime:4p"],
                    help="runtime:readers pairs (readers plain: PIL convert('L') in a plain loop; 1: read_grey, "
                         "one image after the other; N: read_grey N at a time ahead of the network, as predict.py does)")
    args = ap.parse_args()
    if not TEST1.is_dir():
        sys.exit(f"needs the real Test1 images at {TEST1}")
    files = sorted(TEST1.glob("*.jpg"))[: args.images]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; cpu: {cpu} "
          f"({os.cpu_count()} cores, torch {torch.get_num_threads()} threads); python {platform.python_version()}, "
          f"torch {torch.__version__}; device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or random_spec_checkpoint(Path(tmp))
        runs = [r.split(":") if ":" in r else (r, "1") for r in args.runs]
        heatmap = {k: v for k, v in (("decoder", args.decoder), ("window", args.window)) if v is not None}
        predictors = [load_predictor(ckpt, args.device, refine=args.refine, runtime=rt, heatmap=heatmap,
                                     refine_shifts=args.refine_shifts, refine_views=args.refine_views) for rt, _ in runs]
        decoding = predictors[0].info.decoding
        shifts = f" with shifts {predictors[0].shifts} and views {predictors[0].views}" if args.refine else ""
        print(f"model: {ckpt}" + (f" refined by {args.refine}{shifts}" if args.refine else "")
              + f"; decoding {decoding.method}, window {decoding.window}; {len(files)} Test1 images, batch {args.batch}, "
              "end to end (read + predict)")
        warm = [read_grey(f) for f in files[: args.batch]]
        for predictor in predictors:  # warm-up at the timed batch size (ONNX session, oneDNN primitives)
            predictor.predict(warm)
        names = [f"{rt}, {'plain reading' if w == 'plain' else f'{w} reader(s)'}" for rt, w in runs]
        seconds: dict[str, list[float]] = {n: [] for n in names}
        xy: dict[str, list[np.ndarray]] = {}
        for _ in range(args.rounds):  # every run once per round, so a slow spell of the machine hits all of them
            for name, (_, workers), predictor in zip(names, runs, predictors, strict=True):
                t0 = time.perf_counter()
                out: list[np.ndarray] = []
                images = images_of(files, workers, 2 * args.batch, predictor)
                for i in range(0, len(files), args.batch):
                    batch = [next(images) for _ in files[i: i + args.batch]]
                    prepared = None if batch[0][1] is None else [b[1] for b in batch]
                    out += [p.xy for p in predictor.predict([b[0] for b in batch], prepared)]
                seconds[name].append(time.perf_counter() - t0)
                xy[name] = out
    base = names[0]
    print(f"\n{args.rounds} rounds; images/s: median (min-max); speed-up: median (min-max) of each round's ratio to "
          f"the same round's {base}")
    print(f"\n| runtime, reading | images/s | speed-up vs {base} | max landmark diff (original px) |")
    print("|---|---|---|---|")
    for name in names:
        rate = [len(files) / t for t in seconds[name]]
        ratio = [b / t for b, t in zip(seconds[base], seconds[name], strict=True)]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(xy[name], xy[base], strict=True))
        print(f"| {name} | {np.median(rate):.2f} ({min(rate):.2f}-{max(rate):.2f}) | "
              f"{np.median(ratio):.2f}x ({min(ratio):.2f}-{max(ratio):.2f}) | {diff:.2e} |")

if __name__ == "__main__":
    main()
