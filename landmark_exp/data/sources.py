"""Files on disk -> `Record`s, validated strictly.

Each source knows one on-disk layout and exposes the same two methods:
`splits()` (the named splits present) and `load(split)` (its records, sorted by
id). Problems raise `DataError` with a one-line message naming the file and line
(`file.txt:LINE`, or `file.csv:ROW` with ROW the 1-based line of the CSV, header
= line 1); with `on_bad_sample="skip"` the bad sample is left out, warned about
and listed in `skipped`.

Checked here, per sample (so skip mode applies): annotation missing, short,
non-numeric or non-finite; CSV rows with the wrong number of fields; images that
are missing or whose header cannot be read; landmarks outside the image (size
from the image header, no decoding); duplicate ids. Checked here, fatal in both
modes because the whole file or split is unusable: a CSV without the expected
columns or with another landmark count, a missing split, an empty split.
Not checked here: pixel data that is corrupt behind a valid header. That only
shows when `ImageCache` decodes the image, which raises `DataError` naming the
file in both modes (the datamodule decodes a whole split at once, so it cannot
leave one sample out).
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from landmark_exp.data.decoding import image_size
from landmark_exp.data.records import ISBI2015_LANDMARKS, DataError, Record

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".ppm", ".dcm", ".dicom")
_LINK_STUB_MAX_BYTES = 1024


class Source:
    """Common behaviour: landmark names, spacing, the skip-or-raise policy and the per-sample checks."""

    def __init__(
        self,
        num_landmarks: int = 19,
        landmark_names: list[str] | None = None,
        spacing: float | tuple[float, float] = 0.1,
        on_bad_sample: str = "error",
        check_bounds: bool = True,
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
        """(height, width) from the header when bounds are checked (cheap: no decoding), else None."""
        if not self.check_bounds:
            if not image_path.is_file():
                where = f" (referenced at {referenced_at})" if referenced_at else ""
                raise DataError(f"{image_path}: image file not found{where}")
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
            raise DataError(
                f"{where(i)}: landmark {i + 1} ({self.landmark_names[i]}) at ({x[i]:g}, {y[i]:g}) "
                f"is outside the {w}x{h} image {image_path.name}"
            )

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

    That is how git checks out a symlink where links are off (core.symlinks=false,
    some copies and archives); the shared cepha400 images arrive that way. A file
    counts as a stub only if it is tiny, one line of text, and names an existing
    image file, so a real image is never mistaken for one.
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


def find_images(folder: Path, on_duplicate: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Map image id (file stem) -> path for every image file in `folder`.

    Two files with one id is an error; `on_duplicate` (e.g. `Source.bad_sample`) may
    instead record it, and then the first file in name order is kept.
    """
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in found:
                message = f"{p}: duplicate image id {p.stem!r} (also {found[p.stem].name})"
                if on_duplicate is None:
                    raise DataError(message)
                on_duplicate(message)
                continue
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
        for image_id, listed in find_images(folder, self.bad_sample).items():
            try:
                image_path = follow_link_stub(listed)
                size = self._image_size(image_path)
                pts = []
                for d in doctors:
                    ann = self.annotation_path(d, image_id)
                    p = parse_points(ann, self.num_landmarks)
                    self._check_inside(p, size, image_path, lambda i, ann=ann: f"{ann}:{i + 1}")
                    pts.append(p)
            except DataError as e:
                self.bad_sample(str(e))
                continue
            landmarks = np.mean(pts, axis=0) if len(pts) > 1 else pts[0]
            records.append(
                Record(image_id, image_path, landmarks, self.spacing, self.annotation_path(doctors[0], image_id), size)
            )
        return self._finish(records, folder, split)

    def load_doctor(self, split: str, doctor: str) -> list[Record]:
        """The same split with one doctor's annotations (evaluate.py scores against each)."""
        keep = self.gt
        try:
            self.gt = doctor
            return self.load(split)
        finally:
            self.gt = keep


