"""What only ISBI 2015 data gets: scores against each doctor, the cephalometric classification task and the
published results table. Switched on by the data itself (an ISBI-layout source with the challenge's 19
landmarks on its 1935 x 2400 images), never by the name of a split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landmark_exp.cephalometry import compare
from landmark_exp.data.records import ISBI2015_LANDMARKS
from landmark_exp.data.sources import ISBI2015Source, SyntheticSource, parse_points
from landmark_exp.files import write_csv
from landmark_exp.metrics import radial_errors_mm, summarize
from landmark_exp.reports import cephalometry_table, console, published_table, summary_table
from landmark_exp.scores import Scores

ISBI2015_IMAGE_HW = (2400, 1935)


def is_isbi2015(source: object, scores: Scores) -> bool:
    """The challenge's data: its layout (not the synthetic stand-in), landmarks and image size."""
    sizes = {r.size for r in scores.records}
    return (isinstance(source, ISBI2015Source) and not isinstance(source, SyntheticSource)
            and list(scores.names) == list(ISBI2015_LANDMARKS) and sizes <= {ISBI2015_IMAGE_HW, None})


def isbi_extras(source: object, scores: Scores, split: str, scored: str, out_dir: Path,
                compare_published: bool = True) -> dict[str, Any]:
    """Everything ISBI-specific for one scored split: printed, written, and returned for metrics.json."""
    extra: dict[str, Any] = {}
    if isinstance(source, ISBI2015Source) and not isinstance(source, SyntheticSource):
        extra["by_ground_truth"] = each_doctor(source, scores, split)
    if list(scores.names) == list(ISBI2015_LANDMARKS):
        extra["cephalometry"] = cephalometry(scores, split, out_dir)
    if compare_published and is_isbi2015(source, scores):
        console.print(published_table(scores.summary, split=scored))
    return extra


def each_doctor(source: ISBI2015Source, scores: Scores, split: str) -> dict[str, Any]:
    """The same predictions scored against the senior, junior and mean annotations."""
    truth = {d: np.stack([parse_points(source.annotation_path(d, i), source.num_landmarks) for i in scores.ids])
             for d in ("senior", "junior")}
    truth["mean"] = (truth["senior"] + truth["junior"]) / 2
    out = {}
    for gt, t in truth.items():
        s = summarize(radial_errors_mm(scores.pred, t, scores.spacing), scores.names)
        console.print(summary_table(s, f"{split} against ground truth = {gt}"))
        out[gt] = {k: v for k, v in s.items() if k != "per_landmark"}
    return out


def cephalometry(scores: Scores, split: str, out_dir: Path) -> dict[str, Any]:
    """The challenge's classification task: measurements from predicted vs ground-truth landmarks."""
    sp = scores.spacing[:, None, :]
    summary, frame = compare(scores.pred * sp, scores.true * sp, scores.ids)
    console.print(cephalometry_table(summary, f"{split}: cephalometric classification (ISBI 2015 task 2) vs ground truth"))
    write_csv(out_dir / "cephalometry.csv", frame)
    return summary
