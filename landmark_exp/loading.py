"""Checkpoints and detectors read as data: weights only, every class they name looked up in the registry,
older formats migrated by their version, a module (or an ensemble of them) rebuilt from what they hold.
Nothing in a file is ever called.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from landmark_exp.data.patches import patch_context
from landmark_exp.data.records import CheckpointError
from landmark_exp.models.ensemble import MeanOfNets, ShiftedMean
from landmark_exp.module import CHECKPOINT_VERSION, FORMAT_KEY, LandmarkModule
from landmark_exp.registry import RegistryError, check

CheckpointPaths = str | Path | Sequence[str | Path]
_HPARAMS = set(inspect.signature(LandmarkModule.__init__).parameters) - {"self"}


def checkpoint_paths(path: CheckpointPaths) -> list[Path]:
    """One checkpoint, or a list of them (an ensemble; `ckpt_path=[a.ckpt,b.ckpt]` on the command line)."""
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(str(p)) for p in path]
    if not paths:
        raise CheckpointError("ckpt_path: an empty list of checkpoints")
    return paths


def read_file(path: Path | str) -> dict[str, Any]:
    """A torch.save file as plain data (tensors, numbers, strings, containers): never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic not in (b"PK", b"\x80\x02"):  # torch.save writes a zip archive (legacy: a protocol-2 pickle)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file (neither a zip archive nor a pickle)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any pickled object outside tensors and plain containers: never run its code
        raise CheckpointError(f"{path}: refused to load, it holds more than weights and plain data "
                              f"({first_line(e)})") from None
    except Exception as e:  # torch.load raises many types (struct.error, EOFError, RuntimeError ...) on a bad file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first_line(e)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a landmark_exp checkpoint or detector")
    return data


