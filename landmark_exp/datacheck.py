"""`python -m landmark_exp.datacheck data=<isbi2015|csv|synthetic> data.source.root=<folder>`: a dataset
checked before anyone trains on it, with training's own checks (none is written a second time here), every
problem listed instead of the first one raised (the source's `on_bad_sample=skip`): every split loaded, the
training splits carved, every image decoded as the image cache decodes it. Where two doctors annotated the
images (the ISBI layout's 400_senior and 400_junior; images + CSV: `doctors=[first.csv,second.csv]`) their
distance in mm is summarised. Writes datacheck.json and datacheck.csv (one row per problem: split, file, line,
problem) into the run folder; exit status 1 when there is any problem.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from rich.markup import escape
from rich.table import Table

from landmark_exp.arguments import plain
from landmark_exp.data.images import read_ahead
from landmark_exp.data.records import DataError, Record
from landmark_exp.data.sources import CSVSource, ISBI2015Source, Source
from landmark_exp.files import write_csv, write_json
from landmark_exp.jobs import guard, run_command
from landmark_exp.registry import build
from landmark_exp.reports import console

# "<file>[:<line>]: <problem>", as every DataError of the sources and image readers starts
_WHERE = re.compile(r"^(?P<file>[^\s()][^()]*?)(?::(?P<line>\d+))?: (?P<problem>.+)$")
_REFERENCED = re.compile(r" \(referenced at [^()]*\)$")
KINDS = {  # kind of problem <- what the message says (images that cannot be decoded are "unreadable" too)
    "outside": re.compile(r"is outside the \d+x\d+ image"),
    "duplicate_id": re.compile(r"duplicate image id|is in more than one split"),
    "landmark_count": re.compile(r"landmark lines, expected|fields, expected|the header has \d+ landmarks"),
    "unreadable": re.compile(r"cannot read (image|DICOM)|image file not found|referenced by the CSV not found"
                             r"|DICOM without"),
    "other": re.compile(r""),
}
COLUMNS = ["split", "file", "line", "problem"]


class Problems:
    """Every problem once, under the split it was found in (a load that repeats one, e.g. per doctor, adds none)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._seen: set[str] = set()

    def add(self, split: str, message: str, kind: str | None = None) -> None:
        key = _REFERENCED.sub("", message)  # one image referenced by two CSVs is one problem
        if key in self._seen:
            return
        self._seen.add(key)
        m = _WHERE.match(message)
        at_file = m is not None and ("/" in m["file"] or "\\" in m["file"] or bool(Path(m["file"]).suffix))
        file, line, text = (m["file"], m["line"], m["problem"]) if at_file else ("", None, message)
        kind = kind or next(k for k, pattern in KINDS.items() if pattern.search(message))
        self.rows.append({"split": split, "file": file, "line": int(line) if line else None, "problem": text,
                          "kind": kind})


def collect(source: Source, problems: Problems, split: str, load: Callable[[], Any]) -> Any:
    """`load()`, the samples the source skipped and a fatal DataError (then None is returned) added to `problems`."""
    start, fatal, out = len(source.skipped), [], None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the source warns of each skipped sample: they are listed instead
            out = load()
    except DataError as e:
        fatal = [str(e)]
    for message in [*source.skipped[start:], *fatal]:
        problems.add(split, message)
    return out


def csv_rows(path: Path) -> dict[str, int]:
    """Image id -> line of its first row in a CSV of the images + CSV layout (to say where a bad image is named)."""
    rows: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            at = header.index(CSVSource.IMAGE_COLUMN)
            for row in reader:
                if len(row) > at and row[at].strip():
                    rows.setdefault(Path(row[at].strip()).stem, reader.line_num)
    except (OSError, ValueError, csv.Error):
        pass
    return rows


def decode(records: list[Record], split: str, problems: Problems, normalize: str,
           workers: int | None) -> list[tuple[int, int]]:
    """(height, width) of each image `read_grey` accepts; each one it refuses is a problem naming the file (and,
    in the images + CSV layout, the CSV row that names it)."""
    sizes, lines = [], {}
    shapes = read_ahead([r.image_path for r in records], normalize, workers, then=np.shape)
    for r, got in zip(records, shapes, strict=True):
        if not isinstance(got, DataError):
            sizes.append((int(got[0]), int(got[1])))
            continue
        message, table = str(got), r.annotation_path
        if table is not None and table.suffix.lower() == ".csv":
            line = lines.setdefault(table, csv_rows(table)).get(r.id)
            message += f" (referenced at {table}:{line})" if line else f" (referenced in {table})"
        problems.add(split, message, "unreadable")
    return sizes


