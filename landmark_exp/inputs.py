"""A user's images for predict: the files an `input=` names (files, folders, glob patterns, DICOM without
extension), one output id per file, and each image's pixel spacing with where it came from."""

from __future__ import annotations

import glob
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from landmark_exp.data.decoding import dicom_spacing, is_dicom
from landmark_exp.data.records import DataError
from landmark_exp.data.sources import IMAGE_EXTENSIONS


class SpacingWarning(UserWarning):
    """A DICOM without its own pixel spacing: millimetres use the configured fallback."""


def _is_image(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() in IMAGE_EXTENSIONS or (not path.suffix and is_dicom(path)))


def collect_inputs(spec: str | Sequence[str]) -> list[Path]:
    """Files named by `spec`: a file (taken as is), a folder or a glob (their files with an image extension,
    or none and the DICOM magic, sorted); or a list of them. A name that matches nothing is a one-line error.
    """
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    if not specs:
        raise DataError("input=[]: give an image, a folder or a glob pattern")
    files: list[Path] = []
    for s in specs:
        p = Path(str(s)).expanduser()
        if p.is_file():
            files.append(p)
            continue
        if not p.is_dir() and not glob.has_magic(str(s)):
            raise DataError(f"{p}: no such file or folder")
        listed = p.iterdir() if p.is_dir() else map(Path, glob.glob(str(p), recursive=True))
        found = sorted(q for q in listed if _is_image(q))
        if not found:
            raise DataError(f"{p}: no image files in this folder" if p.is_dir() else
                            f"{s}: the pattern matches no image files")
        files.extend(found)
    unique: dict[Path, Path] = {}  # one entry per file, however often it is named
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def unique_ids(files: Sequence[Path]) -> list[str]:
    """File stems, made unique with a suffix (two folders may both hold 001.png)."""
    ids, count = [], Counter()
    for f in files:
        count[f.stem] += 1
        ids.append(f.stem if count[f.stem] == 1 else f"{f.stem}_{count[f.stem]}")
    return ids


def image_spacing(path: Path, fallback: tuple[float, float] | None) -> tuple[tuple[float, float], str]:
    """(mm/px (x, y), where it came from) for one image; DataError when there is none at all."""
    why = ""
    if is_dicom(path):
        spacing, source = dicom_spacing(path)
        if spacing is not None:
            return spacing, f"dicom:{source}"
        why = source
    if fallback is None:
        raise DataError(f"{path}: no pixel spacing ({why or 'not a DICOM'}); set spacing=<mm per pixel>")
    if why:
        warnings.warn(f"{path}: {why}; using the fallback spacing {fallback[0]:g} x {fallback[1]:g} mm/px",
                      SpacingWarning, stacklevel=2)
        return fallback, "fallback (DICOM without spacing)"
    return fallback, "config"
