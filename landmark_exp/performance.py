"""Speed switches, in one place: memory format, torch.compile, fused optimizers, matmul precision, and the
inference-time graph rewrite (batch norm folded into the convolutions). Training switches are a callback, so
the LightningModule stays free of device policy; `auto` follows docs/results.md ("Throughput").
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

AUTO = "auto"


def channels_last_default(device: torch.device) -> bool:
    """NHWC on GPUs (tensor-core convolutions want it) and on CPUs with AVX-512, where training ran 1.2-1.4x
    faster in it; NCHW on AVX2 CPUs, where it ran 0.73x (docs/results.md "Throughput")."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


class PerformanceTuning(L.Callback):
    """Apply the configured speed switches to the network before fitting/testing. `compile` works in place, so
    state-dict keys stay unchanged and checkpoints load without it; `matmul_precision` high lets fp32 matmuls
    use TF32 on GPUs that have it."""

    def __init__(self, channels_last: bool | str = AUTO, compile: bool = False, compile_mode: str | None = None,
                 matmul_precision: str | None = "high") -> None:
        self.channels_last, self.compile, self.compile_mode = channels_last, compile, compile_mode
        self.matmul_precision = matmul_precision
        self._nhwc = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        if self.matmul_precision and device.type == "cuda":  # CPU runs keep exact fp32 (deterministic resume)
            torch.set_float32_matmul_precision(self.matmul_precision)
        self._nhwc = channels_last_default(device) if self.channels_last == AUTO else bool(self.channels_last)
        net = pl_module.net
        if self._nhwc:
            net.to(memory_format=torch.channels_last)
        if self.compile and not getattr(net, "_landmark_compiled", False):
            net.compile(mode=self.compile_mode)
            net._landmark_compiled = True

    def _to_nhwc(self, batch: Any) -> None:
        image = batch.get("image") if self._nhwc and isinstance(batch, dict) else None
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            batch["image"] = image.contiguous(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._to_nhwc(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._to_nhwc(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._to_nhwc(batch)


def optimizer_options(optimizer_cfg: dict, device: torch.device) -> dict:
    """The optimizer config with `fused: auto` resolved: fused kernels on CUDA where the class has them."""
    cfg = dict(optimizer_cfg)
    fused = cfg.pop("fused", AUTO)
    if fused == AUTO:
        target = cfg.get("_target_", "")
        fused = device.type == "cuda" and target.rsplit(".", 1)[-1] in ("Adam", "AdamW", "SGD")
    if fused:
        cfg["fused"] = True
    return cfg


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` with every Conv2d -> BatchNorm2d pair (adjacent in a Sequential) folded into
    one convolution: the same function up to float rounding, one pass over memory less per pair."""
    net = copy.deepcopy(net).eval()
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
    return net


INFERENCE_RUNTIMES = ("eager", "tuned")


class InferenceNet(nn.Module):
    """A network folded for inference that takes and returns ordinary (NCHW) tensors, running NHWC inside."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)
        self.out_channels = getattr(net, "out_channels", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).contiguous()


def for_inference(net: nn.Module, device: str | torch.device = "cpu", runtime: str = "tuned") -> nn.Module:
    """The network as prediction runs it. `eager`: as trained, in eval mode. `tuned`: batch norm folded and
    NHWC (faster on GPUs and CPUs, docs/results.md "Throughput"); the same heatmaps to float rounding."""
    if runtime not in INFERENCE_RUNTIMES:
        raise ValueError(f"runtime must be one of {INFERENCE_RUNTIMES}, not {runtime!r}")
    device = torch.device(device)
    if runtime == "eager" or isinstance(net, InferenceNet):
        return net.to(device).eval()
    return InferenceNet(fold_batchnorm(net.to(device))).eval()
