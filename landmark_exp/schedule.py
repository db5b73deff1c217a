"""A learning-rate schedule that ends when `trainer.max_time` does.

A time-boxed run (the GPU session's `+trainer.max_time=...`, several trainings sharing one device) that
Lightning's timer stops in the middle of a cosine schedule keeps a model trained at a high learning rate. With
`max_time` set, `ScheduleFitsTime` measures the epochs as they go and sets the number of epochs that fit in the
time left (never more than `max_epochs`), and a cosine schedule's length to match, so the schedule anneals to its
end; without `max_time` it does nothing."""

from __future__ import annotations

import math
import time

import lightning as L
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import CosineAnnealingLR


def epochs_that_fit(done: int, seconds_per_epoch: float, seconds_left: float, reserve: float, max_epochs: int) -> int:
    """The total epochs to run: the `done` ones plus those that end before the last `reserve` seconds of the time
    left (none when it is already taken: the fit stops now), at most `max_epochs`. A fixed reserve keeps the plan
    steady from epoch to epoch when the epochs take what was measured."""
    more = math.floor((seconds_left - reserve) / max(seconds_per_epoch, 1e-9))
    return min(max_epochs, done + max(more, 0))


class ScheduleFitsTime(L.Callback):
    """With `trainer.max_time`: after each epoch (from the second, the first carrying start-up costs), the fit's
    epochs and every cosine schedule's length become what ends within `margin` of the whole time, up to the
    configured `max_epochs` (they may grow back when a device shared with other runs frees up)."""

    def __init__(self, margin: float = 0.9) -> None:
        self.margin = margin
        self._max_epochs: int | None = None
        self._first_epoch_end: tuple[float, int] | None = None
        self._t_max: list[int] | None = None  # the cosine lengths as configured, kept in checkpoints

    def state_dict(self) -> dict:
        return {"t_max": self._t_max}

    def load_state_dict(self, state_dict: dict) -> None:
        self._t_max = state_dict.get("t_max")

    @staticmethod
    def _timer(trainer: L.Trainer) -> Timer | None:
        """The timer Lightning adds for `max_time` (there is none without it)."""
        return next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._max_epochs = trainer.max_epochs
        self._first_epoch_end = None
        cosines = [c.scheduler for c in trainer.lr_scheduler_configs if isinstance(c.scheduler, CosineAnnealingLR)]
        if self._t_max is None:  # a new run: the lengths as configured
            self._t_max = [s.T_max for s in cosines]
        elif self._timer(trainer) is None and len(self._t_max) == len(cosines):
            # resumed without max_time from a run that shortened its schedule: back to the configured length
            for s, t_max in zip(cosines, self._t_max, strict=True):
                s.T_max = t_max

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = self._timer(trainer)
        if timer is None or self._max_epochs is None or self._max_epochs < 0:
            return
        now, done = time.monotonic(), trainer.current_epoch + 1
        if self._first_epoch_end is None:
            self._first_epoch_end = (now, done)
            return
        seconds_per_epoch = (now - self._first_epoch_end[0]) / (done - self._first_epoch_end[1])
        left, elapsed = timer.time_remaining("train") or 0.0, timer.time_elapsed("train")
        total = epochs_that_fit(done, seconds_per_epoch, left, (1 - self.margin) * (left + elapsed), self._max_epochs)
        if total < self._max_epochs and trainer.fit_loop.max_epochs == self._max_epochs:
            rank_zero_info(f"max_time: about {total} of {self._max_epochs} epochs fit; the epochs and the cosine "
                           "schedule end there (planned again after every epoch)")
        trainer.fit_loop.max_epochs = total
        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, CosineAnnealingLR):
                steps = trainer.num_training_batches if config.interval == "step" else 1
                config.scheduler.T_max = max(total * steps // config.frequency, 1)
