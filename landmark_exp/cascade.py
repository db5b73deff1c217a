"""Coarse to fine, the one inference path of evaluate and predict: a whole-image stage (one model or an
ensemble) and, optionally, a second stage that re-locates each landmark on patches around the first estimates.
`load_predictor` builds it from a detector file, checkpoints or ONNX exports.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from landmark_exp.artifact import Detector, is_detector, pretrained_path, read_detector
from landmark_exp.backends import RUNTIMES, onnx_predictor, pick_runtime, torch_predictor
from landmark_exp.data.geometry import Geometry
from landmark_exp.data.patches import patch_blend, patch_shifts, patch_views
from landmark_exp.data.records import CheckpointError, landmark_index, whole_number
from landmark_exp.export import export_onnx
from landmark_exp.loading import (
    CheckpointPaths,
    Member,
    checked_checkpoint,
    checkpoint_paths,
    load_module,
    read_file,
)
from landmark_exp.predictor import LandmarkPrediction, Predictor
from landmark_exp.reliability import Reliability


def refine_repeatedly(second: Predictor, working: tuple[np.ndarray, Geometry], centres: np.ndarray, iterations: int,
                      shifts: Sequence[Sequence[float]] | None = None,
                      views: Sequence[Sequence[float]] | None = None, subpixel: bool = False) -> LandmarkPrediction:
    """One image's second stage from its first estimates (original pixels), `iterations` times, each from the last
    one's estimates."""
    for _ in range(refine_iterations(iterations)):
        pred = second.refine_working(*working, centres, shifts, views, subpixel)
        centres = pred.xy
    return pred


def refine_iterations(value: object) -> int:
    """How many times the second stage refines (`refine_iterations`), each from the last one's estimates: >= 1."""
    return whole_number(value, "refine_iterations")


def refine_selection(landmarks: Sequence[int | str] | None, names: Sequence[str]) -> np.ndarray:
    """(K,) bool: which landmarks the second stage re-locates (`refine_landmarks`: numbers from 1 or names;
    None: all). The others keep their first-stage estimates, for landmarks where validation shows that the
    patch view loses what the whole image tells (e.g. gonion, on a long smooth jaw angle)."""
    if isinstance(landmarks, str | int):  # refine_landmarks=10 on the command line
        landmarks = [landmarks]
    chosen = np.full(len(names), landmarks is None)
    if landmarks is not None:
        chosen[[landmark_index(item, list(names), "refine_landmarks") for item in landmarks]] = True
    return chosen


def combine_stages(first: np.ndarray, second: np.ndarray, refined: np.ndarray, blend: float) -> np.ndarray:
    """(..., K, 2) final positions of a cascade: for the `refined` landmarks ((K,) bool) the second stage's
    estimate moved `blend` of the way back to the first one's (`refine_blend`), the others the first's."""
    mixed = (1.0 - blend) * np.asarray(second, dtype=np.float64) + blend * np.asarray(first, dtype=np.float64)
    return np.where(refined[:, None], mixed, first)


