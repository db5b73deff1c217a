"""Numerical guard: a non-finite loss or gradient stops the run (or skips the batch) before it reaches the weights;
a non-finite validation metric stops it before that epoch's checkpoints are written, a non-finite test metric
before anything is reported.

Metrics are checked too because a finite training loss does not mean a sound model: with a huge learning rate
the batch-norm running statistics overflow, so the network is finite in training mode and NaN in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

ACTIONS = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf; the message names the step (or the epoch and the metric)."""


def _nonfinite_value(value: object) -> float | None:
    """The first NaN/inf in a float (Python, NumPy, or any element of a tensor or array); None if there is none
    or `value` is no float at all (integers, names, None)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy() if value.is_floating_point() else None  # bf16 too
    if isinstance(value, np.ndarray | np.floating):
        bad = np.asarray(value)[~np.isfinite(value)] if np.issubdtype(value.dtype, np.floating) else ()
        return float(bad[0]) if len(bad) else None
    if isinstance(value, float) and not math.isfinite(value):
        return value
    return None


def nonfinite_metrics(metrics: Mapping[str, object], prefix: str = "") -> list[tuple[str, float]]:
    """(name, value) of every NaN/inf number in `metrics`, in order; nested mappings and lists are searched
    too (e.g. a summary's per_landmark[sella].mre: a list item is named by its "name" key, else its index)."""
    found: list[tuple[str, float]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found += nonfinite_metrics(value, f"{name}.")
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
            for i, item in enumerate(value):
                label = item.get("name", i) if isinstance(item, Mapping) else i
                found += nonfinite_metrics({f"[{label}]": item}, name)
        else:
            bad = _nonfinite_value(value)
            if bad is not None:
                found.append((name, bad))
    return found


def check_finite_metrics(metrics: Mapping[str, object], where: str) -> None:
    """Raise `NonFiniteError` naming the first non-finite metric (`where`: e.g. "test"), so that no command
    reports NaN scores and exits 0 (a NaN test MRE is a diverged model, not a result). None and text pass."""
    bad = nonfinite_metrics(metrics)
    if bad:
        name, value = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise NonFiniteError(f"non-finite {where} metric {name} ({value}){more}: the model diverged or its "
                             "output is NaN/inf; no metrics reported")


class NonFiniteGuard(L.Callback):
    """on_nonfinite: "stop" raises `NonFiniteError` naming the step; "skip" drops that batch's update (and
    still stops after `max_consecutive_skips` bad batches in a row). A non-finite validation or test metric
    always stops. Checked after backward, before the optimizer step: the weights stay the last good step's."""

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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Stop on a NaN/inf val/ metric before ModelCheckpoint sees it (Lightning calls checkpoint callbacks
        last), in either mode and in the sanity check too: NaN there means broken weights or data."""
        bad = self._nonfinite_logged(trainer, "val/")
        if not bad:
            return
        epoch = trainer.current_epoch
        where = (f"in the sanity check before training epoch {epoch}" if trainer.sanity_checking
                 else f"in epoch {epoch}'s validation (step {trainer.global_step})")
        what = "training" if trainer.state.fn == "fit" else str(trainer.state.fn)
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        raise NonFiniteError(f"non-finite validation {bad} {where}; {what} stopped (the weights diverged, e.g. "
                             f"optimizer.lr too high, or the data hold NaN/inf); last good checkpoint: {last}")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Stop on a NaN/inf test metric before anything is reported (a NaN output still decodes to finite
        positions, so test/mre alone would look like a result)."""
        bad = self._nonfinite_logged(trainer, "test/")
        if bad:
            # evaluate.py loads its checkpoint(s) itself: the module names them (members)
            tested = trainer.ckpt_path or ", ".join(getattr(pl_module, "members", None) or ["the weights in memory"])
            raise NonFiniteError(f"non-finite test {bad} from {tested}; testing stopped (the model's output is "
                                 "NaN/inf: diverged weights, or NaN/inf in the data); no metrics reported")

    @staticmethod
    def _nonfinite_logged(trainer: L.Trainer, prefix: str) -> str:
        """The words "metric val/loss (nan)" for the non-finite metrics logged under `prefix`, "" if none;
        rank 0's answer on every process, so that all of them stop or none (else DDP would hang)."""
        found = nonfinite_metrics({k: v for k, v in trainer.callback_metrics.items() if k.startswith(prefix)})
        bad = ", ".join(f"{name} ({value})" for name, value in found)
        bad = f"metric{'s' if len(found) > 1 else ''} {bad}" if found else ""
        return trainer.strategy.broadcast(bad, src=0)