class CSVSource(Source):
    """The "images folder + CSV" layout: root/<image_dir>/<files> + CSVs `image_path,1_x,1_y,...,K_x,K_y`.

    `splits` maps split name -> CSV file (relative to root), e.g. {train:
    train_senior.csv, test1: test1_senior.csv}; or give one `csv`, read as the
    split "all" (then let the datamodule's `random_split` divide it). `image_path`
    is relative to root/image_dir, or to root, or absolute. Coordinates are pixels
    of the full image (x = column, y = row). `spacing_column` names an optional
    per-row mm/px column; otherwise `spacing` applies to every row. Columns other
    than these are ignored.
    """

    IMAGE_COLUMN = "image_path"
    LANDMARK_COLUMN = re.compile(r"^(\d+)_([xy])$")

    def __init__(
        self,
        root: str | Path,
        splits: Mapping[str, str] | None = None,
        csv: str | None = None,
        image_dir: str = "images",
        spacing: float | tuple[float, float] = 0.1,
        spacing_column: str | None = None,
        num_landmarks: int = 19,
        landmark_names: list[str] | None = None,
        on_bad_sample: str = "error",
        check_bounds: bool = True,
    ) -> None:
        super().__init__(num_landmarks, landmark_names, spacing, on_bad_sample, check_bounds)
        if (splits is None) == (csv is None):
            raise ValueError(
                "CSVSource needs either splits {name: file.csv} or one csv (read as split 'all'), not both or neither "
                "(from the command line: data.source.splits=null data.source.csv=<file>)"
            )
        self.root = Path(root)
        self.split_files = {str(k): str(v) for k, v in splits.items()} if splits is not None else {"all": str(csv)}
        self.image_dir = image_dir or ""
        self.spacing_column = spacing_column

    def splits(self) -> list[str]:
        return [s for s, f in self.split_files.items() if (self.root / f).is_file()]

    def csv_path(self, split: str) -> Path:
        if split not in self.split_files:
            raise DataError(f"{self.root}: unknown split {split!r} (configured: {', '.join(self.split_files)})")
        return self.root / self.split_files[split]

    def load(self, split: str) -> list[Record]:
        path = self.csv_path(split)
        if not path.is_file():
            raise DataError(f"{path}: CSV file for split {split!r} not found")
        records: list[Record] = []
        first_row: dict[str, int] = {}
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                if header is None:
                    raise DataError(f"{path}: empty file, expected a header 'image_path,1_x,1_y,...'")
                columns = self._columns(path, header)
                for row in reader:
                    line = reader.line_num
                    if not any(cell.strip() for cell in row):
                        continue  # blank lines (a trailing newline) are not samples
                    try:
                        rec = self._record(path, line, row, len(header), columns)
                        if rec.id in first_row:
                            raise DataError(
                                f"{path}:{line}: duplicate image id {rec.id!r} (also {path.name}:{first_row[rec.id]})"
                            )
                    except DataError as e:
                        self.bad_sample(str(e))
                        continue
                    first_row[rec.id] = line
                    records.append(rec)
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a readable CSV file ({type(e).__name__}: {e})") from None
        return self._finish(records, path, split)

    def _columns(self, path: Path, header: list[str]) -> dict:
        """Column indices from the header; a header without them makes the whole file unusable."""
        names = [h.strip() for h in header]
        if self.IMAGE_COLUMN not in names:
            raise DataError(f"{path}:1: no {self.IMAGE_COLUMN!r} column in the header")
        found: dict[tuple[int, str], int] = {}
        for j, name in enumerate(names):
            m = self.LANDMARK_COLUMN.match(name)
            if m:
                found[(int(m.group(1)), m.group(2))] = j
        k = max((n for n, _ in found), default=0)
        missing = [f"{n}_{a}" for n in range(1, k + 1) for a in "xy" if (n, a) not in found]
        if k == 0 or missing:
            what = f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}" if k else "none found"
            raise DataError(f"{path}:1: landmark columns must be 1_x,1_y,...,K_x,K_y ({what})")
        if k != self.num_landmarks:
            raise DataError(
                f"{path}:1: the header has {k} landmarks (1_x..{k}_y), the configuration expects {self.num_landmarks}"
            )
        spacing_at = None
        if self.spacing_column is not None:
            if self.spacing_column not in names:
                raise DataError(f"{path}:1: no spacing column {self.spacing_column!r} in the header")
            spacing_at = names.index(self.spacing_column)
        return {
            "image": names.index(self.IMAGE_COLUMN),
            "x": [found[(n, "x")] for n in range(1, k + 1)],
            "y": [found[(n, "y")] for n in range(1, k + 1)],
            "spacing": spacing_at,
        }

    def _record(self, path: Path, line: int, row: list[str], n_fields: int, columns: dict) -> Record:
        where = f"{path}:{line}"
        if len(row) != n_fields:
            raise DataError(f"{where}: {len(row)} fields, expected {n_fields} as in the header")
        name = row[columns["image"]].strip()
        if not name:
            raise DataError(f"{where}: empty {self.IMAGE_COLUMN}")
        image_path = self._image_file(name, where)
        header_names = [f"{n + 1}_" for n in range(self.num_landmarks)]
        points = np.array(
            [
                (parse_number(row[xi], where, f"{h}x"), parse_number(row[yi], where, f"{h}y"))
                for h, xi, yi in zip(header_names, columns["x"], columns["y"], strict=True)
            ],
            dtype=np.float64,
        )
        spacing = self.spacing
        if columns["spacing"] is not None:
            value = parse_number(row[columns["spacing"]], where, f"spacing {self.spacing_column!r}")
            if value <= 0:
                raise DataError(f"{where}: spacing {self.spacing_column!r} must be positive mm/px, got {value:g}")
            spacing = (value, value)
        size = self._image_size(image_path, referenced_at=where)
        self._check_inside(points, size, image_path, lambda i: where)
        return Record(Path(name).stem, image_path, points, spacing, path, size)

    def _image_file(self, name: str, where: str) -> Path:
        """root/image_dir/name, else root/name, or name if absolute; a missing image names the CSV row."""
        given = Path(name)
        candidates = [given] if given.is_absolute() else list(dict.fromkeys([self.root / self.image_dir / given,
                                                                             self.root / given]))
        for c in candidates:
            if c.is_file():
                return follow_link_stub(c)
        looked = ", ".join(str(c.parent) for c in candidates)
        raise DataError(f"{where}: image {name!r} referenced by the CSV not found (looked in {looked})")


class SyntheticSource(ISBI2015Source):
    """The built-in default data: generated on first use, in the ISBI layout, read by ISBI2015Source."""

    def __init__(self, root: str | Path, generator: dict | None = None, **kwargs) -> None:
        from landmark_exp.data.synthetic import synthetic_spacing_mm

        size = {k: v for k, v in (generator or {}).items() if k in ("width", "height")}
        kwargs.setdefault("spacing", synthetic_spacing_mm(**size))
        super().__init__(root, **kwargs)
        self.generator = dict(generator or {})

    def prepare(self) -> None:
        from landmark_exp.data.synthetic import ensure_synthetic

        ensure_synthetic(self.root, **self.generator)
