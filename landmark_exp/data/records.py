"""What every data source produces: one `Record` per image, in original pixels, so everything downstream
(caching, transforms, metrics) sees one format; and the one-line `DataError` that names a user's bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ISBI2015_LANDMARKS: tuple[str, ...] = (
    "sella", "nasion", "orbitale", "porion", "subspinale", "supramentale", "pogonion", "menton", "gnathion",
    "gonion", "lower_incisal_incision", "upper_incisal_incision", "upper_lip", "lower_lip", "subnasale",
    "soft_tissue_pogonion", "posterior_nasal_spine", "anterior_nasal_spine", "articulare",
)


class DataError(ValueError):
    """A user's data problem: the message is one line naming the file (and line/row)."""


class CheckpointError(DataError):
    """A checkpoint or exported model that cannot be used as given: one line naming the file and the reason."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """An exception as `Type: message` on one line (pydicom's and YAML's messages span several), the message
    cut at `limit` characters: the reason in parentheses of a one-line error."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:limit]}"


def whole_number(value: object, what: str, least: int = 1, note: str = "") -> int:
    """Every whole-number setting's one check: an int (or 2.0, or its digits) >= `least`; not 2.5, "two" or a
    bool. Otherwise a one-line DataError naming the setting `what`."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DataError(f"{what} must be a whole number >= {least}{note}, got {value!r}")
    return value


@dataclass(frozen=True)
class Record:
    """One annotated image: `landmarks` (K, 2) float64 in the original image's pixels (x = column, y = row,
    pixel centres at integers), `spacing` mm per pixel (x, y), `size` the original (height, width) if known."""

    id: str
    image_path: Path
    landmarks: np.ndarray
    spacing: tuple[float, float]
    annotation_path: Path | None = None
    size: tuple[int, int] | None = None

    @property
    def num_landmarks(self) -> int:
        return int(self.landmarks.shape[0])


def landmark_index(item: int | str, names: list[str] | tuple[str, ...], setting: str) -> int:
    """0-based index of a landmark given as its number from 1 or its name (any case), as settings that
    choose landmarks take them (refine_landmarks, heatmap.landmark_sigma); else one line naming `setting`."""
    text = str(item).strip()
    if text.isdigit() and 1 <= int(text) <= len(names):
        return int(text) - 1
    lower = [n.lower() for n in names]
    if text.lower() in lower:
        return lower.index(text.lower())
    raise DataError(f"{setting}: {item!r} is neither a landmark number 1-{len(names)} nor one of {', '.join(names)}")
