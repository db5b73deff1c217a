"""ScheduleFitsTime: a time-boxed run ends its cosine schedule inside its time, not halfway through it."""

from __future__ import annotations

import time
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from landmark_exp.schedule import ScheduleFitsTime, epochs_that_fit


@pytest.mark.parametrize(("done", "per_epoch", "left", "max_epochs", "expected"), [
    (2, 1.0, 10.0, 100, 10),     # 8 more end before the last 2 s
    (2, 1.0, 1000.0, 100, 100),  # never more than configured
    (5, 2.0, 2.5, 100, 5),       # the reserve is reached: stop after this epoch
    (5, 2.0, -3.0, 100, 5),      # past the time (a late estimate): the same, never fewer than done
])
def test_epochs_that_fit_counts_what_the_time_left_holds_before_the_reserve(done, per_epoch, left, max_epochs,
                                                                             expected):
    assert epochs_that_fit(done, per_epoch, left, 2.0, max_epochs) == expected


def test_the_plan_holds_steady_while_epochs_take_what_was_measured():
    plans = {epochs_that_fit(done, 1.0, 30.0 - done, 3.0, 100) for done in range(2, 20)}
    assert plans == {27}


class _Sleepy(L.LightningModule):
    """Two steps of `pause` seconds per epoch, Adam under a cosine schedule over max_epochs."""

    def __init__(self, max_epochs: int, pause: float) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.max_epochs, self.pause = max_epochs, pause

    def training_step(self, batch, batch_idx):
        time.sleep(self.pause)
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=0.1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_epochs, eta_min=0.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}


def _fit(max_epochs: int, max_time: dict | None, pause: float) -> L.Trainer:
    trainer = L.Trainer(max_epochs=max_epochs, max_time=max_time, callbacks=[ScheduleFitsTime(margin=0.5)],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(_Sleepy(max_epochs, pause), DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2))
    return trainer


def test_a_run_with_max_time_shortens_its_epochs_and_anneals_to_the_end_before_the_timer_stops_it():
    start = time.monotonic()
    trainer = _fit(max_epochs=1000, max_time={"seconds": 4}, pause=0.05)
    assert time.monotonic() - start < 4.5
    planned = trainer.fit_loop.max_epochs
    assert 3 <= planned < 1000
    assert trainer.current_epoch == planned              # ended by its epochs, not by the timer
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr < 1e-3 * 0.1                               # the cosine reached its end (eta_min 0)


def test_without_max_time_nothing_changes():
    trainer = _fit(max_epochs=3, max_time=None, pause=0.0)
    assert trainer.fit_loop.max_epochs == 3 and trainer.lr_scheduler_configs[0].scheduler.T_max == 3


def test_a_run_resumed_without_max_time_gets_its_configured_cosine_length_back():
    def trainer_with(t_max: int) -> SimpleNamespace:
        opt = torch.optim.Adam(torch.nn.Linear(1, 1).parameters())
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
        return SimpleNamespace(max_epochs=100, callbacks=[], lr_scheduler_configs=[
            SimpleNamespace(scheduler=cosine, interval="epoch", frequency=1)])

    first = ScheduleFitsTime()
    first.on_train_start(trainer_with(100), None)     # a new run records the configured length ...
    saved = first.state_dict()                          # ... and its checkpoint keeps it; the time-boxed run
    resumed = trainer_with(30)                          # then saved a cosine shortened to 30 epochs
    again = ScheduleFitsTime()
    again.load_state_dict(saved)
    again.on_train_start(resumed, None)
    assert resumed.lr_scheduler_configs[0].scheduler.T_max == 100