def checked_checkpoint(ckpt: dict[str, Any], where: str) -> dict[str, Any]:
    """A checkpoint's contents checked and migrated to the current version: its config names only registered
    classes, its keys are the module's, its tensors are finite. `where` names it in every message."""
    if not isinstance(ckpt.get("hyper_parameters"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{where}: not a landmark_exp checkpoint (no hyper_parameters/state_dict)")
    version = ckpt.get(FORMAT_KEY, 1)
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
        raise CheckpointError(f"{where}: checkpoint format {version!r} is not one this version reads "
                              f"(1-{CHECKPOINT_VERSION}); update landmark_exp")
    # version 1 -> 2 added only the version key: nothing to convert
    hparams = dict(ckpt["hyper_parameters"])
    try:  # every class the stored config names, checked before any of them is built
        check(hparams, "hyper_parameters")
    except RegistryError as e:
        raise CheckpointError(f"{where}: {e}") from None
    unknown = sorted(str(k) for k in hparams if k not in _HPARAMS)
    if unknown:
        raise CheckpointError(f"{where}: hyper_parameters hold unknown keys {unknown}")
    size = hparams.get("input_size", (256, 256))
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 16384 for v in size)):
        raise CheckpointError(f"{where}: its input size {size!r} (hyper_parameters.input_size) is not two whole numbers 8-16384")
    bad = [k for k, v in ckpt["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: state_dict entry {bad[0]!r} is not a tensor")
    broken = [k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{where}: the weights hold NaN or infinite values ({len(broken)} tensor(s), first "
                              f"{broken[0]!r}): the run that wrote it diverged")
    return {"hyper_parameters": hparams, "state_dict": ckpt["state_dict"], FORMAT_KEY: CHECKPOINT_VERSION}


def module_from_checkpoint(ckpt: dict[str, Any], where: str, heatmap: dict | None = None) -> LandmarkModule:
    """The module a checked checkpoint describes, its weights loaded; `heatmap` overrides its decoding."""
    hparams = dict(ckpt["hyper_parameters"])
    if heatmap:
        hparams["heatmap"] = {**(hparams.get("heatmap") or {}), **heatmap}
    try:
        module = LandmarkModule(**hparams)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{where}: its stored config does not describe a valid model ({first_line(e)})") from None
    try:
        module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: weights do not fit the model its config describes ({first_line(e)})") from None
    return module.eval()


def first_line(e: BaseException) -> str:
    """The informative line of an exception: load_state_dict's first line is only a header, the reason follows."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    return lines[0][:300] if lines else type(e).__name__


def _carving(data: dict) -> tuple:
    """How a run carved validation from its training pool: (data seed, folds, fold); no folds: (seed,)."""
    folds = data.get("folds")
    return (data.get("seed"),) if folds is None else (data.get("seed"), folds, data.get("fold", 0))


Member = tuple[str, dict[str, Any]]  # a checkpoint's name and its checked contents


def read_members(path: CheckpointPaths) -> list[Member]:
    """The checked checkpoints a ckpt_path names (one, or a list: an ensemble)."""
    out = []
    for p in checkpoint_paths(path):
        data = read_file(p)
        if data.get("format") is not None:
            raise CheckpointError(f"{p}: a detector, not a checkpoint: give it alone as ckpt_path")
        out.append((str(p), checked_checkpoint(data, str(p))))
    return out


def load_module(path: CheckpointPaths | Sequence[Member], heatmap: dict | None = None,
                tta_shifts: Sequence[Sequence[int]] | None = None) -> LandmarkModule:
    """Rebuild a module (on the CPU) from checkpoints (paths, or members already read) without running code.
    Several are an ensemble: one network averaging their heatmaps, decoded as the first decodes, with their
    mean shape. `heatmap` overrides decoding for this use only; `tta_shifts` adds test-time shifts."""
    members = (list(path) if isinstance(path, Sequence) and path and isinstance(path[0], tuple)
               else read_members(path))
    modules = [module_from_checkpoint(ckpt, name, heatmap) for name, ckpt in members]
    module = modules[0]
    module.members = [name for name, _ in members]
    module.member_splits = [_carving(m.hparams.get("data") or {}) for m in modules]
    if len(modules) > 1:
        for (name, _), other in zip(members[1:], modules[1:], strict=True):
            _check_same_kind(module, other, members[0][0], name)
        module.net = MeanOfNets([m.net for m in modules]).eval()
        module.mean_shape.copy_(torch.stack([m.mean_shape for m in modules]).mean(0))
    if tta_shifts:
        if max(abs(int(v)) for pair in tta_shifts for v in pair) >= min(module.input_size):
            raise CheckpointError(f"tta_shifts={[list(p) for p in tta_shifts]}: shifts must stay within the network "
                                  f"input {list(module.input_size)} (a few pixels, e.g. [[0,0],[0,4],[4,0]])")
        if (module.hparams.get("data") or {}).get("patch"):
            raise CheckpointError(f"{members[0][0]}: test-time shifts are for whole-image models, not a second stage")
        module.net = ShiftedMean(module.net, tta_shifts).eval()
    return module


def _check_same_kind(a: LandmarkModule, b: LandmarkModule, where_a: str, where_b: str) -> None:
    """Ensemble members must read the same input and mean the same thing by each output channel."""
    da, db = a.hparams.get("data") or {}, b.hparams.get("data") or {}
    facts = {
        "input size": (list(a.input_size), list(b.input_size)),
        "landmarks": (a.landmark_names, b.landmark_names),
        "single-mask output": (a.single_channel, b.single_channel),
        "heatmap sigma": (a.landmark_sigma, b.landmark_sigma),
        "letterbox": (bool(da.get("letterbox", False)), bool(db.get("letterbox", False))),
        "normalize": (da.get("normalize", "dtype"), db.get("normalize", "dtype")),
        # a second stage: the resolution its patches are cut from and their size (not the training jitter or
        # the test-time shifts, which do not change what an output means; the ensemble applies the first's shifts)
        "patch (second stage)": (_patch_kind(da), _patch_kind(db)),
    }
    for what, (x, y) in facts.items():
        if x != y:
            raise CheckpointError(f"{where_b}: cannot join an ensemble with {where_a}: {what} {y} != {x}")


def _patch_kind(data: dict) -> dict | None:
    patch = data.get("patch")
    if not patch:
        return None
    return {"working size": list(data.get("input_size") or []), "size": list(patch.get("size") or []),
            "context": patch_context(patch.get("context"))}


def check_matches_data(module: LandmarkModule, where: str | Path, num_landmarks: int, landmark_names: list[str],
                       input_size: tuple[int, int] | list[int]) -> None:
    """A checkpoint used on data it was not trained for is refused with one line saying what differs."""
    if module.num_landmarks != num_landmarks:
        raise CheckpointError(f"{where}: checkpoint predicts {module.num_landmarks} landmarks, the data has {num_landmarks}")
    if tuple(module.input_size) != tuple(input_size):
        raise CheckpointError(f"{where}: checkpoint input size {list(module.input_size)} != data input size "
                              f"{list(input_size)}")
    if list(module.landmark_names) != list(landmark_names):
        i = next(i for i, (a, b) in enumerate(zip(module.landmark_names, landmark_names, strict=True)) if a != b)
        raise CheckpointError(f"{where}: landmark names differ from the data's, first at landmark {i + 1}: "
                              f"checkpoint {module.landmark_names[i]!r}, data {landmark_names[i]!r}")
