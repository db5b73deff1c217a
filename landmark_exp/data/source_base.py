"""What every on-disk layout in `sources` shares: the `Source` base (landmark names, spacing, the
skip-or-raise policy, per-sample checks) and the file helpers (annotation parsing, image discovery, link stubs).

Problems raise `DataError` naming the file and line (`file.txt:LINE`, or `file.csv:ROW` with the header as
line 1); with `on_bad_sample="skip"` a bad sample is left out, warned about and listed in `skipped`. Per sample
(so skip applies): annotations missing, short, non-numeric or non-finite; CSV rows of the wrong width; images
missing or with an unreadable header; landmarks outside the image (size from the header); duplicate ids; pixel
data corrupt behind a valid header (found when the datamodule decodes it). Fatal in both modes: a CSV without
the expected columns or with another landmark count, a missing or empty split.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from landmark_exp.data.decoding import image_size
from landmark_exp.data.records import ISBI2015_LANDMARKS, DataError, Record

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".ppm", ".dcm", ".dicom")
_LINK_STUB_MAX_BYTES = 1024


class Source:
    """A layout exposes `splits()` (the named splits present) and `load(split)` (its records, sorted by id)."""

    def __init__(self, num_landmarks: int = 19, landmark_names: list[str] | None = None,
                 spacing: float | tuple[float, float] = 0.1, on_bad_sample: str = "error",
                 check_bounds: bool = True) -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', not {on_bad_sample!r}")
        self.num_landmarks = int(num_landmarks)
        if landmark_names is None:
            landmark_names = list(ISBI2015_LANDMARKS) if num_landmarks == 19 else [f"L{i + 1}" for i in range(num_landmarks)]
        if len(landmark_names) != self.num_landmarks:
            raise ValueError(f"{len(landmark_names)} landmark names given for {self.num_landmarks} landmarks")
        self.landmark_names = list(landmark_names)
        self.spacing: tuple[float, float] = _spacing(spacing)
        self.on_bad_sample = on_bad_sample
        self.check_bounds = bool(check_bounds)
        self.skipped: list[str] = []

    def prepare(self) -> None:
        """Download or generate the data if needed (called once, on one process)."""

    def splits(self) -> list[str]:
        raise NotImplementedError

    def load(self, split: str) -> list[Record]:
        raise NotImplementedError

    def bad_sample(self, message: str) -> None:
        """Raise, or record and warn, according to `on_bad_sample` (also for problems found later, at decoding)."""
        if self.on_bad_sample == "error":
            raise DataError(message)
        self.skipped.append(message)
        warnings.warn(f"skipping sample: {message}", stacklevel=3)

    def _image_size(self, image_path: Path, referenced_at: str | None = None) -> tuple[int, int] | None:
        """(height, width) from the header when bounds are checked (cheap: no decoding), else None. The file
        exists: the layouts only reference files they found."""
        if not self.check_bounds:
            return None
        try:
            return image_size(image_path)
        except DataError as e:
            if referenced_at is None:
                raise
            raise DataError(f"{e} (referenced at {referenced_at})") from None

    def _check_inside(self, points: np.ndarray, size: tuple[int, int] | None, image_path: Path,
                      where: Callable[[int], str]) -> None:
        """Every landmark on the image (pixel centres 0..W-1, edges at -0.5 and W-0.5, as the datamodule)."""
        if size is None:
            return
        h, w = size
        x, y = points[:, 0], points[:, 1]
        bad = np.nonzero((x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5))[0]
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{where(i)}: landmark {i + 1} ({self.landmark_names[i]}) at ({x[i]:g}, {y[i]:g}) "
                            f"is outside the {w}x{h} image {image_path.name}")

    @staticmethod
    def _finish(records: list[Record], where: Path, split: str) -> list[Record]:
        """Sorted by id; an empty split is fatal in both modes (nothing to train or test on)."""
        if not records:
            raise DataError(f"{where}: split {split!r} has no usable images")
        return sorted(records, key=lambda r: r.id)


def _spacing(spacing: float | tuple[float, float] | list[float]) -> tuple[float, float]:
    sp = (float(spacing), float(spacing)) if np.isscalar(spacing) else tuple(float(s) for s in spacing)
    if len(sp) != 2 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"pixel spacing must be positive mm/px, got {spacing!r}")
    return sp  # type: ignore[return-value]


def parse_number(text: str, where: str, what: str = "coordinate") -> float:
    """One finite number, or a DataError naming `where` (file:line) and the offending text."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: non-numeric {what} {text.strip()!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: non-finite {what} {text.strip()!r}")
    return value


def parse_points(path: Path, num_landmarks: int) -> np.ndarray:
    """Read the first `num_landmarks` lines `x,y` of an annotation file (extra lines are allowed)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read annotation ({type(e).__name__})") from None
    points = []
    for lineno, line in enumerate(lines[:num_landmarks], start=1):
        parts = line.replace(";", ",").split(",")
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected 'x,y', found {line.strip()!r}")
        points.append((parse_number(parts[0], f"{path}:{lineno}", "x"), parse_number(parts[1], f"{path}:{lineno}", "y")))
    if len(points) < num_landmarks:
        raise DataError(f"{path}: {len(points)} landmark lines, expected {num_landmarks}")
    return np.asarray(points, dtype=np.float64)


def follow_link_stub(path: Path, max_hops: int = 8) -> Path:
    """The target of a symbolic link stored as a small text file holding a relative path, else `path`.

    Git checks out symlinks so where links are off (core.symlinks=false, some copies and archives); the shared
    cepha400 images arrive that way. Only a tiny one-line file naming an existing image file counts, so a real
    image is never mistaken for one.
    """
    for _ in range(max_hops):
        try:
            if path.stat().st_size > _LINK_STUB_MAX_BYTES:
                return path
            text = path.read_bytes().decode("utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return path
        if not text or "\n" in text or "\0" in text:
            return path
        target = path.resolve().parent / text  # relative to where the stub really is, as a link would be
        try:
            if not (target.suffix.lower() in IMAGE_EXTENSIONS and target.is_file()):
                return path
        except (OSError, ValueError):
            return path
        path = target
    return path


def find_images(folder: Path, on_duplicate: Callable[[str], None]) -> dict[str, Path]:
    """Image id (file stem) -> path for every image file in `folder`; a second file with one id goes to
    `on_duplicate` (`Source.bad_sample`), the first in name order is kept."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in found:
                on_duplicate(f"{p}: duplicate image id {p.stem!r} (also {found[p.stem].name})")
            else:
                found[p.stem] = p
    return found
