"""Training-loader throughput on real data: first epoch (decoding included) vs later epochs (cache hits).

Why: a 2400x1935 JPEG costs tens of milliseconds to decode, the network at 256 px
much less, so an uncached loader would starve the GPU. `ImageCache` decodes each
image once in `setup()`; this measures what that buys. It builds the real
`LandmarkDataModule` as data=isbi2015 does (ISBI 2015 layout, mean ground truth,
landmark_exp/conf/data/augment/default.yaml augmentation on the training split) with a fresh
temporary cache_dir, so the first pass really decodes. Epoch 1 is timed from the
start of `setup()` to the end of its last batch; later epochs only iterate.

    python -m benchmarks.loader [--root ../shared/data/isbi2015] [--input-size 256] [--epochs 3]
                                [--batch-size 8] [--workers 0] [--with-test]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import albumentations
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from landmark_exp.data.datamodule import LandmarkDataModule
from landmark_exp.data.sources import ISBI2015Source

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build(args: argparse.Namespace, cache_dir: str) -> LandmarkDataModule:
    """The datamodule data=isbi2015 builds, with the default augmentation and the given cache folder."""
    augment = instantiate(OmegaConf.load(ROOT / "landmark_exp" / "conf" / "data" / "augment" / "default.yaml"), _convert_="all")
    return LandmarkDataModule(
        ISBI2015Source(args.root, gt="mean", spacing=0.1),
        input_size=(args.input_size, args.input_size),
        train_splits=["train"],
        val_fraction=0.15,
        test_split="test1" if args.with_test else None,
        batch_size=args.batch_size,
        num_workers=args.workers,
        cache_dir=cache_dir,
        augment=augment,
        seed=42,
    )


def run_epoch(loader) -> tuple[int, float]:
    """(samples, seconds) for one pass over the loader."""
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += int(batch["image"].shape[0])
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "isbi2015"))
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--with-test", action="store_true", help="also decode Test1 in setup(), as a training run does")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (epoch 1 is compared with the later ones)")
    L.seed_everything(42, verbose=False)

    print(f"date:          {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"cpu:           {cpu_model()} ({os.cpu_count()} logical cores)")
    print(f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"albumentations {albumentations.__version__}")
    print(f"settings:      root={args.root} input={args.input_size}x{args.input_size} batch={args.batch_size} "
          f"workers={args.workers} epochs={args.epochs} test_split={'test1' if args.with_test else None}")

    with tempfile.TemporaryDirectory(prefix="loader_bench_cache_") as cache_dir:
        dm = build(args, cache_dir)
        t0 = time.perf_counter()
        dm.setup("fit")
        setup_s = time.perf_counter() - t0
        decoded = dm.cache.decoded
        loader = dm.train_dataloader()
        epochs = [run_epoch(loader) for _ in range(args.epochs)]

        # a second run on the same cache folder: every image comes from the disk cache
        warm = build(args, cache_dir)
        t0 = time.perf_counter()
        warm.setup("fit")
        warm_setup_s = time.perf_counter() - t0
        warm_decoded = warm.cache.decoded

    sizes = {name: len(ds) for name, ds in dm.datasets.items()}
    n1, s1 = epochs[0]
    first = n1 / (setup_s + s1)
    later_n = sum(n for n, _ in epochs[1:])
    later = later_n / sum(s for _, s in epochs[1:])
    print(f"datasets:      {sizes}; setup() decoded {decoded} images in {setup_s:.2f} s "
          f"({1000 * setup_s / max(decoded, 1):.1f} ms per image)")
    print(f"epoch 1:       {n1} samples, setup {setup_s:.2f} s + iteration {s1:.2f} s -> {first:.1f} samples/s")
    for i, (n, s) in enumerate(epochs[1:], start=2):
        print(f"epoch {i}:       {n} samples in {s:.2f} s -> {n / s:.1f} samples/s (cache hits)")
    print(f"later epochs:  {later:.1f} samples/s; ratio later / first = {later / first:.1f}x")
    print(f"warm restart:  setup() from the disk cache in {warm_setup_s:.2f} s, decoded {warm_decoded} images")


if __name__ == "__main__":
    main()
