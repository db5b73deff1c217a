"""Checkpoints that survive a kill at any moment and resume a run exactly: what Lightning's own state leaves
out (an atomic write, a best score that survives a move and a NaN, the global generators, the data's epoch).
"""

from __future__ import annotations

import pickle
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as _ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from landmark_exp.data.records import CheckpointError, one_line
from landmark_exp.files import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, os.replace: Lightning's fsspec writer copies
    the file from the system temp directory without fsync, so a kill can leave a truncated last.ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage keeps fsspec's semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_open(path) as fh:
            torch.save(checkpoint, fh)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Always weights only: a resumed or tested checkpoint is data; unpickling it must never run code."""
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"{path}: refused to load, it holds more than weights and plain data "
                                  f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
        except (FileNotFoundError, RuntimeError, EOFError, OSError, KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable checkpoint ({one_line(e, 200)})") from None


def last_write_due(now: float, written_at: float | None, write_s: float, share: float | None, final: bool) -> bool:
    """The last.ckpt rule: the first and the final write always; else once write_s / share seconds have passed
    since the previous write ended (so writing takes at most `share` of the time). share None: every time."""
    return share is None or written_at is None or final or now - written_at >= write_s / share


class ModelCheckpoint(_ModelCheckpoint):
    """Lightning's ModelCheckpoint, fit for resuming.

    - `save_last=True` writes last.ckpt at the end of every epoch (Lightning 2.6 writes it only with a top-k
      checkpoint, so a resume would repeat every epoch since the best).
    - `last_io_share` caps the share of the training time spent writing last.ckpt: after a write of d seconds
      the next waits d / last_io_share seconds (a 373 MB last.ckpt would add 81 % to short GPU epochs,
      benchmarks/checkpoint_io.py); the final epoch is always written. None: every epoch.
    - `best_weights_only`: best.ckpt without the optimizer's state (a third of the bytes); runs continue
      from last.ckpt.
    - A NaN/inf monitored score never becomes the best (Lightning would save a diverged first epoch as best).
    - Resumed into a new run directory, the best score and path carry over (Lightning reloads them only in the
      same directory) and the earlier run's files are never deleted.
    """

    def __init__(self, *args: Any, last_io_share: float | None = None, best_weights_only: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.best_weights_only = best_weights_only
        if last_io_share is not None and not 0 < last_io_share <= 1:
            raise ValueError(f"last_io_share must be in (0, 1] or None, got {last_io_share}")
        self.last_io_share = last_io_share
        self._last_written_at: float | None = None  # time.monotonic() when the last write ended
        self._last_write_s = 0.0
        self._last_written_step: int | None = None

    def _last_is_due(self, trainer: L.Trainer) -> bool:
        """Whether last.ckpt should be written now; the same answer on every process (else DDP would hang)."""
        final = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0) > 0
        due = last_write_due(time.monotonic(), self._last_written_at, self._last_write_s, self.last_io_share, final)
        return due if self.last_io_share is None else bool(trainer.strategy.broadcast(due, src=0))

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        """Lightning's rule, except that a NaN/inf score is never saved as a top-k (best) checkpoint."""
        if current is not None:
            finite = bool(torch.isfinite(torch.as_tensor(current)).all())
            if not trainer.strategy.reduce_boolean_decision(finite):  # unanimous, as Lightning's own decision
                rank_zero_warn(f"epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor!r} is "
                               f"{float(current)}: not saved as a best checkpoint (the best stays as it was)")
                return False
        return super().check_monitor_top_k(trainer, current)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self.save_last is not True:  # "link" (a symbolic link, no write) or off: Lightning's way
            return super()._save_last_checkpoint(trainer, monitor_candidates)
        if not self._last_is_due(trainer):
            return
        start = time.monotonic()
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written_at = time.monotonic()
        self._last_write_s = self._last_written_at - start
        self._last_written_step = trainer.global_step

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not self.best_weights_only or self.save_weights_only or filepath == self.last_model_path:
            return super()._save_checkpoint(trainer, filepath)
        self.save_weights_only = True  # Lightning reads it in the call below
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self.save_weights_only = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run stopped between two throttled writes (max_time, early stopping) ends with its final state
        if self.save_last is True and self._last_written_step != trainer.global_step:
            self._last_written_at = None
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_missing(trainer, self._should_save_on_train_epoch_end(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_if_missing(trainer, not self._should_save_on_train_epoch_end(trainer))

    def _save_last_if_missing(self, trainer: L.Trainer, now: bool) -> None:
        # skipped when something (best or last) was already saved at this step, or while sanity checking
        if now and self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            return super().load_state_dict(state_dict)
        self.best_model_score = state_dict["best_model_score"]
        self.best_model_path = state_dict["best_model_path"]
        self.best_k_models = dict(state_dict.get("best_k_models", {}))
        self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
        self.kth_value = state_dict.get("kth_value", self.kth_value)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self.dirpath is not None and Path(filepath).resolve().parent != Path(self.dirpath).resolve():
            return  # another run's checkpoint (carried over by load_state_dict): not ours to delete
        super()._remove_checkpoint(trainer, filepath)


def rng_states() -> dict[str, Any]:
    """The global generators as tensors and plain Python values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class TrainingState(L.Callback):
    """Saves the global generators and the next training epoch; restores them as soon as the checkpoint is
    loaded, because Lightning creates the first resumed epoch's loader iterator (which draws from the
    generators) before any later hook. Each training epoch tells the dataset its epoch (`set_epoch`)."""

    KEY = "landmark_exp_training_state"

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # the epoch Lightning hands the samplers next (set_epoch): this one again if saved mid-epoch
        checkpoint[self.KEY] = {"rng": rng_states(), "epoch": trainer.fit_loop.epoch_progress.current.processed}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(self.KEY)
        if state is None or trainer.state.fn != "fit":
            return
        set_rng_states(state["rng"])
        _set_epoch(trainer, state["epoch"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _set_epoch(trainer, trainer.current_epoch)


def _set_epoch(trainer: L.Trainer, epoch: int) -> None:
    """Tell the training dataset(s) the epoch: through the loader, or before it exists, the data module."""
    loaders = trainer.train_dataloader
    if loaders is None:
        datasets = [getattr(trainer.datamodule, "datasets", {}).get("train")]
    else:
        loaders = list(loaders.values()) if isinstance(loaders, dict) else loaders if isinstance(loaders, list | tuple) else [loaders]
        datasets = [getattr(loader, "dataset", None) for loader in loaders]
    for dataset in datasets:
        if callable(getattr(dataset, "set_epoch", None)):
            dataset.set_epoch(epoch)
