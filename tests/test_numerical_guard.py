"""A non-finite loss or gradient stops the run naming the step, before it reaches the weights (or skips the batch);
a non-finite validation metric stops it naming the epoch and the metric, never becomes best.ckpt, and no NaN
metric is ever reported."""

from __future__ import annotations

import json
import math

import faults  # noqa: F401  registers faults.NaNLoss (configs build registered classes only)
import lightning as L
import numpy as np
import pytest
import torch
from conftest import TINY, compose

from landmark_exp.checkpoints import ModelCheckpoint
from landmark_exp.guards import NonFiniteError, check_finite_metrics
from landmark_exp.models.unet import UNet
from landmark_exp.training import train


def _cfg(tmp_path, isbi_root, *extra):
    over = ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none",
            "trainer.max_epochs=2", "callbacks.progress_bar=null", "loss._target_=faults.NaNLoss", *extra]
    return compose("train", over, tmp_path / "run")


def _finite(ckpt) -> bool:
    return all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize("kind,problem", [("loss", "non-finite loss (nan)"), ("grad", "non-finite gradient (norm nan)")])
def test_nonfinite_loss_or_gradient_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, isbi_root, kind, problem, capsys):
    # 10 training images - val 2 = 8 = 2 batches per epoch: training call 3 is epoch 1, batch 0, step 2
    with pytest.raises(SystemExit) as stop:
        train(_cfg(tmp_path, isbi_root, "+loss.after=2", f"+loss.kind={kind}"))
    assert stop.value.code == 1
    error = (tmp_path / "run" / "error.txt").read_text().strip().splitlines()[-1]
    assert error.startswith(f"NonFiniteError: {problem} at step 2 (epoch 1, batch 0); training stopped")
    assert "last.ckpt" in error and "training stopped:" in capsys.readouterr().out
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 2 and _finite(last)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_skip_mode_drops_the_bad_batch_and_finishes(tmp_path, isbi_root):
    train(_cfg(tmp_path, isbi_root, "+loss.after=2", "+loss.count=1", "trainer_guard.on_nonfinite=skip"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_nonfinite_steps"] == [2]
    assert _finite(torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True))


def test_skip_mode_still_stops_a_run_that_does_not_recover(tmp_path, isbi_root):
    with pytest.raises(SystemExit):
        train(_cfg(tmp_path, isbi_root, "+loss.after=0", "trainer_guard.on_nonfinite=skip",
                   "trainer_guard.max_consecutive_skips=2"))
    assert "3 batches in a row" in (tmp_path / "run" / "error.txt").read_text()


def test_unknown_guard_action_is_refused(tmp_path, isbi_root):
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        train(_cfg(tmp_path, isbi_root, "trainer_guard.on_nonfinite=ignore"))


def _nan_in_eval_mode_after(monkeypatch, train_batches: int) -> None:
    """The network turns NaN in eval mode only, once it has run `train_batches` training batches: what a huge
    learning rate does (its batch-norm running statistics overflow) while the training loss stays finite."""
    forward, seen = UNet.forward, {"train": 0}

    def patched(self, x):
        out = forward(self, x)
        if self.training:
            seen["train"] += 1
            return out
        return out * math.nan if seen["train"] >= train_batches else out

    monkeypatch.setattr(UNet, "forward", patched)


def test_nonfinite_validation_metric_with_a_finite_training_loss_stops_naming_the_epoch_and_keeps_a_finite_best(
        tmp_path, isbi_root, monkeypatch, capsys):
    # 2 training batches per epoch: epoch 0 validates after 2 (finite), epoch 1 after 4 (NaN)
    _nan_in_eval_mode_after(monkeypatch, train_batches=3)
    with pytest.raises(SystemExit) as stop:
        train(_cfg(tmp_path, isbi_root, "loss._target_=landmark_exp.losses.DiceLoss"))
    assert stop.value.code == 1
    error = (tmp_path / "run" / "error.txt").read_text().strip().splitlines()[-1]
    assert error.startswith("NonFiniteError: non-finite validation metric")
    assert "val/loss (nan)" in error and "in epoch 1's validation (step 4); training stopped" in error
    assert error.endswith("last.ckpt")
    said = [line for line in capsys.readouterr().out.splitlines() if "training stopped:" in line]
    assert len(said) == 1 and said[0].startswith("training stopped: non-finite validation metric")
    checkpoints = tmp_path / "run" / "checkpoints"
    best = torch.load(checkpoints / "best.ckpt", weights_only=True)
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert best["epoch"] == 0 and last["epoch"] == 0  # the diverged epoch wrote neither
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert torch.isfinite(state["best_model_score"]) and state["best_model_path"].endswith("best.ckpt")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_nonfinite_validation_metric_in_the_sanity_check_stops_before_training(tmp_path, isbi_root, monkeypatch):
    _nan_in_eval_mode_after(monkeypatch, train_batches=0)
    with pytest.raises(SystemExit) as stop:
        train(_cfg(tmp_path, isbi_root, "loss._target_=landmark_exp.losses.DiceLoss"))
    assert stop.value.code == 1
    error = (tmp_path / "run" / "error.txt").read_text().strip().splitlines()[-1]
    assert "in the sanity check before training epoch 0" in error and "none written yet" in error
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()


def test_nonfinite_test_metric_stops_before_any_metric_is_reported(tmp_path, isbi_root, monkeypatch, capsys):
    # NaN output while testing only: the decoder still gives finite positions (test/mre), test/loss is NaN
    forward, fit_test, testing = UNet.forward, L.Trainer.test, {"now": False}

    def test(self, *args, **kwargs):
        testing["now"] = True
        try:
            return fit_test(self, *args, **kwargs)
        finally:
            testing["now"] = False

    monkeypatch.setattr(UNet, "forward", lambda self, x: forward(self, x) * (math.nan if testing["now"] else 1.0))
    monkeypatch.setattr(L.Trainer, "test", test)
    with pytest.raises(SystemExit) as stop:
        train(_cfg(tmp_path, isbi_root, "loss._target_=landmark_exp.losses.DiceLoss", "trainer.max_epochs=1"))
    assert stop.value.code == 1
    error = (tmp_path / "run" / "error.txt").read_text().strip().splitlines()[-1]
    assert error.startswith("NonFiniteError: non-finite test metric test/loss (nan) from ")
    assert "best.ckpt; testing stopped" in error and "training stopped: non-finite test" in capsys.readouterr().out
    assert not (tmp_path / "run" / "metrics.json").exists()


class _Scores(L.LightningModule):
    """One training and one validation batch per epoch; logs `scores[epoch]` as val/score."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(1, 2)))

    val_dataloader = train_dataloader


class _BestAfterEachEpoch(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[float | None, int | None]] = []

    def on_train_epoch_start(self, trainer, pl_module):  # the state the previous epoch's checkpoints left
        if trainer.current_epoch > 0:
            self._record(trainer)

    def on_train_end(self, trainer, pl_module):
        self._record(trainer)

    def _record(self, trainer):
        cb = trainer.checkpoint_callback
        epoch = torch.load(cb.best_model_path, weights_only=True)["epoch"] if cb.best_model_path else None
        self.seen.append((None if cb.best_model_score is None else float(cb.best_model_score), epoch))


@pytest.mark.parametrize("mode,scores,expected", [
    ("min", [math.nan, 2.0, -math.inf, math.nan, 1.0, math.inf],
     [(None, None), (2.0, 1), (2.0, 1), (2.0, 1), (1.0, 4), (1.0, 4)]),
    ("max", [math.nan, 1.0, math.inf, 2.0], [(None, None), (1.0, 1), (1.0, 1), (2.0, 3)]),
])
def test_model_checkpoint_never_saves_a_nonfinite_score_as_best(tmp_path, mode, scores, expected):
    seen = _BestAfterEachEpoch()
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val/score", mode=mode, save_last=True,
                           best_weights_only=True)
    trainer = L.Trainer(max_epochs=len(scores), callbacks=[ckpt, seen], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    with pytest.warns(UserWarning, match="not saved as a best checkpoint"):
        trainer.fit(_Scores(scores))
    assert seen.seen == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == len(scores) - 1  # written as ever


def test_check_finite_metrics_passes_finite_numbers_names_and_none():
    check_finite_metrics({"n_images": 3, "mre": 1.25, "split": "test", "best_val_mre": None, "flag": True,
                          "loss": torch.tensor(0.5), "sd": np.float32(0.1), "steps": [2, 5], "big": 10**400,
                          "per_landmark": [{"landmark": 1, "name": "sella", "mre": 1.0}]}, "test")


@pytest.mark.parametrize("metrics,named", [
    ({"n_images": 3, "mre": math.nan, "sdr_2": 0.35, "per_landmark": [{"name": "sella", "mre": math.nan}]},
     r"non-finite test metric mre \(nan\) \(and 1 more\)"),
    ({"mre": 1.0, "per_landmark": [{"name": "sella", "sd": 0.0}, {"name": "nasion", "sd": math.inf}]},
     r"non-finite test metric per_landmark\[nasion\]\.sd \(inf\):"),
    ({"test/loss": torch.tensor(-math.inf)}, r"metric test/loss \(-inf\):"),
    ({"errors": np.array([1.0, math.nan])}, r"metric errors \(nan\):"),
    ({"extra": {"best_val_mre": np.float64(math.nan)}}, r"metric extra\.best_val_mre \(nan\):"),
])
def test_check_finite_metrics_names_the_first_nonfinite_metric(metrics, named):
    with pytest.raises(NonFiniteError, match=named):
        check_finite_metrics(metrics, "test")
