"""Checkpoints that survive a kill at any moment and resume a run exactly.

Lightning already stores and restores the model, optimizer, scheduler, loop
counters and callback states (best checkpoint, early stopping). What it leaves
out, and this module adds:

- `AtomicCheckpointIO`: the file is written beside its target, synced, then renamed.
- `ModelCheckpoint`: resuming into another directory keeps the best score.
- `TrainingState`: the global random number generators travel in the checkpoint,
  and the training dataset learns the epoch (its augmentation depends on it).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as _ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from landmark_exp.reports import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, os.replace.

    Lightning's own writer goes through fsspec, whose local "transaction" stages the file
    in the system temp directory and moves it (a copy across filesystems, no fsync), so a
    kill can leave a truncated last.ckpt: the one file a resume needs.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage keeps fsspec's semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_open(path) as fh:
            torch.save(checkpoint, fh)


class ModelCheckpoint(_ModelCheckpoint):
    """Lightning's ModelCheckpoint, fit for resuming.

    - `save_last=True` writes last.ckpt at the end of every epoch. (Lightning 2.6 writes it
      only when a top-k checkpoint was written at the same step, so after the best epoch
      last.ckpt would go stale and a resume would repeat every epoch since.)
    - Resumed into a new run directory (`ckpt_path=<old run>/checkpoints/last.ckpt`), the best
      score and path carry over, and the earlier run's files are never deleted. (Lightning
      reloads the best score only in the same directory: the next epoch would become "best"
      whatever its score.)
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missing(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missing(trainer)

    def _save_last_if_missing(self, trainer: L.Trainer) -> None:
        # skipped when something (best or last) was already saved at this step, or while sanity checking
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
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
    if "cuda" in states and torch.cuda.is_available():
        cuda = states["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class TrainingState(L.Callback):
    """What a resumed run needs besides Lightning's own state, so that it continues exactly.

    Saved in the checkpoint: the global generators and the epoch the next training epoch will
    have. Restored as soon as the checkpoint is loaded, because Lightning creates the first
    resumed epoch's loader iterator (whose creation, and the shuffling sampler, draw from the
    generators; whose workers start augmenting at once) before any later hook. Each training
    epoch sets the dataset's epoch, on which its augmentation depends (`LandmarkDataset.set_epoch`).
    """

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
