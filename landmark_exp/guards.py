"""Numerical guard: a non-finite loss or gradient stops the run (or skips the batch) before it reaches the weights.

Checked after backward, before the optimizer step (`on_before_optimizer_step`), so the
weights, and every checkpoint written afterwards, stay those of the last good step. The
checkpoints already on disk are never touched: last.ckpt is the last good epoch.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

ACTIONS = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf; the message names the step."""


class NonFiniteGuard(L.Callback):
    """on_nonfinite: "stop" raises `NonFiniteError` naming the step; "skip" drops that batch's update
    (and still stops after `max_consecutive_skips` bad batches in a row: the run is not recovering).

    Gradients are not checked under fp16 mixed precision: its GradScaler skips inf steps itself.
    """

    def __init__(self, on_nonfinite: str = "stop", max_consecutive_skips: int = 20) -> None:
        if on_nonfinite not in ACTIONS:
            raise ValueError(f"trainer_guard.on_nonfinite must be one of {ACTIONS}, got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.skipped: list[int] = []  # global steps whose update was dropped
        self._consecutive = 0
        self._loss: torch.Tensor | None = None
        self._batch = -1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int) -> None:
        self._batch = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        loss = float(self._loss) if self._loss is not None else math.nan
        if not math.isfinite(loss):
            problem = f"non-finite loss ({loss})"
        elif getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16: GradScaler handles inf gradients by skipping the step
        else:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            if math.isfinite(norm):
                self._consecutive = 0
                return
            problem = f"non-finite gradient (norm {norm})"
        where = f"at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch})"
        self._consecutive += 1
        if self.on_nonfinite == "skip" and self._consecutive <= self.max_consecutive_skips:
            optimizer.zero_grad(set_to_none=True)  # no gradient: the optimizer leaves every parameter as it is
            self.skipped.append(trainer.global_step)
            rank_zero_warn(f"{problem} {where}: batch skipped (trainer_guard.on_nonfinite=skip)")
            return
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        reason = (f"{self._consecutive} batches in a row" if self.on_nonfinite == "skip"
                  else "set trainer_guard.on_nonfinite=skip to skip such batches")
        raise NonFiniteError(f"{problem} {where}; training stopped ({reason}); last good checkpoint: {last}")