class CascadePredictor:
    """Coarse to fine, as `evaluate.py refine_ckpt=`: a whole-image model's estimates, refined `iterations` times
    (only the landmarks in `refined`, (K,) bool; None: all), then blended with the first ones (`combine_stages`)."""

    def __init__(self, first: Predictor, second: Predictor, iterations: int = 1,
                 refined: np.ndarray | None = None, shifts: Sequence[Sequence[float]] | None = None,
                 blend: float | None = None, views: Sequence[Sequence[float]] | None = None) -> None:
        if second.info.working_size is None:
            raise CheckpointError(f"{second.info.source}: refine_ckpt must be a second-stage (patch) model")
        if second.info.landmark_names != first.info.landmark_names:
            raise CheckpointError(f"{second.info.source}: its landmark names differ from the first stage's "
                                  f"{first.info.source}")
        if second.info.normalize != first.info.normalize:
            raise CheckpointError(f"{second.info.source}: normalize={second.info.normalize!r} differs from the first "
                                  f"stage's {first.info.normalize!r}")
        self.first, self.second, self.iterations = first, second, refine_iterations(iterations)
        self.shifts = [list(s) for s in patch_shifts(shifts, second.info.patch_shifts)]  # what refine applies
        self.views = [list(v) for v in patch_views(views, second.info.patch_views)]
        self.blend = patch_blend(blend, second.info.patch_blend)
        self.refined = (np.ones(len(first.info.landmark_names), dtype=bool) if refined is None
                        else np.asarray(refined, dtype=bool))
        self.info, self.data, self.member_splits = first.info, first.data, first.member_splits
        self.reliability: Reliability | None = None  # a detector's calibration of the final estimates
        self.backend, self.device = first.backend, first.device

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        return self.first.prepare(image)

    def predict(self, images: Sequence[np.ndarray],
                prepared: Sequence[tuple[np.ndarray, Geometry]] | None = None) -> list[LandmarkPrediction]:
        return self.predict_stages(images, prepared)[0]

    def predict_stages(self, images: Sequence[np.ndarray], prepared: Sequence[tuple[np.ndarray, Geometry]] | None = None
                       ) -> tuple[list[LandmarkPrediction], list[LandmarkPrediction]]:
        """(final predictions, the first stage's), one each per image."""
        firsts, final, r = self.first.predict(images, prepared), [], self.refined
        for im, f in zip(images, firsts, strict=True):
            p = refine_repeatedly(self.second, self.second.working_input(im), f.xy, self.iterations,
                                  self.shifts, self.views)
            # the first stage's flags: refined from an estimate that cannot be trusted, neither can the result
            out = LandmarkPrediction(xy=combine_stages(f.xy, p.xy, r, self.blend),
                                     confidence=np.where(r, p.confidence, f.confidence),
                                     spread=np.where(r[:, None], p.spread, f.spread), geometry=f.geometry,
                                     flags=list(f.flags))
            out.signals = {"passes": np.where(r, p.signals.get("passes", 0.0), 0.0),
                           "stages": np.linalg.norm(f.geometry.to_model(out.xy) - f.geometry.to_model(f.xy), axis=-1)}
            if self.first.shape is not None:
                out.signals["shape"] = self.first.shape.check(out.xy).z
            if "domain" in f.signals:
                out.signals["domain"] = f.signals["domain"]
            out.assess(self.reliability)
            final.append(out)
        return final, firsts


def load_predictor(path: CheckpointPaths, device: str = "auto", refine: CheckpointPaths | None = None,
                   refine_iterations: int | None = None, runtime: str = "tuned",
                   refine_landmarks: Sequence[int | str] | None = None, heatmap: dict | None = None,
                   refine_heatmap: dict | None = None, tta_shifts: Sequence[Sequence[int]] | None = None,
                   refine_shifts: Sequence[Sequence[float]] | None = None, refine_blend: float | None = None,
                   refine_views: Sequence[Sequence[float]] | None = None) -> Predictor | CascadePredictor:
    """A detector file, a checkpoint, a list of checkpoints (an ensemble) or an `.onnx` export as a predictor;
    checkpoints run on PyTorch (`runtime` tuned | eager) or are exported on the fly to ONNX Runtime.
    With `refine` (a second-stage checkpoint, list or export), or a detector with a second stage, the result
    is the cascade. `heatmap` / `refine_heatmap` override each stage's decoding; the `refine_*` settings set
    how the second stage looks. Each given setting overrides a detector's own."""
    if runtime not in RUNTIMES:
        raise CheckpointError(f"runtime={runtime!r} is not one of {', '.join(RUNTIMES)}")
    paths = checkpoint_paths(pretrained_path(path))
    one = paths[0] if len(paths) == 1 and paths[0].suffix.lower() != ".onnx" and paths[0].is_file() else None
    data = {} if one is None else read_file(one)
    if is_detector(data) and refine is not None:
        raise CheckpointError(f"refine_ckpt: {paths[0]} is a detector file and brings its own stages; build one with "
                              "this second stage instead (python -m landmark_exp.detector first=... refine=...)")
    if is_detector(data):
        det = read_detector(data, str(one))
    else:  # a checkpoint already read is not read again; lists and exports go as paths (`_stage` reads either)
        first = paths if one is None else [(str(one), checked_checkpoint(data, str(one)))]
        det = Detector(first=first, refine=None if refine is None else checkpoint_paths(refine))
    return detector_predictor(det, device, runtime, refine_iterations, refine_landmarks, heatmap,
                              refine_heatmap, tta_shifts, refine_shifts, refine_blend, refine_views)


