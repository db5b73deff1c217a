"""Faults injected into real training runs by Hydra overrides (tests put this folder on PYTHONPATH):
a run that waits to be killed, a loss that turns NaN, a simulated CUDA out-of-memory error."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import torch

from landmark_exp.losses import DiceLoss
from landmark_exp.registry import register


class PauseMidEpoch(L.Callback):
    """Announce (a file) that training reached `batch` of `epoch`, then wait there to be killed."""

    def __init__(self, epoch: int, marker: str, batch: int = 1, seconds: float = 120.0) -> None:
        self.epoch, self.batch, self.marker, self.seconds = epoch, batch, Path(marker), seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.marker.write_text(str(trainer.global_step))
            time.sleep(self.seconds)


class NaNLoss(DiceLoss):
    """Dice loss whose training calls number `after`.. `after + count - 1` (0-based) go wrong:
    kind="loss" returns NaN, kind="grad" returns a finite loss whose gradient is NaN."""

    def __init__(self, after: int = 0, count: int = 10**9, kind: str = "loss", **kwargs) -> None:
        super().__init__(**kwargs)
        self.after, self.count, self.kind, self.calls = after, count, kind, 0

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        loss = super().forward(pred, target, weight)
        if not pred.requires_grad:  # validation / test
            return loss
        self.calls += 1
        if not self.after < self.calls <= self.after + self.count:
            return loss
        if self.kind == "grad":
            return loss + (pred.sum() * 0).sqrt()  # value + 0, gradient 0 * inf = NaN
        return loss * math.nan


class OutOfMemoryLoss(DiceLoss):
    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")


for _cls in (PauseMidEpoch, NaNLoss, OutOfMemoryLoss):  # configs may name only registered classes
    register(f"faults.{_cls.__name__}", _cls)
