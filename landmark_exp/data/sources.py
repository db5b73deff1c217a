"""Files on disk -> `Record`s, validated strictly.

Each source knows one on-disk layout and exposes the same two methods:
`splits()` (the named splits present) and `load(split)` (its records, sorted by
id). Problems raise `DataError` with a one-line message naming the file and line;
with `on_bad_sample="skip"` the bad sample is left out and listed in `skipped`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from landmark_exp.data.records import ISBI2015_LANDMARKS, DataError, Record

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".ppm", ".dcm")


class Source:
    """Common behaviour: landmark names, spacing, and the skip-or-raise policy."""

    def __init__(
        self,
        num_landmarks: int = 19,
        landmark_names: list[str] | None = None,
        spacing: float | tuple[float, float] = 0.1,
        on_bad_sample: str = "error",
    ) -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', not {on_bad_sample!r}")
        self.num_landmarks = int(num_landmarks)
        if landmark_names is None:
            landmark_names = (
                list(ISBI2015_LANDMARKS) if num_landmarks == 19 else [f"L{i + 1}" for i in range(num_landmarks)]
            )
        if len(landmark_names) != self.num_landmarks:
            raise ValueError(f"{len(landmark_names)} landmark names given for {self.num_landmarks} landmarks")
        self.landmark_names = list(landmark_names)
        sp = (float(spacing), float(spacing)) if np.isscalar(spacing) else tuple(float(s) for s in spacing)
        if len(sp) != 2 or not all(math.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"pixel spacing must be positive mm/px, got {spacing!r}")
        self.spacing: tuple[float, float] = sp  # type: ignore[assignment]
        self.on_bad_sample = on_bad_sample
        self.skipped: list[str] = []

    def prepare(self) -> None:
        """Download or generate the data if needed (called once, on one process)."""

    def splits(self) -> list[str]:
        raise NotImplementedError

    def load(self, split: str) -> list[Record]:
        raise NotImplementedError

    def _bad(self, message: str) -> None:
        """Raise, or record and warn, according to `on_bad_sample`."""
        if self.on_bad_sample == "error":
            raise DataError(message)
        self.skipped.append(message)
        warnings.warn(f"skipping sample: {message}", stacklevel=3)


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
        parts = [p.strip() for p in line.replace(";", ",").split(",")]
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected 'x,y', found {line.strip()!r}")
        try:
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise DataError(f"{path}:{lineno}: non-numeric coordinate {line.strip()!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise DataError(f"{path}:{lineno}: non-finite coordinate {line.strip()!r}")
        points.append((x, y))
    if len(points) < num_landmarks:
        raise DataError(f"{path}: {len(points)} landmark lines, expected {num_landmarks}")
    return np.asarray(points, dtype=np.float64)


def find_images(folder: Path) -> dict[str, Path]:
    """Map image id (file stem) -> path for every image file in `folder`; two files with one id is an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in found:
                raise DataError(f"{p}: duplicate image id {p.stem!r} (also {found[p.stem].name})")
            found[p.stem] = p
    return found


class ISBI2015Source(Source):
    """The ISBI 2015 challenge layout: RawImage/<split dir>/NNN.<ext> + AnnotationsByMD/400_<doctor>/NNN.txt.

    gt selects the ground truth: "senior", "junior", or "mean" of the two (the
    literature's usual choice).
    """

    SPLIT_DIRS = {"train": "TrainingData", "test1": "Test1Data", "test2": "Test2Data"}
    DOCTORS = {"senior": "400_senior", "junior": "400_junior"}

    def __init__(self, root: str | Path, gt: str = "mean", **kwargs) -> None:
        super().__init__(**kwargs)
        if gt not in ("senior", "junior", "mean"):
            raise ValueError(f"gt must be 'senior', 'junior' or 'mean', not {gt!r}")
        self.root = Path(root)
        self.gt = gt

    def splits(self) -> list[str]:
        return [s for s, d in self.SPLIT_DIRS.items() if (self.root / "RawImage" / d).is_dir()]

    def annotation_path(self, doctor: str, image_id: str) -> Path:
        return self.root / "AnnotationsByMD" / self.DOCTORS[doctor] / f"{image_id}.txt"

    def load(self, split: str) -> list[Record]:
        if split not in self.SPLIT_DIRS:
            raise DataError(f"{self.root}: unknown split {split!r} (choose from {', '.join(self.SPLIT_DIRS)})")
        folder = self.root / "RawImage" / self.SPLIT_DIRS[split]
        if not folder.is_dir():
            raise DataError(f"{folder}: split folder for {split!r} not found")
        doctors = ["senior", "junior"] if self.gt == "mean" else [self.gt]
        records = []
        for image_id, image_path in find_images(folder).items():
            try:
                pts = [parse_points(self.annotation_path(d, image_id), self.num_landmarks) for d in doctors]
            except DataError as e:
                self._bad(str(e))
                continue
            landmarks = np.mean(pts, axis=0) if len(pts) > 1 else pts[0]
            records.append(
                Record(image_id, image_path, landmarks, self.spacing, self.annotation_path(doctors[0], image_id))
            )
        if not records:
            raise DataError(f"{folder}: split {split!r} has no usable images")
        return records

    def load_doctor(self, split: str, doctor: str) -> list[Record]:
        """The same split with one doctor's annotations (evaluate.py scores against each)."""
        keep = self.gt
        try:
            self.gt = doctor
            return self.load(split)
        finally:
            self.gt = keep


class SyntheticSource(ISBI2015Source):
    """The built-in default data: generated on first use, in the ISBI layout, read by ISBI2015Source."""

    def __init__(self, root: str | Path, generator: dict | None = None, **kwargs) -> None:
        from landmark_exp.data.synthetic import SYNTHETIC_SPACING_MM

        kwargs.setdefault("spacing", SYNTHETIC_SPACING_MM)
        super().__init__(root, **kwargs)
        self.generator = dict(generator or {})

    def prepare(self) -> None:
        from landmark_exp.data.synthetic import ensure_synthetic

        ensure_synthetic(self.root, **self.generator)
