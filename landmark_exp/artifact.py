"""The detector file: everything from image to landmarks in one versioned file (`python -m
landmark_exp.detector` builds one; evaluate, predict and the export take it as a checkpoint).

It holds its stages (each one model or an ensemble, as checkpoints) with the settings each was chosen with,
the shape model and reliability calibration (version 2) and the training images' domain reference
(version 3): a `torch.save` file of tensors and plain values only, read weights-only like a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landmark_exp.arguments import int_pairs
from landmark_exp.data.patches import patch_blend, patch_shifts, patch_views
from landmark_exp.data.records import CheckpointError, DataError
from landmark_exp.domain import DomainModel
from landmark_exp.loading import Member, checked_checkpoint, read_file, read_members
from landmark_exp.reliability import Reliability
from landmark_exp.shape import ShapeModel

FORMAT = "landmark_exp.detector"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"  # detectors shipped with the package: ckpt_path=pretrained
PRETRAINED = {"pretrained": "isbi2015_robust.pt"}


VERSION = 3  # 2: shape model, repair_z and reliability calibration (absent in 1: none); 3: domain reference


def pretrained_path(path: object) -> object:
    """`pretrained` (the name, not a file) -> the detector shipped with the package; anything else unchanged."""
    if isinstance(path, str) and path in PRETRAINED and not Path(path).exists():
        return str(PRETRAINED_DIR / PRETRAINED[path])
    return path


@dataclass
class Detector:
    """What a detector file holds, checked. `refine_*` are None without a second stage. A stage is its members, or,
    for checkpoints and exports used as they are (cascade.load_predictor), their paths: such a one is never saved."""

    first: list[Member] | list[Path]
    heatmap: dict = field(default_factory=dict)  # the first stage's decoding overrides (decoder, window, prior_sigma)
    tta_shifts: list[list[int]] | None = None
    refine: list[Member] | list[Path] | None = None
    refine_heatmap: dict = field(default_factory=dict)
    refine_iterations: int = 1
    refine_landmarks: list[int | str] | None = None  # None: all
    name: str = ""
    shape: ShapeModel | None = None  # the training landmarks' shape model: checks and repairs placements
    repair_z: float | None = None  # shape z over which a first-stage placement is searched again (None: never)
    reliability: Reliability | None = None  # calibrated on validation images: the score that flags landmarks
    domain: DomainModel | None = None  # the training images, to tell an image unlike all of them (domain.py)

    def to_dict(self) -> dict[str, Any]:
        def members(ms: list[Member] | None) -> list[dict] | None:
            return None if ms is None else [{"name": Path(n).name, "checkpoint": c} for n, c in ms]

        return {"format": FORMAT, "version": VERSION, "name": self.name, "first": members(self.first),
                "heatmap": self.heatmap, "tta_shifts": self.tta_shifts, "refine": members(self.refine),
                "refine_heatmap": self.refine_heatmap, "refine_iterations": self.refine_iterations,
                "refine_landmarks": self.refine_landmarks,
                "shape": None if self.shape is None else self.shape.to_dict(), "repair_z": self.repair_z,
                "reliability": None if self.reliability is None else self.reliability.to_dict(),
                "domain": None if self.domain is None else self.domain.to_dict()}


def is_detector(data: dict) -> bool:
    return data.get("format") == FORMAT


def migrate(data: dict, where: str) -> dict:
    """A detector's contents in the current version's layout (each version's change is one step here)."""
    version = data.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise CheckpointError(f"{where}: detector format version {version!r} is not one this version reads "
                              f"(1-{VERSION}); update landmark_exp")
    if version == 1:  # no shape model, no calibration: the same detector, flagging from its heatmaps only
        data = {**data, "version": 2, "shape": None, "repair_z": None, "reliability": None}
    if data["version"] == 2:  # no domain reference: no image is told apart from the training images
        data = {**data, "version": 3, "domain": None}
    return data


def read_detector(data: dict, where: str) -> Detector:
    """A detector's file contents, migrated and checked (each member as a checkpoint is)."""
    data = migrate(data, where)

    def members(key: str) -> list[Member] | None:
        items = data.get(key)
        if items is None:
            return None
        if not isinstance(items, list) or not items or not all(isinstance(m, dict) for m in items):
            raise CheckpointError(f"{where}: '{key}' is not a list of checkpoints")
        return [(f"{where}:{key}[{i}]({m.get('name')})", checked_checkpoint(m.get("checkpoint") or {}, f"{where}:{key}[{i}]"))
                for i, m in enumerate(items)]

    first = members("first")
    if first is None:
        raise CheckpointError(f"{where}: a detector without a first stage")
    try:
        return Detector(first=first, heatmap=dict(data.get("heatmap") or {}),
                        tta_shifts=int_pairs(data.get("tta_shifts"), "tta_shifts"), refine=members("refine"),
                        refine_heatmap=dict(data.get("refine_heatmap") or {}),
                        refine_iterations=int(data.get("refine_iterations", 1)),
                        refine_landmarks=data.get("refine_landmarks"), name=str(data.get("name", "")),
                        shape=None if data.get("shape") is None else ShapeModel.from_dict(data["shape"], where),
                        repair_z=None if data.get("repair_z") is None else float(data["repair_z"]),
                        reliability=(None if data.get("reliability") is None
                                     else Reliability.from_dict(data["reliability"], where)),
                        domain=None if data.get("domain") is None else DomainModel.from_dict(data["domain"], where))
    except (DataError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None


def load(path: str | Path) -> Detector:
    """A detector file, or a checkpoint (then a one-stage detector with its own settings)."""
    data = read_file(path)
    if is_detector(data):
        return read_detector(data, str(path))
    return Detector(first=read_members(path))


def with_patch_settings(members: list[Member], shifts: object, views: object, blend: object) -> list[Member]:
    """A second stage's members with the test-time shifts, views and blend written into their stored patch config,
    where every consumer (evaluate, predict, the export's metadata) reads a second stage's own settings."""
    out = []
    for name, ckpt in members:
        hp = dict(ckpt["hyper_parameters"])
        data = dict(hp.get("data") or {})
        patch = dict(data.get("patch") or {})
        if not patch:
            raise CheckpointError(f"{name}: not a second-stage (patch) checkpoint; it cannot refine")
        patch.update(shifts=[list(s) for s in patch_shifts(shifts, patch.get("shifts"))],
                     views=[list(v) for v in patch_views(views, patch.get("views"))],
                     blend=patch_blend(blend, patch.get("blend")))
        out.append((name, {**ckpt, "hyper_parameters": {**hp, "data": {**data, "patch": patch}}}))
    return out

