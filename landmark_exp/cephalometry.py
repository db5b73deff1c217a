"""Cephalometric measurements of the ISBI 2015 challenge and their clinical classes.

The challenge's second task (Wang et al. 2016, Medical Image Analysis 31) classifies each image by eight
measurements of the 19 landmarks; thresholds and sign conventions are the challenge's. Inputs are millimetre
coordinates (x = column, y = row, pointing down), which keeps angles right for non-square pixels.
- FMA is measured between the S-N line (1-2) and the mandibular plane Go-Gn (10-9).
- In ODI and APDI, FH to palatal plane is positive when the palatal plane (PNS->ANS, 17-18) tips down
  anteriorly; facial plane to AB is positive when B lies ahead of A.
- MW, the incisal tips' distance (11, 12), is negative when the upper tip lies behind the lower; classes:
  2 <= MW <= 4.5 normal, over 4.5 large overjet, 0 edge to edge, any other MW < 2 anterior cross bite.
- Classes are 1 (normal) .. 4; a value on a threshold counts as normal.
A profile facing left (nasion left of sella) is mirrored first: the challenge's images face right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# 0-based indices of the ISBI 2015 landmarks used here
S, N, OR, PO, A, B, POG, ME, GN, GO, LIT, UIT = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
PNS, ANS = 16, 17


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unsigned angle in degrees between vectors (..., 2); atan2 stays exact near 0 and 180 degrees."""
    return np.degrees(np.arctan2(np.abs(_cross(u, v)), (u * v).sum(-1)))


def facing_right(mm: np.ndarray) -> np.ndarray:
    """Mirror (..., 19, 2) coordinates whose profile faces left (nasion left of sella), so all face right."""
    mm = np.array(mm, dtype=np.float64, copy=True)
    left = mm[..., N, 0] < mm[..., S, 0]
    mm[left, :, 0] *= -1
    return mm


def sna(p: np.ndarray) -> np.ndarray:
    return _angle(p[..., S, :] - p[..., N, :], p[..., A, :] - p[..., N, :])


def snb(p: np.ndarray) -> np.ndarray:
    return _angle(p[..., S, :] - p[..., N, :], p[..., B, :] - p[..., N, :])


def anb(p: np.ndarray) -> np.ndarray:
    return sna(p) - snb(p)


def _fh_to_palatal(p: np.ndarray) -> np.ndarray:
    """Angle FH (Po->Or) to palatal plane (PNS->ANS), positive when the palatal plane tips down anteriorly."""
    fh, pp = p[..., OR, :] - p[..., PO, :], p[..., ANS, :] - p[..., PNS, :]
    return np.where(_cross(fh, pp) < 0, -1.0, 1.0) * _angle(fh, pp)


def odi(p: np.ndarray) -> np.ndarray:
    """Overbite depth indicator: AB plane to mandibular plane (Me-Go) plus FH to palatal plane."""
    ab_mp = _angle(p[..., GO, :] - p[..., ME, :], p[..., A, :] - p[..., B, :])
    return ab_mp + _fh_to_palatal(p)


def apdi(p: np.ndarray) -> np.ndarray:
    """Anteroposterior dysplasia indicator: FH to facial plane (N-Pog), +- facial plane to AB, +- FH to palatal."""
    facial = p[..., POG, :] - p[..., N, :]
    ab = p[..., B, :] - p[..., A, :]
    fh_facial = _angle(p[..., PO, :] - p[..., OR, :], facial)
    facial_ab = np.where(_cross(facial, ab) > 0, -1.0, 1.0) * _angle(facial, ab)
    return fh_facial + facial_ab + _fh_to_palatal(p)


def fhi(p: np.ndarray) -> np.ndarray:
    """Facial height index: posterior face height S-Go over anterior face height N-Me."""
    return np.linalg.norm(p[..., GO, :] - p[..., S, :], axis=-1) / np.linalg.norm(p[..., ME, :] - p[..., N, :], axis=-1)


def fma(p: np.ndarray) -> np.ndarray:
    """The challenge's FMA: S-N line to mandibular plane Go-Gn."""
    return _angle(p[..., N, :] - p[..., S, :], p[..., GN, :] - p[..., GO, :])


def mw(p: np.ndarray) -> np.ndarray:
    """Modified Wits: incisal tip distance, negative when the upper tip lies behind the lower."""
    d = np.linalg.norm(p[..., UIT, :] - p[..., LIT, :], axis=-1)
    return np.where(p[..., UIT, 0] < p[..., LIT, 0], -d, d)


def _three_way(low: float, high: float, below: int, above: int) -> Callable[[np.ndarray], np.ndarray]:
    def classify(v: np.ndarray) -> np.ndarray:
        return np.where(v < low, below, np.where(v > high, above, 1))

    return classify


