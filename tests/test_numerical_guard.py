"""A non-finite loss or gradient stops the run naming the step, before it reaches the weights (or skips the batch)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, compose

from landmark_exp.run import train


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
