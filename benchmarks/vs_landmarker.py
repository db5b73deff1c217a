"""landmark_exp against landmarker 0.4.1 (the main open-source landmark toolkit), on the same batches.

1. Heatmap generation: (B, K) sub-pixel landmarks -> (B, K, H, W) Gaussians (sigma 2 px):
   `landmark_exp.heatmap.generator.gaussian_heatmaps` vs `landmarker.heatmap.GaussianHeatmapGenerator`;
   time, and the largest difference between the two renderings (they should draw the same function).
2. Decoding: heatmaps -> sub-pixel coordinates, against the known centres: ours (`heatmap.decoder.decode`,
   the default `lsq`: argmax + weighted least-squares log-Gaussian fit on 5x5; and the 3x3 `quadratic`) vs landmarker's local soft-argmax (its default sub-pixel decoder, window
   5, temperature 10) and its argmax. The heatmaps are landmarker's own renderings (so the test is not
   drawn with our generator), clean and with additive noise (std 0.02, clipped at 0, as a network's
   output is), time and mean / max radial error in pixels. A third batch is what a dice-trained sigmoid
   network draws: saturated blobs sigmoid(8 - d^2 / 4), rendered here by that formula; on those our
   `logit_lsq` (the default decoder of dice-trained models) is printed too.

Run it in the benchmark's own environment (landmarker is not a project dependency):

    bash benchmarks/landmarker_env.sh
    .venv-landmarker/bin/python -m benchmarks.vs_landmarker [--sizes 256 512] [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from landmark_exp.heatmap.decoder import decode
from landmark_exp.heatmap.generator import gaussian_heatmaps

K, SIGMA = 19, 2.0


def median_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def radial(pred_xy: torch.Tensor, true_xy: torch.Tensor) -> tuple[float, float]:
    d = (pred_xy.double() - true_xy.double()).norm(dim=-1)
    return float(d.mean()), float(d.max())


def main() -> None:
    import landmarker
    from landmarker.heatmap import GaussianHeatmapGenerator
    from landmarker.heatmap.decoder import coord_argmax, coord_local_soft_argmax

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--noise", type=float, default=0.02)
    args = ap.parse_args()
    torch.manual_seed(0)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; cpu: {cpu} "
          f"({os.cpu_count()} cores, torch {torch.get_num_threads()} threads); python {platform.python_version()}, "
          f"torch {torch.__version__}, landmarker {landmarker.__version__}")
    print(f"batch {args.batch} x {K} landmarks, sigma {SIGMA} px, median of {args.repeats} runs, CPU\n")
    print("| size | step | landmarker | landmark_exp | speed-up | landmarker error (mean / max px) "
          "| landmark_exp error (mean / max px) |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        xy = 8 + torch.rand(args.batch, K, 2) * (size - 17)  # (x, y), sub-pixel, away from the borders
        yx = xy.flip(-1)
        peer_gen = GaussianHeatmapGenerator(K, sigmas=SIGMA, heatmap_size=(size, size))
        t_peer, peer_maps = median_seconds(lambda yx=yx, g=peer_gen: g(yx), args.repeats)
        t_ours, our_maps = median_seconds(lambda xy=xy, s=size: gaussian_heatmaps(xy, (s, s), SIGMA), args.repeats)
        diff = float((peer_maps.float() - our_maps.float()).abs().max())
        print(f"| {size} | generation | {1000 * t_peer:.1f} ms | {1000 * t_ours:.2f} ms | {t_peer / t_ours:.0f}x "
              f"| max abs difference of the two renderings: {diff:.1e} | |")
        ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
        blobs = torch.sigmoid(8 - ((xs - xy[..., 0, None, None]) ** 2 + (ys - xy[..., 1, None, None]) ** 2) / 4)
        for label, maps in (("clean", peer_maps.float()),
                            (f"noise {args.noise}", (peer_maps.float() + args.noise * torch.randn_like(peer_maps.float())).clamp_min(0)),
                            ("sigmoid blobs", blobs.float())):
            t_lsa, lsa = median_seconds(lambda m=maps: coord_local_soft_argmax(m, window=5, t=10.0), args.repeats)
            t_am, am = median_seconds(lambda m=maps: coord_argmax(m), args.repeats)
            t_q, (q, _) = median_seconds(lambda m=maps: decode(m, "lsq", window=2), args.repeats)
            t_q3, (q3, _) = median_seconds(lambda m=maps: decode(m, "quadratic"), args.repeats)
            e_lsa, e_am, e_q, e_q3 = (radial(lsa.flip(-1), xy), radial(am.flip(-1).float(), xy), radial(q, xy),
                                      radial(q3, xy))
            print(f"| {size} | decoding, {label} | local soft-argmax {1000 * t_lsa:.1f} ms | lsq {1000 * t_q:.2f} ms "
                  f"| {t_lsa / t_q:.0f}x | {e_lsa[0]:.3f} / {e_lsa[1]:.3f} (argmax {e_am[0]:.3f} / {e_am[1]:.3f}, "
                  f"{1000 * t_am:.2f} ms) | lsq {e_q[0]:.3f} / {e_q[1]:.3f} (quadratic {e_q3[0]:.3f} / {e_q3[1]:.3f}, "
                  f"{1000 * t_q3:.2f} ms) |")
            t_lg, (lg, _) = median_seconds(lambda m=maps: decode(m, "logit_lsq", window=3), args.repeats)
            e_lg = radial(lg, xy)
            print(f"| {size} | decoding, {label} | | logit_lsq {1000 * t_lg:.2f} ms | {t_lsa / t_lg:.0f}x | "
                  f"| logit_lsq {e_lg[0]:.3f} / {e_lg[1]:.3f} |")


if __name__ == "__main__":
    main()
