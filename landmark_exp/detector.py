"""`python -m landmark_exp.detector first=<ckpt(s)> [refine=<ckpt(s)>] output=detector.pt`: checkpoints -> one detector.

Besides the stages and their settings (`artifact.py` is the file format), it fits the shape model and the
domain reference on the first stage's training images and calibrates the reliability score on its validation
images, never its test split. `calibrate=false` leaves them out: flags then come from the heatmaps alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from landmark_exp.arguments import as_list, checked_device, flag, int_pairs, plain
from landmark_exp.artifact import Detector, with_patch_settings
from landmark_exp.cascade import CascadePredictor, detector_predictor
from landmark_exp.data.records import DataError
from landmark_exp.domain import NEIGHBOURS, DomainModel, describe_images
from landmark_exp.evaluation import score
from landmark_exp.files import atomic_open
from landmark_exp.folders import output_file
from landmark_exp.jobs import guard, run_command
from landmark_exp.loading import Member, load_module, read_members
from landmark_exp.registry import build as build_object
from landmark_exp.reliability import Reliability
from landmark_exp.reports import console
from landmark_exp.shape import ShapeModel


@guard
def build(cfg: DictConfig) -> dict:
    """The Hydra job: checkpoints and settings -> one detector file (calibrated unless calibrate=false)."""
    output = Path(str(cfg.output))
    sources = [Path(str(p)) for key in ("first", "refine") for p in as_list(cfg.get(key))]
    output_file(output, sources, flag(cfg.get("overwrite", False), "overwrite"))
    calibrate = flag(cfg.get("calibrate", True), "calibrate")
    target, repair_z = _share(cfg.get("flag_share", 0.03)), _positive(cfg.get("repair_z"), "repair_z")
    device = checked_device(cfg.get("device", "cpu"))
    heatmap, refine_heatmap = ({k: v for k, v in (plain(cfg.get(key)) or {}).items() if v is not None}
                               for key in ("heatmap", "refine_heatmap"))
    first = read_members(as_list(cfg.first))
    refine = (with_patch_settings(read_members(as_list(cfg.refine)), plain(cfg.get("refine_shifts")),
                                  plain(cfg.get("refine_views")), cfg.get("refine_blend"))
              if cfg.get("refine") else None)
    det = Detector(first=first, heatmap=heatmap, tta_shifts=int_pairs(plain(cfg.get("tta_shifts")), "tta_shifts"),
                   refine=refine, refine_heatmap=refine_heatmap, refine_iterations=int(cfg.get("refine_iterations", 1)),
                   refine_landmarks=plain(cfg.get("refine_landmarks")), name=str(cfg.get("name") or output.stem))
    module = load_module(first, heatmap=heatmap, tta_shifts=det.tta_shifts)  # each stage built before any writing
    if calibrate and len(set(module.member_splits)) > 1:  # a member trained on another's calibration images
        raise DataError(f"first={as_list(cfg.first)}: its members carved different validation splits "
                        f"({sorted(set(module.member_splits), key=str)}), so calibrating on one member's would score "
                        "images the others trained on; train them with one data.seed, or calibrate=false")
    if refine is not None:
        load_module(refine, heatmap=refine_heatmap)
    if calibrate:
        calibrated(det, cfg.get("data_root"), target, repair_z, device)
    if flag(cfg.get("half", False), "half"):  # weights stored in float16 (half the file), computed in float32
        det.first = half_precision(det.first)
        det.refine = None if det.refine is None else half_precision(det.refine)
    with atomic_open(output) as fh:
        torch.save(det.to_dict(), fh)
    stages = f"{len(first)} first-stage model(s)" + (f" + {len(refine)} second-stage model(s)" if refine else "")
    console.print(f"detector {output} ({output.stat().st_size / 1e6:.1f} MB): {stages}", highlight=False)
    return {"output": str(output), "bytes": output.stat().st_size}


def calibrated(det: Detector, data_root: str | None, target: float, repair_z: float | None, device: str) -> Detector:
    """`det` with a shape model fitted on its first stage's training landmarks (in mm) and a reliability score
    calibrated to flag `target` of the landmarks of its validation images."""
    data_cfg = OmegaConf.create(det.first[0][1]["hyper_parameters"].get("data") or {})
    if data_root:
        data_cfg.source.root = str(data_root)
    dm = build_object(data_cfg, "data")
    dm.prepare_data()
    records = dm.split_records()
    train, val = records.get("train") or [], records.get("val") or []
    if len(train) < 3 or not val:
        raise DataError(f"{det.first[0][0]}: its data give {len(train)} training and {len(val)} validation images; "
                        "calibration needs both (calibrate=false writes the detector without it)")
    det.shape = ShapeModel.fit(np.stack([r.landmarks * np.asarray(r.spacing) for r in train]))
    det.repair_z, det.reliability, det.domain = repair_z, None, None
    predictor = detector_predictor(det, device)
    if len(train) > NEIGHBOURS:  # else too few to say what the training images are like
        stage = predictor.first if isinstance(predictor, CascadePredictor) else predictor
        stage.domain = det.domain = DomainModel(describe_images([r.image_path for r in train], stage))
    scores = score(predictor, val, list(dm.landmark_names))
    signals = {s: v for s, v in scores.signals.items() if s != "peak" or det.refine is None}
    det.reliability = Reliability.calibrate(signals, target, f"val ({len(val)} images)")
    thresholds = ", ".join(f"{s} {t:.3g}" for s, t in det.reliability.thresholds.items())
    console.print(f"shape model and domain reference from {len(train)} training images; reliability calibrated "
                  f"on {len(val)} validation images to flag {100 * target:g} % of their landmarks (thresholds: {thresholds}); "
                  f"validation MRE {scores.summary['mre']:.3f} mm", highlight=False, soft_wrap=True)
    return det


def half_precision(members: list[Member]) -> list[Member]:
    """Members with their floating-point weights stored as float16; loading copies them back into float32."""
    return [(name, {**ckpt, "state_dict": {k: v.half() if v.is_floating_point() else v
                                           for k, v in ckpt["state_dict"].items()}}) for name, ckpt in members]


def _share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 0.5:
        raise DataError(f"flag_share={value!r}: the share of validation landmarks to flag, a number in (0, 0.5)")
    return float(value)


def _positive(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise DataError(f"{name}={value!r}: a positive number, or null")
    return float(value)


if __name__ == "__main__":
    run_command("detector", build)
