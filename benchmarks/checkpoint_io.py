"""What writing last.ckpt every epoch costs against the training, and what `last_io_share` leaves of it.

    python -m benchmarks.checkpoint_io [--model unet|unet_small] [--writes 5] [--epoch-s 0.46] [--epochs 150]

Writes the model's full checkpoint (weights + Adam's state, as Lightning stores it) through the project's
atomic writer (temporary file, fsync, rename) a few times into a temporary folder beside the outputs, and
prints its size and seconds per write. Then, for a run of `--epochs` epochs of `--epoch-s` seconds each
(0.46 s: isbi2015_seed's epoch on an H200, docs/results.md), the seconds spent writing last.ckpt
every epoch and with the default share, by the rule `checkpoints.ModelCheckpoint` applies (`last_write_due`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.throughput import build_net  # the benchmarks' spec U-Net and unet_small
from landmark_exp.checkpoints import AtomicCheckpointIO, last_write_due


def throttled_writes(epochs: int, epoch_s: float, write_s: float, share: float) -> int:
    """How many writes ModelCheckpoint's rule makes over `epochs` epochs of `epoch_s` seconds."""
    now, written_at, n = 0.0, None, 0
    for epoch in range(epochs):
        now += epoch_s
        if last_write_due(now, written_at, write_s, share, final=epoch == epochs - 1):
            now += write_s
            written_at, n = now, n + 1
    return n


def timed_writes(ckpt: dict, folder: Path, writes: int, label: str) -> tuple[float, float]:
    """Median seconds per atomic write of `ckpt`, and its size in MB; prints both."""
    times = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "x.ckpt"
        for _ in range(writes):
            start = time.perf_counter()
            AtomicCheckpointIO().save_checkpoint(ckpt, path)
            times.append(time.perf_counter() - start)
        size = path.stat().st_size / 1e6
    median = statistics.median(times)
    print(f"{label} {size:.1f} MB, write + fsync {' / '.join(f'{t:.3f}' for t in times)} s (median {median:.3f})")
    return median, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="unet", choices=["unet", "unet_small"])
    ap.add_argument("--writes", type=int, default=5)
    ap.add_argument("--epoch-s", type=float, default=0.46)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--share", type=float, default=0.05)
    ap.add_argument("--dir", type=Path, default=Path("outputs"))
    args = ap.parse_args()
    net = build_net(args.model)
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 1, 32, 32)).mean().backward()
    opt.step()  # Adam's two moments exist, as in a real checkpoint
    ckpt = {"state_dict": net.state_dict(), "optimizer_states": [opt.state_dict()], "epoch": 0}
    args.dir.mkdir(parents=True, exist_ok=True)
    write_s, _ = timed_writes(ckpt, args.dir, args.writes, f"{args.model}: last.ckpt")
    timed_writes({"state_dict": ckpt["state_dict"], "epoch": 0}, args.dir, args.writes,
                 f"{args.model}: best.ckpt, weights only (best_weights_only)")
    every = args.epochs * write_s
    n = throttled_writes(args.epochs, args.epoch_s, write_s, args.share)
    train = args.epochs * args.epoch_s
    print(f"{args.epochs} epochs of {args.epoch_s} s ({train:.0f} s of training): last.ckpt every epoch {every:.1f} s "
          f"({every / train:.0%} of the training); last_io_share={args.share}: {n} writes, {n * write_s:.1f} s "
          f"({n * write_s / train:.0%})")


if __name__ == "__main__":
    main()