def _classify_mw(v: np.ndarray) -> np.ndarray:
    return np.where(v >= 2.0, np.where(v <= 4.5, 1, 4), np.where(v == 0.0, 2, 3))


@dataclass(frozen=True)
class Measurement:
    name: str
    unit: str
    description: str
    compute: Callable[[np.ndarray], np.ndarray]
    classify: Callable[[np.ndarray], np.ndarray]
    classes: dict[int, str]


MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement("ANB", "deg", "angle A-N-B (SNA - SNB)", anb, _three_way(3.2, 5.7, below=3, above=2),
                {1: "skeletal class I", 2: "skeletal class II", 3: "skeletal class III"}),
    Measurement("SNB", "deg", "angle S-N-B", snb, _three_way(74.6, 78.7, below=2, above=3),
                {1: "normal mandible", 2: "retrognathic mandible", 3: "prognathic mandible"}),
    Measurement("SNA", "deg", "angle S-N-A", sna, _three_way(79.4, 83.2, below=3, above=2),
                {1: "normal maxilla", 2: "prognathic maxilla", 3: "retrognathic maxilla"}),
    Measurement("ODI", "deg", "overbite depth indicator", odi, _three_way(68.4, 80.5, below=3, above=2),
                {1: "normal", 2: "deep bite tendency", 3: "open bite tendency"}),
    Measurement("APDI", "deg", "anteroposterior dysplasia indicator", apdi, _three_way(77.6, 85.2, below=2, above=3),
                {1: "normal", 2: "class II tendency", 3: "class III tendency"}),
    Measurement("FHI", "ratio", "facial height index S-Go / N-Me", fhi, _three_way(0.65, 0.75, below=3, above=2),
                {1: "normal", 2: "short face tendency", 3: "long face tendency"}),
    Measurement("FMA", "deg", "S-N line to mandibular plane Go-Gn", fma, _three_way(26.8, 31.4, below=3, above=2),
                {1: "normal", 2: "high mandibular angle", 3: "low mandibular angle"}),
    Measurement("MW", "mm", "modified Wits: incisal tip distance", mw, _classify_mw,
                {1: "normal", 2: "edge to edge", 3: "anterior cross bite", 4: "large overjet"}),
)
NAMES: tuple[str, ...] = tuple(m.name for m in MEASUREMENTS)


def measure(mm: np.ndarray) -> dict[str, np.ndarray]:
    """(..., 19, 2) millimetre coordinates -> {name: value (...)}."""
    mm = np.asarray(mm, dtype=np.float64)
    if mm.shape[-2:] != (19, 2):
        raise ValueError(f"cephalometric measurements need the 19 ISBI 2015 landmarks as (..., 19, 2), got {mm.shape}")
    p = facing_right(mm)
    return {m.name: m.compute(p) for m in MEASUREMENTS}


def classify(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: value} -> {name: class (1 = normal, 2..4 as in `Measurement.classes`)}."""
    return {m.name: m.classify(np.asarray(values[m.name])).astype(int) for m in MEASUREMENTS}


def analyse(mm: np.ndarray) -> dict[str, dict]:
    """One image's (19, 2) mm landmarks -> {name: {value, unit, class, label, description}} (JSON-ready)."""
    values = measure(mm)
    classes = classify(values)
    return {m.name: {"value": float(values[m.name]), "unit": m.unit, "class": int(classes[m.name]),
                     "label": m.classes[int(classes[m.name])], "description": m.description}
            for m in MEASUREMENTS}


def compare(pred_mm: np.ndarray, true_mm: np.ndarray, ids: Sequence[str] | None = None) -> tuple[dict, pd.DataFrame]:
    """Predicted vs ground-truth (N, 19, 2) mm landmarks -> per-measurement accuracy (% of images whose
    predicted class is the ground truth's: the challenge's task) and MAE (in its unit); a per-image table."""
    pv, tv = measure(pred_mm), measure(true_mm)
    pc, tc = classify(pv), classify(tv)
    n = len(pv[NAMES[0]])
    summary: dict = {"n_images": int(n), "per_measurement": []}
    frame = pd.DataFrame({"image_id": list(ids) if ids is not None else np.arange(n)})
    for m in MEASUREMENTS:
        acc = float(100.0 * (pc[m.name] == tc[m.name]).mean())
        mae = float(np.abs(pv[m.name] - tv[m.name]).mean())
        summary["per_measurement"].append({"measurement": m.name, "unit": m.unit, "accuracy": acc, "mae": mae})
        frame[f"{m.name}_pred"], frame[f"{m.name}_true"] = pv[m.name], tv[m.name]
        frame[f"{m.name}_class_pred"], frame[f"{m.name}_class_true"] = pc[m.name], tc[m.name]
    summary["mean_accuracy"] = float(np.mean([r["accuracy"] for r in summary["per_measurement"]]))
    return summary, frame