def detector_predictor(det: Detector, device: str = "auto", runtime: str = "tuned",
                       refine_iterations: int | None = None, refine_landmarks: Sequence[int | str] | None = None,
                       heatmap: dict | None = None, refine_heatmap: dict | None = None,
                       tta_shifts: Sequence[Sequence[int]] | None = None,
                       refine_shifts: Sequence[Sequence[float]] | None = None, refine_blend: float | None = None,
                       refine_views: Sequence[Sequence[float]] | None = None) -> Predictor | CascadePredictor:
    """A detector's stages with its own settings, each overridden by a given one (None keeps the detector's)."""
    first = _stage(det.first, device, runtime, {**det.heatmap, **(heatmap or {})},
                   det.tta_shifts if tta_shifts is None else tta_shifts)
    first.shape, first.repair_z, first.domain = det.shape, det.repair_z, det.domain
    if det.refine is None:
        given = {"refine_iterations": refine_iterations, "refine_landmarks": refine_landmarks,
                 "refine_heatmap": refine_heatmap or None, "refine_shifts": refine_shifts,
                 "refine_blend": refine_blend, "refine_views": refine_views}
        unused = [k for k, v in given.items() if v is not None]
        if unused:
            raise CheckpointError(f"{', '.join(unused)}: set for a second stage, but this model has none "
                                  "(give refine_ckpt=, or a detector with a second stage)")
        first.reliability = det.reliability
        return first
    landmarks = det.refine_landmarks if refine_landmarks is None else refine_landmarks
    second = _stage(det.refine, device, runtime, {**det.refine_heatmap, **(refine_heatmap or {})}, None)
    cascade = CascadePredictor(first, second, refine_iterations or det.refine_iterations,
                               refine_selection(landmarks, first.info.landmark_names), refine_shifts, refine_blend,
                               refine_views)
    cascade.reliability = det.reliability
    return cascade


def _stage(source: list[Path] | list[Member], device: str, runtime: str, heatmap: dict | None,
           tta_shifts: Sequence[Sequence[int]] | None) -> Predictor:
    """One stage: an .onnx export, or checkpoints (paths or members read from a detector) as one model."""
    onnx = [p for p in source if isinstance(p, Path) and p.suffix.lower() == ".onnx"]
    if onnx and len(source) > 1:
        raise CheckpointError(f"{onnx[0]}: an ensemble is made of checkpoints; export the ensemble instead of its members")
    if onnx and tta_shifts:
        raise CheckpointError(f"{onnx[0]}: an exported model runs as exported; export it with tta_shifts= instead")
    if onnx:
        return onnx_predictor(onnx[0], device, heatmap=heatmap)
    module = load_module(source, heatmap=heatmap, tta_shifts=tta_shifts)
    name = ", ".join(module.members)
    runtime = pick_runtime(runtime, device)
    if runtime == "onnxruntime":  # exported to a temporary file: the fast CPU path without an export step
        with tempfile.TemporaryDirectory(prefix="landmark_exp_onnx_") as tmp:
            path = export_onnx(module, Path(tmp) / "model.onnx", dynamo=False, source=name)
            predictor = onnx_predictor(path, device)  # the session holds the model in memory: the file may go
    else:
        predictor = torch_predictor(module, device, name, runtime)
    predictor.data, predictor.member_splits = dict(module.hparams.get("data") or {}), module.member_splits
    return predictor
