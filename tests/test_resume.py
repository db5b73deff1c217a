"""A killed run continues where it stopped and ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, TINY, compose, write_isbi_fixture

from landmark_exp.registry import PLUGINS
from landmark_exp.resume import TYPED_COMMAND, find_run, override_key, resume_argv
from landmark_exp.training import train

# deterministic, with augmentation on (its randomness must come back too) and early stopping (its state too)
EXACT = [*TINY, "trainer.max_epochs=4", "trainer.deterministic=true", "logger=csv", "callbacks.progress_bar=null",
         "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
         "+callbacks.early_stopping.monitor=val/mre", "+callbacks.early_stopping.patience=100",
         "callbacks.model_checkpoint.last_io_share=null"]  # last.ckpt every epoch, so the kill's epoch is known


def _ckpt_epoch(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def _kill_when_paused(cmd: list[str], marker: Path, timeout: float = 240) -> None:
    """Run `cmd` until it writes `marker` (see faults.py), then SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), PLUGINS: "faults"}  # faults.py, registered
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}): {proc.stderr.read()[-3000:]}"


@pytest.mark.slow
def test_sigkilled_run_resumed_with_resume_dir_matches_the_uninterrupted_run(tmp_path):
    root = write_isbi_fixture(tmp_path / "isbi", n_train=16)
    data = ["data=isbi2015", f"data.source.root={root}", f"paths.cache_dir={tmp_path}/cache"]
    run = tmp_path / "outputs" / "killed"
    marker = tmp_path / "paused"
    pause = ["+callbacks.pause._target_=faults.PauseMidEpoch", "+callbacks.pause.epoch=2", f"+callbacks.pause.marker={marker}"]
    cmd = [sys.executable, "train.py", *data, *EXACT, *pause, f"paths.log_dir={tmp_path}/outputs", f"hydra.run.dir={run}"]
    # killed in the middle of epoch 3 of 4, two optimizer steps after last.ckpt of epoch 2 was written
    _kill_when_paused(cmd, marker)
    assert _ckpt_epoch(run / "checkpoints" / "last.ckpt") == 1 and not (run / "metrics.json").exists()

    proc = subprocess.run([sys.executable, "train.py", f"resume={tmp_path}/outputs", f"paths.log_dir={tmp_path}/outputs",
                           "~callbacks.pause"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resuming {run}" in proc.stdout

    ref = tmp_path / "reference"
    expected = train(compose("train", [*data, *EXACT], ref))
    got = json.loads((run / "metrics.json").read_text())
    for k in ("mre", "sd", "median", "sdr_2", "sdr_4", "best_val_mre"):
        assert got[k] == pytest.approx(expected[k] if k != "best_val_mre" else expected["val_mre"], abs=1e-6), k

    a = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(ref / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3 and a["global_step"] == b["global_step"]
    for k, v in b["state_dict"].items():
        assert torch.allclose(a["state_dict"][k].double(), v.double(), atol=1e-6), k
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]
    stop_a = next(v for k, v in a["callbacks"].items() if k.startswith("EarlyStopping"))
    stop_b = next(v for k, v in b["callbacks"].items() if k.startswith("EarlyStopping"))
    assert stop_a["wait_count"] == stop_b["wait_count"] and float(stop_a["best_score"]) == pytest.approx(float(stop_b["best_score"]), abs=1e-6)
    # the resumed process recorded how it was started, after the first start
    info = json.loads((run / "run_info.json").read_text())
    assert "resume=" in info["typed_command"] and "ckpt_path=" in info["command"] and len(info["previous_starts"]) == 1


def test_ckpt_path_into_a_new_run_directory_keeps_the_best_score_and_the_old_files(tmp_path, isbi_root):
    base = ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache", *TINY,
            "logger=none", "trainer.max_epochs=2", "scheduler=none"]
    train(compose("train", base, tmp_path / "a"))
    old = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    old_state = next(v for k, v in old["callbacks"].items() if k.startswith("ModelCheckpoint"))
    # resumed elsewhere with a learning rate that cannot improve: the old best stays the best
    train(compose("train", [*base, "trainer.max_epochs=3", "optimizer.lr=0", f"ckpt_path={tmp_path}/a/checkpoints/last.ckpt"],
                  tmp_path / "b"))
    new = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    new_state = next(v for k, v in new["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert new["epoch"] == 2
    assert float(new_state["best_model_score"]) <= float(old_state["best_model_score"])
    assert (tmp_path / "a" / "checkpoints" / "best.ckpt").is_file()  # never deleted by the other run
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["best_val_mre"] == pytest.approx(float(new_state["best_model_score"]))


def _fake_run(path: Path, overrides: list[str], mtime: float) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / "checkpoints").mkdir()
    (path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    os.utime(path / "checkpoints" / "last.ckpt", (mtime, mtime))
    return path


def test_resume_rewrites_the_command_line_to_the_runs_own_overrides_checkpoint_and_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(TYPED_COMMAND, "")  # resume_argv sets it for run_info.json; undone after the test
    old = _fake_run(tmp_path / "train" / "runs" / "a", ["data=isbi2015", "seed=3", "ckpt_path=x"], 1_000)
    new = _fake_run(tmp_path / "train" / "multiruns" / "s" / "1", ["optimizer.lr=0.01", "seed=5"], 2_000)
    assert find_run(tmp_path) == new and find_run(old) == old
    argv = resume_argv(["train.py", f"resume={old}", "seed=4", "+trainer.max_time=1"], ROOT / "landmark_exp" / "conf", "train")
    assert argv == ["train.py", "data=isbi2015", "seed=4", "+trainer.max_time=1",
                    f"ckpt_path={old}/checkpoints/last.ckpt", f"hydra.run.dir={old}"]
    # latest: the newest last.ckpt under ${paths.log_dir}/train
    argv = resume_argv(["train.py", "resume=latest", f"paths.log_dir={tmp_path}"], ROOT / "landmark_exp" / "conf", "train")
    assert argv[1:3] == ["optimizer.lr=0.01", "seed=5"] and argv[-1] == f"hydra.run.dir={new}"
    assert resume_argv(["train.py", "seed=1"], ROOT / "landmark_exp" / "conf", "train") == ["train.py", "seed=1"]
    with pytest.raises(SystemExit, match="multirun"):
        resume_argv(["train.py", "-m", f"resume={old}"], ROOT / "landmark_exp" / "conf", "train")
    with pytest.raises(SystemExit, match="no checkpoints/last.ckpt"):
        resume_argv(["train.py", f"resume={tmp_path / 'nothing'}"], ROOT / "landmark_exp" / "conf", "train")
    assert override_key("+a.b=1") == "a.b" and override_key("~x") == "x"


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _Clock(L.Callback):
    """A fake clock: each training epoch 'takes' one second (runs before ModelCheckpoint's hooks)."""

    def __init__(self) -> None:
        self.now = 0.0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.now += 1.0


def _written_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, share: float | None, epochs: int) -> list[int]:
    """Train `epochs` epochs where each last.ckpt write 'takes' 2 s; the epochs at which last.ckpt was written."""
    from landmark_exp import checkpoints

    clock, written = _Clock(), []
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: clock.now)
    save = checkpoints._ModelCheckpoint._save_checkpoint

    def timed_save(self: checkpoints.ModelCheckpoint, trainer: L.Trainer, filepath: str) -> None:
        save(self, trainer, filepath)
        written.append(trainer.current_epoch)
        clock.now += 2.0

    monkeypatch.setattr(checkpoints._ModelCheckpoint, "_save_checkpoint", timed_save)
    ckpt = checkpoints.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, last_io_share=share)
    data = torch.utils.data.TensorDataset(torch.rand(4, 2))
    trainer = L.Trainer(max_epochs=epochs, callbacks=[clock, ckpt], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(_Tiny(), torch.utils.data.DataLoader(data, batch_size=2))
    assert _ckpt_epoch(tmp_path / "last.ckpt") == epochs - 1  # the final state is always on disk
    return written


def test_last_checkpoint_writes_take_at_most_their_share_of_the_training_time(tmp_path, monkeypatch):
    # epoch 0 ends at 1 s and its write at 3 s; with a 0.1 share the next is due 20 s later, at the end of epoch 20...
    throttled = _written_epochs(tmp_path / "a", monkeypatch, 0.1, 30)
    assert throttled == [0, 20, 29]
    # ...then the final epoch is written whatever the clock; without a share, every epoch is written
    assert _written_epochs(tmp_path / "b", monkeypatch, None, 6) == [0, 1, 2, 3, 4, 5]


def test_last_io_share_outside_0_1_is_a_clear_error():
    from landmark_exp.checkpoints import ModelCheckpoint

    with pytest.raises(ValueError, match="last_io_share"):
        ModelCheckpoint(save_last=True, last_io_share=0)


def test_best_checkpoint_holds_the_weights_and_last_checkpoint_the_training_state(tiny_run):
    best = torch.load(tiny_run["ckpt"], map_location="cpu", weights_only=True)
    last = torch.load(tiny_run["ckpt"].with_name("last.ckpt"), map_location="cpu", weights_only=True)
    assert "optimizer_states" not in best and "callbacks" not in best
    assert best["hyper_parameters"] == last["hyper_parameters"] and best["state_dict"].keys() == last["state_dict"].keys()
    assert last["optimizer_states"] and last["callbacks"] and last["epoch"] >= best["epoch"]