def size_summary(sizes: list[tuple[int, int]]) -> dict:
    """Image sizes as "WxH": the smallest, median and largest by area, how many distinct, the commonest."""
    if not sizes:
        return {}
    by_area = sorted(sizes, key=lambda hw: (hw[0] * hw[1], hw))
    text = [f"{w}x{h}" for h, w in by_area]
    return {"min": text[0], "median": text[len(text) // 2], "max": text[-1], "distinct": len(set(text)),
            "most_common": dict(Counter(text).most_common(5))}


def disagreement(first: list[Record], second: list[Record], names: list[str], ids: set[str] | None = None,
                 top: int = 5) -> dict | None:
    """The two doctors' distance per landmark in mm (at the first's spacing) over the images both annotated
    (and in `ids`): mean, median, max, each landmark's mean, the 3 largest landmarks and `top` images."""
    other = {r.id: r for r in second}
    pairs = [(a, other[a.id]) for a in first if a.id in other and (ids is None or a.id in ids)]
    if not pairs:
        return None
    d = np.stack([np.hypot(*((a.landmarks - b.landmarks) * np.asarray(a.spacing)).T) for a, b in pairs])
    per_landmark, per_image = d.mean(axis=0), d.mean(axis=1)
    i, k = np.unravel_index(int(np.argmax(d)), d.shape)
    return {
        "images": len(pairs), "mean_mm": float(d.mean()), "median_mm": float(np.median(d)), "max_mm": float(d.max()),
        "max_at": {"image": pairs[i][0].id, "landmark": names[k]},
        "per_landmark_mm": dict(zip(names, per_landmark.tolist(), strict=True)),
        "largest_landmarks": [{"landmark": names[j], "mean_mm": float(per_landmark[j])}
                              for j in np.argsort(-per_landmark, kind="stable")[:3]],
        "largest_images": [{"image": pairs[j][0].id, "mean_mm": float(per_image[j]), "max_mm": float(d[j].max())}
                           for j in np.argsort(-per_image, kind="stable")[:top]],
    }


def doctor_records(wanted: Any, data: dict, source: Source, splits: list[str],
                   problems: Problems) -> tuple[str, dict[str, tuple[list[Record], list[Record]]]]:
    """("<first> vs <second>", split -> both doctors' records) where two doctors annotated the images, else ("", {})."""
    if wanted is False:
        return "", {}
    if isinstance(source, ISBI2015Source):
        if wanted:
            raise DataError(f"doctors={wanted}: CSV files are for data=csv; the ISBI layout compares its "
                            "AnnotationsByMD/400_senior and 400_junior folders (doctors=null)")
        if not all((source.root / "AnnotationsByMD" / d).is_dir() for d in source.DOCTORS.values()):
            return "", {}
        return "senior vs junior", {s: tuple(collect(source, problems, s, lambda s=s, d=d: source.load_doctor(s, d))
                                             or [] for d in ("senior", "junior")) for s in splits}
    if not wanted or not isinstance(source, CSVSource):
        return "", {}
    if not isinstance(wanted, list) or len(wanted) != 2:
        raise DataError(f"doctors={wanted}: give the two doctors' CSV files, relative to data.source.root, "
                        "e.g. doctors=[doctor1.csv,doctor2.csv]")
    both = []
    for name in map(str, wanted):
        one = build({**data["source"], "splits": None, "csv": name, "on_bad_sample": "skip"}, "data.source")
        both.append(collect(one, problems, name, lambda one=one: one.load("all")) or [])
    return f"{Path(wanted[0]).stem} vs {Path(wanted[1]).stem}", {s: (both[0], both[1]) for s in splits}


def check(cfg: DictConfig) -> dict:
    """Every check of the dataset `cfg.data` describes; nothing printed or written (see `datacheck`)."""
    data = plain(cfg.data)
    data["source"]["on_bad_sample"] = "skip"  # every problem listed, none raised
    dm = build(data, "data")
    source = dm.source
    source.prepare()  # the synthetic data is generated on first use
    root = getattr(source, "root", None)
    if root is not None and not Path(root).is_dir():
        raise DataError(f"data.source.root={root}: no such folder")
    problems = Problems()
    splits = source.splits()
    records = {s: collect(source, problems, s, lambda s=s: source.load(s)) or [] for s in splits}
    seen: dict[str, str] = {}
    for s, recs in records.items():
        for r in recs:
            if seen.setdefault(r.id, s) != s:
                problems.add(s, f"{r.image_path}: image id {r.id!r} is in more than one split ({seen[r.id]} and {s})")
    carved = collect(source, problems, "training", dm.split_records) or {}
    label, doctors = doctor_records(plain(cfg.get("doctors")), data, source, splits, problems)
    report: dict[str, dict] = {}
    for s, recs in records.items():
        sizes = decode(recs, s, problems, dm.cache.normalize, cfg.get("workers"))
        pair = doctors.get(s)
        report[s] = {
            "images": len(recs), "ready": len(sizes), "image_size": size_summary(sizes),
            "spacing_mm": sorted({tuple(r.spacing) for r in recs}), "landmarks": sorted({r.num_landmarks for r in recs}),
            **{kind: sum(r["split"] == s and r["kind"] == kind for r in problems.rows) for kind in KINDS},
            "doctors": disagreement(*pair, source.landmark_names, {r.id for r in recs}, int(cfg.get("top", 5)))
            if pair else None,
        }
    return {
        "data": {"layout": type(source).__name__, "root": str(getattr(source, "root", "")),
                 "num_landmarks": source.num_landmarks, "gt": getattr(source, "gt", None)},
        "splits": report, "doctors": label or None,
        "training": {name: len(r) for name, r in carved.items()},
        "same_images_as_training": {name: [{"image": a, "training_image": b} for a, b in dm.same_images_as_training(name)]
                                    for name in carved if name != "train"},
        "problems": problems.rows, "images_ready": sum(v["ready"] for v in report.values()), "ok": not problems.rows,
    }


def _spacing(values: list) -> str:
    return ", ".join(f"{x:g}" if x == y else f"{x:g}x{y:g}" for x, y in values)


def _sizes(s: dict) -> str:
    if not s:
        return "-"
    return s["min"] if s["distinct"] == 1 else f"{s['min']} / {s['median']} / {s['max']} ({s['distinct']} sizes)"


def print_summary(report: dict, out: Path, problem_lines: int = 8) -> None:
    """The table, one line per split on the doctors, the training splits, the first problems and the verdict."""
    d = report["data"]
    table = Table(title=f"data check: {d['layout']} {escape(d['root'])}", title_justify="left")
    for col in ("split", "images", "ready", "size WxH (min / median / max)", "spacing mm", "landmarks",
                *(k.replace("_", " ") for k in KINDS)):
        table.add_column(col, justify="left" if col.startswith(("split", "size")) else "right")
    for s, v in report["splits"].items():
        table.add_row(s, str(v["images"]), str(v["ready"]), _sizes(v["image_size"]), _spacing(v["spacing_mm"]),
                      ", ".join(map(str, v["landmarks"])) or "-", *(str(v[k]) for k in KINDS))
    console.print(table)
    for s, v in report["splits"].items():
        g = v["doctors"]
        if g:
            console.print(
                f"doctors ({report['doctors']}), {s}, {g['images']} images: mean {g['mean_mm']:.2f} mm, max "
                f"{g['max_mm']:.2f} mm ({g['max_at']['image']} {g['max_at']['landmark']}); largest landmarks "
                + ", ".join(f"{x['landmark']} {x['mean_mm']:.2f}" for x in g["largest_landmarks"]) + "; images "
                + ", ".join(f"{x['image']} {x['mean_mm']:.2f}" for x in g["largest_images"][:3]), soft_wrap=True)
    if report["training"]:
        same = "; ".join(f"{name}: {len(p)} images byte-identical to training images ("
                         + ", ".join(f"{x['image']}={x['training_image']}" for x in p[:4]) + ")" for name, p in report["same_images_as_training"].items() if p)
        console.print("training would use " + ", ".join(f"{k} {n}" for k, n in report["training"].items())
                      + (f" (note: {same})" if same else ""), soft_wrap=True)
    rows = report["problems"]
    for r in rows[:problem_lines]:
        where = f"{r['file']}:{r['line']}" if r["line"] else r["file"]
        console.print(f"  [red]{escape(r['split'])}[/] {escape(where)}{': ' if where else ''}{escape(r['problem'])}",
                      soft_wrap=True)
    if len(rows) > problem_lines:
        console.print(f"  ... and {len(rows) - problem_lines} more")
    if rows:
        console.print(f"[bold red]{len(rows)} problem(s)[/]: see {escape(str(out / 'datacheck.csv'))}", soft_wrap=True)
    else:
        console.print(f"[bold green]OK[/]: {report['images_ready']} images ready to train")


@guard
def datacheck(cfg: DictConfig) -> dict:
    """The Hydra job behind `python -m landmark_exp.datacheck`: check, print, write; exit status 1 on any problem."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = check(cfg)
    write_json(out / "datacheck.json", report)
    frame = pd.DataFrame(report["problems"], columns=COLUMNS).astype({"line": "Int64"})
    write_csv(out / "datacheck.csv", frame)
    print_summary(report, out)
    if not report["ok"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    run_command("datacheck", datacheck)
