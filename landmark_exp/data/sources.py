"""The on-disk layouts, as `Source`s (see `source_base` for what is checked and how it is reported): the ISBI
2015 challenge folders, images + CSV, and the generated synthetic data (in the ISBI layout)."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from landmark_exp.data.records import DataError, Record
from landmark_exp.data.source_base import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS  # re-exported for predict
from landmark_exp.data.source_base import Source, find_images, follow_link_stub, parse_number, parse_points


class ISBI2015Source(Source):
    """RawImage/<split dir>/NNN.<ext> + AnnotationsByMD/400_<doctor>/NNN.txt; `gt` is "senior", "junior", or
    "mean" of the two (the literature's usual choice)."""

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
            records.append(Record(image_id, image_path, landmarks, self.spacing,
                                  self.annotation_path(doctors[0], image_id), size))
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
    """root/<image_dir>/<files> + CSVs `image_path,1_x,1_y,...,K_x,K_y` (full-image pixels, x = column).

    `splits` maps split name -> CSV file (relative to root), e.g. {train: train_senior.csv}; or one `csv` is
    read as the split "all" (for the datamodule's `random_split`). `image_path` is relative to root/image_dir,
    or to root, or absolute. `spacing_column` names an optional per-row mm/px column, else `spacing` applies.
    Other columns are ignored.
    """

    IMAGE_COLUMN = "image_path"
    LANDMARK_COLUMN = re.compile(r"^(\d+)_([xy])$")

    def __init__(self, root: str | Path, splits: Mapping[str, str] | None = None, csv: str | None = None,
                 image_dir: str = "images", spacing: float | tuple[float, float] = 0.1,
                 spacing_column: str | None = None, num_landmarks: int = 19, landmark_names: list[str] | None = None,
                 on_bad_sample: str = "error", check_bounds: bool = True) -> None:
        super().__init__(num_landmarks, landmark_names, spacing, on_bad_sample, check_bounds)
        if (splits is None) == (csv is None):
            raise ValueError("CSVSource needs either splits {name: file.csv} or one csv (read as split 'all'), not "
                             "both or neither (from the command line: data.source.splits=null data.source.csv=<file>)")
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
                            raise DataError(f"{path}:{line}: duplicate image id {rec.id!r} "
                                            f"(also {path.name}:{first_row[rec.id]})")
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
        found = {(int(m[1]), m[2]): j for j, name in enumerate(names) if (m := self.LANDMARK_COLUMN.match(name))}
        k = max((n for n, _ in found), default=0)
        missing = [f"{n}_{a}" for n in range(1, k + 1) for a in "xy" if (n, a) not in found]
        if k == 0 or missing:
            what = f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}" if k else "none found"
            raise DataError(f"{path}:1: landmark columns must be 1_x,1_y,...,K_x,K_y ({what})")
        if k != self.num_landmarks:
            raise DataError(f"{path}:1: the header has {k} landmarks (1_x..{k}_y), the configuration expects "
                            f"{self.num_landmarks}")
        if self.spacing_column is not None and self.spacing_column not in names:
            raise DataError(f"{path}:1: no spacing column {self.spacing_column!r} in the header")
        if self.spacing_column is None and "spacing" in names:  # else its values would be silently ignored
            raise DataError(f"{path}:1: a 'spacing' column, which this configuration does not read: "
                            "data.source.spacing_column=spacing uses it (per-row mm/px), or rename the column")
        return {"image": names.index(self.IMAGE_COLUMN), "xy": [(found[(n, "x")], found[(n, "y")]) for n in range(1, k + 1)],
                "spacing": None if self.spacing_column is None else names.index(self.spacing_column)}

    def _record(self, path: Path, line: int, row: list[str], n_fields: int, columns: dict) -> Record:
        where = f"{path}:{line}"
        if len(row) != n_fields:
            raise DataError(f"{where}: {len(row)} fields, expected {n_fields} as in the header")
        name = row[columns["image"]].strip()
        if not name:
            raise DataError(f"{where}: empty {self.IMAGE_COLUMN}")
        image_path = self._image_file(name, where)
        points = np.array([(parse_number(row[xi], where, f"{n}_x"), parse_number(row[yi], where, f"{n}_y"))
                           for n, (xi, yi) in enumerate(columns["xy"], start=1)], dtype=np.float64)
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
