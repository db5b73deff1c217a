"""predict.py's output folder: which files an image gets (its JSON last, marking it done), what an earlier run
left there, and which of this run's images an interrupted earlier run already finished (resume=true)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from landmark_exp.data.records import DataError
from landmark_exp.files import write_csv, write_json
from landmark_exp.predictor import LandmarkPrediction

RUN_FILES = ("predictions.csv", "measurements.csv", "failures.csv", "summary.json")


def image_outputs(out_dir: Path, image_id: str) -> list[Path]:
    """The files predict writes for one image (the JSON last: it marks the image done)."""
    return [out_dir / f"{image_id}.csv", out_dir / f"{image_id}_overlay.jpg", out_dir / f"{image_id}.json"]


def read_record(path: Path) -> dict | None:
    """A per-image JSON this command wrote (id, file, landmarks), else None."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and {"id", "file", "landmarks"} <= record.keys()
    return record if ok and path.name == f"{record['id']}.json" else None


def earlier_results(out_dir: Path) -> list[Path]:
    """What an earlier predict run left in `out_dir`: its run-level files and every image's files."""
    found = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    for path in sorted(out_dir.glob("*.json")):
        record = read_record(path) if path.name not in RUN_FILES else None
        if record is not None:
            found += [p for p in image_outputs(out_dir, str(record["id"])) if p.exists()]
    return found


def finished(out_dir: Path, files: Sequence[Path], ids: Sequence[str], model: str) -> dict[str, dict]:
    """resume=true: the records of the images an earlier run into `out_dir` finished (their JSON, written last,
    exists and names the same file), by id; an image another model predicted is a one-line error."""
    done = {}
    for path, image_id in zip(files, ids, strict=True):
        record = read_record(out_dir / f"{image_id}.json")
        if record is None or record["file"] != str(path):
            continue
        if record.get("model") != model:
            raise DataError(f"resume: {out_dir / (image_id + '.json')} was predicted by {record.get('model')}, "
                            f"not {model}; use another output_dir or overwrite=true")
        done[image_id] = record
    return done


def clear_earlier(out_dir: Path, args: dict) -> None:
    earlier = earlier_results(out_dir)
    if not earlier or args["resume"]:
        return
    if not args["overwrite"]:
        raise DataError(f"output_dir={out_dir}: holds results of an earlier run ({len(earlier)} files, e.g. "
                        f"{earlier[0].name}); choose another folder, overwrite=true to replace them, or resume=true "
                        "to finish an interrupted run")
    for path in earlier:
        path.unlink(missing_ok=True)


def write_summary(out_dir: Path, results: list[dict], failures: list[dict], model: dict,
                  interrupted: dict | None = None) -> None:
    """The run-level files: predictions.csv, measurements.csv (ISBI landmarks), failures.csv and summary.json
    (`model`: which model(s), backend and device; `interrupted`: by what, and how far it got)."""
    rows = [{"image_id": r["id"], "file": r["file"], **lm} for r in results for lm in r["landmarks"]]
    if rows:
        write_csv(out_dir / "predictions.csv", pd.DataFrame(rows))
    measured = [r for r in results if "measurements" in r]
    if measured:
        table = [{"image_id": r["id"], **{k: v for name, m in r["measurements"].items()
                                           for k, v in ((name, m["value"]), (f"{name}_class", m["class"]),
                                                        (f"{name}_label", m["label"]))}} for r in measured]
        write_csv(out_dir / "measurements.csv", pd.DataFrame(table))
    write_csv(out_dir / "failures.csv", pd.DataFrame(failures, columns=["file", "reason"]))
    write_json(out_dir / "summary.json", {
        **model,
        "n_images": len(results), "n_failed": len(failures), "interrupted": interrupted, "failures": failures,
        "images": [{k: r.get(k) for k in ("id", "file", "spacing_mm", "spacing_source", "image_reliability",
                                          "domain_distance")}
                   for r in results],
        "n_flagged_images": sum(bool(r.get("flagged")) for r in results),
        "flagged": [{"id": r["id"], "file": r["file"], "landmarks": r["flagged"]} for r in results if r.get("flagged")],
    })


def landmarks_frame(pred: LandmarkPrediction, spacing: tuple[float, float], names: Sequence[str]) -> pd.DataFrame:
    """One row per landmark: original pixels, millimetres, peak confidence and spread (mm, root of summed variances)."""
    sx, sy = spacing
    spread_mm = np.sqrt((pred.spread[:, 0] * sx) ** 2 + (pred.spread[:, 1] * sy) ** 2)
    return pd.DataFrame({
        "landmark": np.arange(1, len(names) + 1), "name": list(names),
        "x_px": pred.xy[:, 0], "y_px": pred.xy[:, 1], "x_mm": pred.xy[:, 0] * sx, "y_mm": pred.xy[:, 1] * sy,
        "confidence": pred.confidence, "spread_mm": spread_mm,
        # a calibrated detector's reliability score: over 1 the landmark is flagged (NaN: not calibrated)
        "reliability": pred.reliability if pred.reliability is not None else np.full(len(names), np.nan),
        "flag": pred.flags or [""] * len(names),  # why the landmark cannot be trusted; empty when it can
    })
