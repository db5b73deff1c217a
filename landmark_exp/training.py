"""What train.py does, given a composed config: fit, test the best checkpoint, report it in millimetres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from landmark_exp.arguments import plain
from landmark_exp.checkpoints import AtomicCheckpointIO, TrainingState
from landmark_exp.data.datamodule import LandmarkDataModule
from landmark_exp.data.geometry import to_original
from landmark_exp.files import write_json
from landmark_exp.guards import NonFiniteGuard, check_finite_metrics
from landmark_exp.jobs import guard, show_config
from landmark_exp.module import LandmarkModule
from landmark_exp.provenance import write_run_info
from landmark_exp.registry import build
from landmark_exp.reports import MEAN_SHAPE, console
from landmark_exp.scores import Scores, report, same_image_note


def build_module(cfg: DictConfig, dm: LandmarkDataModule) -> LandmarkModule:
    return LandmarkModule(
        # the data decide the input channels: 1, or 2 for a second stage with a context channel
        model={**plain(cfg.model), "in_channels": dm.input_channels}, loss=plain(cfg.loss),
        optimizer=plain(cfg.optimizer), scheduler=plain(cfg.get("scheduler")), heatmap=plain(cfg.heatmap),
        num_landmarks=dm.num_landmarks, landmark_names=dm.landmark_names,
        input_size=list(dm.model_input_size), data=_with_spacing(plain(cfg.data), dm),
        **plain(cfg.get("module", {}) or {}))


def _with_spacing(data: dict, dm: LandmarkDataModule) -> dict:
    """The data config as stored in checkpoints, with the source's pixel spacing written out (a source may set it
    itself, as the synthetic one does): predict uses it for images that carry none."""
    source = data.get("source")
    spacing = getattr(dm.source, "spacing", None)
    if isinstance(source, dict) and source.get("spacing") is None and spacing is not None:
        data = {**data, "source": {**source, "spacing": [float(s) for s in spacing]}}
    return data


def build_trainer(cfg: DictConfig, logger: bool = True) -> L.Trainer:
    """The configured Trainer plus what makes long runs safe: atomic checkpoint files, exact resume, NaN guard."""
    callbacks = [build(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c]
    callbacks += [TrainingState(), NonFiniteGuard(**plain(cfg.get("trainer_guard") or {}))]
    loggers = ([build(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items() if c and "_target_" in c]
               if logger else [])
    return build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])


@guard
def train(cfg: DictConfig) -> dict:
    """Fit, test the best checkpoint, write metrics.json / per_landmark.csv / predictions.csv."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    show_config(cfg, out_dir)
    write_run_info(out_dir)
    L.seed_everything(cfg.seed, workers=True)
    dm: LandmarkDataModule = build(cfg.data, "data")
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(cfg, dm)
    module.mean_shape.copy_(dm.mean_shape())
    trainer = build_trainer(cfg)
    n_params = sum(p.numel() for p in module.net.parameters())
    console.print(f"{type(module.net).__name__}: {n_params / 1e6:.2f} M parameters; {len(dm.datasets['train'])} training, "
                  f"{len(dm.datasets['val'])} validation images; run folder {out_dir}", soft_wrap=True, highlight=False)
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    val_mre = best_val_mre(trainer)
    split = cfg.get("eval_split", "test")
    if not cfg.get("test", True) or split not in dm.datasets:
        check_finite_metrics({"best_val_mre": val_mre}, "validation")
        if trainer.is_global_zero:  # still marks the run done (sweep table) with its validation score
            write_json(out_dir / "metrics.json", {"best_val_mre": val_mre, "split": None})
        return {"val_mre": val_mre}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.test(module, dataloaders=dm.dataloader(split), ckpt_path=best or None, weights_only=True, verbose=False)
    check_finite_metrics({**module.test_results.get("summary", {}), "best_val_mre": val_mre}, split)
    if trainer.is_global_zero:
        extra: dict[str, Any] = {"best_val_mre": val_mre}
        skipped = [s for cb in trainer.callbacks if isinstance(cb, NonFiniteGuard) for s in cb.skipped]
        if skipped:
            extra["skipped_nonfinite_steps"] = skipped
        scores = test_scores(module, dm, split)
        extra.update(same_image_note(scores, dm.same_images_as_training(split), split))
        if getattr(dm.source, "skipped", []):
            extra["skipped_samples"] = dm.source.skipped
        if dm.folds is not None and split == "val":  # what landmark_exp.crossval pools: this run's fold
            extra["fold"] = {"folds": dm.folds, "fold": dm.fold, "data_seed": dm.seed}
        report(scores, out_dir, f"{split} ({len(dm.datasets[split])} images)", split, best, extra=extra)
    return {**module.test_results.get("summary", {}), "val_mre": val_mre}


def best_val_mre(trainer: L.Trainer) -> float | None:
    """The monitored validation MRE of the checkpoint that is tested (else the last epoch's)."""
    cb = trainer.checkpoint_callback
    score = cb.best_model_score if cb is not None and getattr(cb, "monitor", None) == "val/mre" else None
    if score is None:
        score = trainer.callback_metrics.get("val/mre")
    return float(score) if score is not None else None


def test_scores(module: LandmarkModule, dm: LandmarkDataModule, split: str) -> Scores:
    """The module's test step results (original pixels, in the loader's order) as `Scores`, with its reference:
    the mean training shape (a second stage: the patch centres, where each landmark starts)."""
    res = module.test_results
    reference = to_original(module.mean_shape.cpu().numpy()[None], res["geometry"])
    name = "patch centres" if res["geometry"].ndim == 3 else MEAN_SHAPE
    return Scores([dm.records[split][i] for i in res["index"]], list(dm.landmark_names), res["pred"], res["peak"],
                  reference, name)
