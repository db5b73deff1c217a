"""`python -m landmark_exp.adapt detector=<det.pt> site.root=<folder> site.csv=labels.csv site.spacing=0.144
output=site.pt`: a trained detector fine-tuned on a few labelled images of a new site (images + one CSV, any
spacing), and the error to expect there.

With `folds` >= 2, cross-validation inside the labelled images first: each fold predicted by the detector
fine-tuned on the other folds (or, for a learning curve, on only `sizes` of them), never on itself. Every
stage and ensemble member is fine-tuned from its own weights with its own training settings for `steps`
optimizer steps at `lr_factor` times its learning rate; the reliability calibration is kept from the original.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from landmark_exp.arguments import checked_device, flag, plain
from landmark_exp.artifact import Detector, load, pretrained_path
from landmark_exp.cascade import detector_predictor
from landmark_exp.data.records import DataError, Record, whole_number
from landmark_exp.domain import describe_images
from landmark_exp.evaluation import score
from landmark_exp.files import atomic_open, write_csv, write_json
from landmark_exp.folders import output_file, writable_dir
from landmark_exp.jobs import guard, quiet_libraries, run_command
from landmark_exp.loading import Member, read_members
from landmark_exp.module import LandmarkModule
from landmark_exp.registry import build
from landmark_exp.reports import console, predictions_frame
from landmark_exp.scores import Scores

SOURCE = "landmark_exp.data.sources.CSVSource"


@guard
def adapt(cfg: DictConfig) -> dict:
    out_dir = writable_dir(Path(cfg.paths.output_dir), "hydra.run.dir", create_parents=True)
    output, source = Path(str(cfg.output)), str(pretrained_path(str(cfg.detector)))
    output_file(output, [Path(source)], flag(cfg.get("overwrite", False), "overwrite"))
    folds = int(cfg.get("folds") or 0)
    steps = whole_number(cfg.get("steps", 150), "steps")
    device = checked_device(cfg.get("device", "cpu"))
    det = load(source)
    site = build({"_target_": SOURCE, **plain(cfg.site), "splits": None,
                  "num_landmarks": len(_names(det)), "landmark_names": _names(det)}, "site")
    records = site.load("all")
    if folds == 1 or folds > len(records):
        raise DataError(f"folds={folds}: 0 (no cross-validation) or 2..{len(records)} (the labelled images)")
    sizes = sorted({whole_number(s, "sizes") for s in (plain(cfg.get("sizes")) or [])})
    fewest = len(records) - math.ceil(len(records) / folds) if folds else 0  # training images of the largest fold
    if folds and sizes and sizes[-1] > fewest:  # checked before any training
        raise DataError(f"sizes={sizes}: {sizes[-1]} is more than the {fewest} images outside the largest of "
                        f"{folds} folds")
    settings = {"steps": steps, "lr_factor": float(cfg.get("lr_factor", 0.3)), "seed": int(cfg.get("seed", 42)),
                "device": device, "cache_dir": str(cfg.paths.cache_dir)}
    quiet_libraries()
    console.print(f"{len(records)} labelled images from {site.root}; detector {cfg.detector}", highlight=False)
    summary: dict[str, Any] = {"images": len(records), "folds": folds, **{k: settings[k] for k in ("steps", "lr_factor")}}
    if folds:
        summary["cross_validation"] = cross_validate(det, records, folds, sizes, settings, out_dir)
    adapted = fine_tuned(det, records, settings, out_dir / "all")
    with atomic_open(output) as fh:
        torch.save(adapted.to_dict(), fh)
    write_json(out_dir / "adapt.json", {**summary, "output": str(output)})
    console.print(f"site detector written to {output}", highlight=False)
    return summary


def cross_validate(det: Detector, records: list[Record], folds: int, sizes: list[int], settings: dict,
                   out_dir: Path) -> list[dict]:
    """Pooled out-of-fold errors: of the detector as it is, and fine-tuned on each size (None: all the others)."""
    order = sorted(records, key=lambda r: r.id)
    random.Random(settings["seed"]).shuffle(order)
    parts = [order[i::folds] for i in range(folds)]
    names = _names(det)
    rows = [_row("as trained (no fine-tuning)", 0, score(detector_predictor(det, settings["device"]), order, names))]
    console.print(_say(rows[-1]), highlight=False)
    for size in [*sizes, None]:
        fold_scores = []
        for i, held_out in enumerate(parts):
            pool = [r for j, p in enumerate(parts) if j != i for r in p]
            train = pool if size is None else pool[:size]
            tuned = fine_tuned(det, train, settings, out_dir / "cv" / f"n{len(train)}" / f"fold{i}")
            fold_scores.append(score(detector_predictor(tuned, settings["device"]), held_out, names))
        pooled = _pooled(fold_scores)
        n = min(len(records) - len(p) for p in parts) if size is None else size
        rows.append(_row(f"fine-tuned on {n} images", n, pooled))
        console.print(_say(rows[-1]), highlight=False)
        write_csv(out_dir / "cv" / f"predictions_n{n}.csv", predictions_frame(pooled.ids, pooled.as_results(), names))
    write_csv(out_dir / "learning_curve.csv", pd.DataFrame(rows))
    return rows


def fine_tuned(det: Detector, records: list[Record], settings: dict, work: Path) -> Detector:
    """The detector with every member of every stage fine-tuned on `records`, and its shape model taking them in."""
    first = [fine_tune(m, records, settings, work / f"first{i}") for i, m in enumerate(det.first)]
    refine = (None if det.refine is None else
              [fine_tune(m, records, settings, work / f"refine{i}") for i, m in enumerate(det.refine)])
    shape, domain = det.shape, det.domain
    if shape is not None:
        shape = shape.updated(np.stack([r.landmarks * np.asarray(r.spacing) for r in records]))
    if domain is not None:  # the site's images are training images now: like them is not unlike the training images
        first_stage = detector_predictor(replace(det, refine=None), settings["device"])
        domain = domain.with_images(describe_images([r.image_path for r in records], first_stage))
    return replace(det, first=first, refine=refine, shape=shape, domain=domain, name=f"{det.name}+site")


def fine_tune(member: Member, records: list[Record], settings: dict, work: Path) -> Member:
    """One model fine-tuned from its weights on `records` with its own training settings; returned as a member."""
    name, ckpt = member
    hp = dict(ckpt["hyper_parameters"])
    work.mkdir(parents=True, exist_ok=True)
    table = work / "train.csv"
    k = len(records[0].landmarks)
    header = ["image_path", *[f"{j + 1}_{a}" for j in range(k) for a in "xy"], "spacing"]
    rows = [[str(Path(r.image_path).resolve()), *np.asarray(r.landmarks, dtype=float).ravel().tolist(),
             float(np.mean(r.spacing))] for r in records]
    write_csv(table, pd.DataFrame(rows, columns=header))
    data = {**dict(hp.get("data") or {}), "train_splits": ["train"], "val_split": "train", "test_split": None,
            "random_split": None, "folds": None, "cache_dir": settings["cache_dir"], "num_workers": 0,
            "source": {"_target_": SOURCE, "root": str(work), "splits": {"train": "train.csv"}, "image_dir": "",
                       "spacing_column": "spacing", "num_landmarks": k, "landmark_names": list(hp["landmark_names"]),
                       # the site's spacing, which predict falls back on for images that carry none
                       "spacing": float(np.median([np.mean(r.spacing) for r in records]))}}
    data["batch_size"] = min(int(data.get("batch_size", 8)), len(records))
    L.seed_everything(settings["seed"], workers=True, verbose=False)
    dm = build(data, "data")
    dm.setup("fit")
    optimizer = {**hp["optimizer"], "lr": float(hp["optimizer"].get("lr", 1e-3)) * settings["lr_factor"]}
    module = LandmarkModule(**{**hp, "optimizer": optimizer, "scheduler": None, "data": data})
    module.load_state_dict(ckpt["state_dict"])
    module.mean_shape.copy_(dm.mean_shape())  # the peak-choice prior: where this site's landmarks sit
    trainer = L.Trainer(max_steps=settings["steps"], max_epochs=-1, accelerator="cpu" if settings["device"] == "cpu"
                        else "auto", logger=False, enable_checkpointing=False, limit_val_batches=0,
                        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(work))
    trainer.fit(module, datamodule=dm)
    path = work / "fine_tuned.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    return read_members([path])[0]


def _names(det: Detector) -> list[str]:
    return list(det.first[0][1]["hyper_parameters"]["landmark_names"])


def _pooled(parts: list[Scores]) -> Scores:
    """K folds' scores as one (every image once, predicted without having been trained on)."""
    return Scores([r for s in parts for r in s.records], parts[0].names, np.concatenate([s.pred for s in parts]),
                  np.concatenate([s.peak for s in parts]), np.concatenate([s.reference_pred for s in parts]),
                  parts[0].reference_name,
                  flagged=np.concatenate([s.flagged for s in parts]) if all(s.flagged is not None for s in parts) else None)


def _row(what: str, n: int, s: Scores) -> dict:
    sm = s.summary
    sep = s.separation() or {}
    return {"what": what, "training_images": n, "images_scored": len(s.records), "mre_mm": sm["mre"],
            "median_mm": sm["median"], "sdr_2mm": sm["sdr_2"], "over_5mm_pct": float((s.errors > 5).mean() * 100),
            "worst_image_mre_mm": float(s.errors.mean(axis=1).max()), "flagged_pct": 100 * sep.get("flagged_share", 0.0),
            "over_5mm_flagged_pct": None if sep.get("gross_flagged_share") is None else 100 * sep["gross_flagged_share"]}


def _say(row: dict) -> str:
    return (f"{row['what']}: MRE {row['mre_mm']:.2f} mm, SDR@2mm {row['sdr_2mm']:.1f} %, "
            f"{row['over_5mm_pct']:.1f} % over 5 mm ({row['images_scored']} images, out of fold)")


if __name__ == "__main__":
    run_command("adapt", adapt)
