"""Training and inference throughput of a landmark network: eager fp32 against the tuned path, in one run.

For each input size it prints the FLOPs per sample (torch's FlopCounterMode: forward + backward for
training, forward for inference), samples/s of a full training step (heatmap targets rendered on the
device, dice loss, backward, Adam step) and of inference, the achieved TFLOP/s and its fraction of the
device's peak, and the tuned/eager ratio. Then the loader on its own (cached, augmented ISBI images).

- eager: fp32, NCHW, plain (for-each) Adam, the network as trained.
- tuned: what landmark_exp does by default on that device: on GPUs bf16 autocast (fp16 + GradScaler
  where bf16 is missing), channels_last, fused Adam, cudnn benchmark, TF32 matmuls; on CPUs channels_last
  with AVX-512 only; `--compile` adds torch.compile. Inference: `performance.for_inference` (batch norm
  folded, NHWC) under inference_mode, plus ONNX Runtime on CPU (`--onnx`).

Peak: the datasheet's dense figure for known GPUs; on a CPU, the fp32 GEMM rate this benchmark
measures on a 2048^3 matmul (an attainable, not a theoretical, peak).

    python -m benchmarks.throughput [--sizes 256 512] [--batch 16] [--steps 10] [--model unet|unet_small]
                                    [--device auto] [--compile] [--onnx] [--no-loader]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from landmark_exp.heatmap.generator import gaussian_heatmaps
from landmark_exp.losses import DiceLoss
from landmark_exp.models.unet import UNet
from landmark_exp.performance import channels_last_default, for_inference

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isbi2015"

# dense tensor-core peaks from the vendors' datasheets (TFLOP/s): bf16/fp16, and tf32 for fp32 matmuls
GPU_PEAK_TFLOPS = {"H200": (989.4, 494.7), "H100 80GB HBM3": (989.4, 494.7), "H100 PCIe": (756.0, 378.0),
                   "H100": (989.4, 494.7), "A100": (312.0, 156.0), "L40S": (362.1, 183.0), "L4": (121.0, 60.0),
                   "A10": (125.0, 62.5), "V100": (125.0, 15.7), "T4": (65.0, 8.1)}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per call, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def build_net(model: str) -> torch.nn.Module:
    widths = (64, 128, 256, 512) if model == "unet" else (16, 32, 64, 128)
    return UNet(1, 19, widths=widths)


def flops_per_sample(net: torch.nn.Module, size: int, train: bool) -> float:
    net = net.train(train)
    x = torch.rand(1, 1, size, size, requires_grad=False)
    counter = FlopCounterMode(display=False)
    with counter:
        out = net(x)
        if train:
            out.float().mean().backward()
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def cpu_nominal_peak_tflops() -> tuple[float | None, str]:
    """cores x FMA lanes x 2 FLOP x 2 FMA units x the nominal clock of /proc/cpuinfo (boost clocks run higher)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "unknown"
    mhz = next((float(ln.split(":")[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")), None)
    flags = next((ln.split(":")[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags and "fma" in flags else 4
    if mhz is None:
        return None, "unknown clock"
    cores = os.cpu_count() or 1
    return cores * lanes * 2 * 2 * mhz * 1e6 / 1e12, f"{cores} cores x {lanes} fp32 lanes x 2 FMA units x 2 x {mhz:.0f} MHz"


def peak_tflops(device: torch.device, low_precision: bool) -> tuple[float | None, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, tf32) in GPU_PEAK_TFLOPS.items():
            if key in name:
                return (bf16 if low_precision else tf32), f"{name} datasheet dense {'bf16' if low_precision else 'tf32'}"
        return None, f"{name}: peak unknown"
    peak, what = cpu_nominal_peak_tflops()
    n = 4096
    a, b = torch.rand(n, n), torch.rand(n, n)
    gemm = 2 * n**3 / timed(lambda: a @ b, device, steps=3, warmup=1) / 1e12
    return peak, f"nominal fp32 FMA peak: {what}; a 4096^3 fp32 GEMM reaches {gemm:.3f} TFLOP/s here"


def amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_step_fn(net: torch.nn.Module, size: int, batch: int, device: torch.device, tuned: bool,
                  compile_: bool, nhwc: bool | None = None) -> Callable[[], None]:
    """One training step as LandmarkModule does it: targets on the device, dice loss, backward, Adam."""
    net = net.to(device).train()
    nhwc = (tuned and channels_last_default(device)) if nhwc is None else nhwc
    if nhwc:
        net = net.to(memory_format=torch.channels_last)
    if tuned and compile_:
        net.compile()
    fused = tuned and device.type == "cuda"
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    loss_fn = DiceLoss()
    dtype = amp_dtype(device) if tuned else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, generator=g).to(device)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    kp = (torch.rand(batch, 19, 2, generator=g) * (size - 1)).to(device)
    visible = torch.ones(batch, 19, dtype=torch.bool, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            pred = net(x)
            loss = loss_fn(pred, gaussian_heatmaps(kp, (size, size), 2.0, visible), visible)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    return step


def infer_fn(net: torch.nn.Module, size: int, batch: int, device: torch.device, tuned: bool,
             compile_: bool) -> Callable[[], torch.Tensor]:
    net = for_inference(net, device, "tuned" if tuned else "eager")  # tuned: BN folded, NHWC inside
    if tuned and compile_:
        net.compile()
    dtype = amp_dtype(device) if tuned else None
    x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(1)).to(device)

    def run() -> torch.Tensor:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return net(x)

    return run


def onnx_fn(net: torch.nn.Module, size: int, batch: int, tmp: str) -> Callable[[], np.ndarray]:
    import onnxruntime as ort

    path = Path(tmp) / f"unet{size}.onnx"
    example = torch.rand(1, 1, size, size)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter's chatter
        torch.onnx.export(net.eval(), (example,), str(path), input_names=["image"], output_names=["heatmaps"],
                          opset_version=18, dynamo=False, dynamic_axes={"image": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((batch, 1, size, size), dtype=np.float32)
    return lambda: session.run(None, {"image": x})[0]


def loader_rate(size: int, batch: int) -> str:
    """Cached, augmented training batches per second from the real datamodule (ISBI data, when present)."""
    if not DATA.is_dir():
        return f"skipped: {DATA} not found"
    from benchmarks.loader import build, run_epoch

    args = argparse.Namespace(root=str(DATA), input_size=size, batch_size=batch, workers=0, with_test=False)
    with tempfile.TemporaryDirectory() as cache:
        dm = build(args, cache)
        dm.setup("fit")
        loader = dm.train_dataloader()
        run_epoch(loader)
        n, s = zip(*(run_epoch(loader) for _ in range(2)), strict=True)
    return f"{sum(n) / sum(s):.0f} samples/s (cached, augmented, 1 process, batch {batch})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batch", type=int, default=None, help="default: 16 on GPU, 4 on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on GPU, 3 on CPU)")
    ap.add_argument("--model", choices=["unet", "unet_small"], default="unet")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="tuned path also uses torch.compile")
    ap.add_argument("--onnx", action="store_true", help="also time ONNX Runtime inference (CPU)")
    ap.add_argument("--no-loader", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--train-sizes", type=int, nargs="+", default=None, help="sizes to time training at (default: all)")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    batch = args.batch or (16 if gpu else 4)
    steps = args.steps or (20 if gpu else 3)
    warmup = 5 if gpu else 1
    if gpu:
        torch.backends.cudnn.benchmark = True
    L.seed_everything(0, verbose=False)

    print(f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {cpu_model()} ({os.cpu_count()} logical cores, torch {torch.get_num_threads()} threads)"
          + (f"; GPU {torch.cuda.get_device_name(device)}" if gpu else "; no GPU"))
    import onnxruntime

    print(f"python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(f"model:   {args.model}, batch {batch}, {steps} timed steps after {warmup} warm-up, device {device}")
    tuned_low = amp_dtype(device) is not None
    peak_eager, peak_eager_what = peak_tflops(device, False)
    peak_tuned, peak_tuned_what = (peak_eager, peak_eager_what) if not gpu else peak_tflops(device, tuned_low)
    print(f"peak:    eager {peak_eager and f'{peak_eager:.2f}'} TFLOP/s ({peak_eager_what}); "
          f"tuned {peak_tuned and f'{peak_tuned:.2f}'} TFLOP/s ({peak_tuned_what})")

    def line(what: str, flops: float, s: float, peak: float | None, base: float | None = None) -> float:
        rate = batch / s
        tf = flops * rate / 1e12
        frac = f", {100 * tf / peak:.1f}% of peak" if peak else ""
        ratio = f", x{base / s:.2f} vs eager" if base else ""
        print(f"  {what:<28} {rate:9.2f} samples/s  {1000 * s / batch:8.1f} ms/sample  {tf:7.3f} TFLOP/s{frac}{ratio}")
        return s

    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            net = build_net(args.model)
            f_train, f_inf = flops_per_sample(net, size, True), flops_per_sample(net, size, False)
            print(f"\n{size}x{size}: {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters, "
                  f"{f_train / 1e9:.1f} GFLOP/sample training, {f_inf / 1e9:.1f} GFLOP/sample inference")
            if not args.no_train and (args.train_sizes is None or size in args.train_sizes):
                base = line("train eager fp32", f_train,
                            timed(train_step_fn(build_net(args.model), size, batch, device, False, False),
                                  device, steps, warmup), peak_eager)
                line("train tuned" + (" +compile" if args.compile else ""), f_train,
                     timed(train_step_fn(build_net(args.model), size, batch, device, True, args.compile),
                           device, steps, warmup), peak_tuned, base)
                if not gpu:  # the other memory format than this CPU's default (NHWC with AVX-512, else NCHW)
                    other = not channels_last_default(device)
                    line(f"train {'NHWC' if other else 'NCHW'} (not this CPU's default)", f_train,
                         timed(train_step_fn(build_net(args.model), size, batch, device, True, False, nhwc=other),
                               device, steps, warmup), peak_tuned, base)
            eager = infer_fn(net, size, batch, device, False, False)
            tuned = infer_fn(net, size, batch, device, True, args.compile)
            diff = float((eager().float() - tuned().float()).abs().max())
            base = line("inference eager fp32", f_inf, timed(eager, device, steps, warmup), peak_eager)
            line("inference tuned", f_inf, timed(tuned, device, steps, warmup), peak_tuned, base)
            if args.onnx:
                ort_run = onnx_fn(net, size, batch, tmp)
                ort_diff = float(np.abs(ort_run() - eager().float().cpu().numpy()).max())
                line("inference onnxruntime (CPU)", f_inf, timed(ort_run, torch.device("cpu"), steps, warmup),
                     peak_eager, base)
                print(f"  max |heatmap diff| vs eager: tuned {diff:.2e}, onnxruntime {ort_diff:.2e}")
            else:
                print(f"  max |heatmap diff| vs eager: tuned {diff:.2e}")
    if not args.no_loader:
        for size in args.sizes:
            print(f"\nloader {size}x{size}: {loader_rate(size, batch)}")


if __name__ == "__main__":
    main()
