"""How far to trust each landmark: signals of a likely gross error, calibrated on validation images into one score.

Signals, each per landmark and larger when the placement is more doubtful:
  shape   the shape model's z: distance from where the other landmarks put it (`shape.py`)
  stages  a cascade's second stage moved it this far from the first stage's estimate (first-stage model pixels)
  passes  the second stage's test-time patches (shifts, views) disagree this much (working pixels, RMS)
  peak    1 - the heatmap's peak value
  domain  the whole image's distance from the training images (`domain.py`), the same for all its landmarks
Each threshold is the same quantile of its signal's validation values, chosen so that `target` of the
validation landmarks are flagged ("domain" keeps its own scale, threshold 1). The score is the largest signal
over its threshold: above 1 the landmark is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from landmark_exp.data.records import CheckpointError

SIGNALS = ("shape", "stages", "passes", "peak", "domain")
FIXED = {"domain": 1.0}  # signals measured against their own reference: thresholds not calibrated
GROSS_MM = 5.0  # what "a gross error" means in the reports: the errors a flag is meant to catch
REASONS = {"shape": "off the shape of the others", "stages": "stages disagree", "passes": "views disagree",
           "peak": "weak heatmap peak", "domain": "image unlike the training images"}


@dataclass
class Reliability:
    thresholds: dict[str, float]  # per signal; a signal without one does not count
    target: float = 0.03  # share of validation landmarks flagged at calibration
    calibrated_on: str = ""

    def score(self, signals: dict[str, np.ndarray]) -> np.ndarray:
        """(..., K) the largest signal over its threshold (0 where no calibrated signal is present)."""
        parts = [np.asarray(signals[s], dtype=np.float64) / t for s, t in self.thresholds.items() if s in signals]
        return np.max(np.stack(parts), axis=0) if parts else np.zeros_like(next(iter(signals.values()), np.zeros(0)))

    def reasons(self, signals: dict[str, np.ndarray]) -> list[str]:
        """(K,) why each landmark is flagged ("" when it is not): the signal furthest over its threshold."""
        names = [s for s in self.thresholds if s in signals]
        if not names:
            return []
        ratios = np.stack([np.asarray(signals[s], dtype=np.float64) / self.thresholds[s] for s in names])
        worst = np.argmax(ratios, axis=0)
        return [REASONS[names[w]] if ratios[w, j] > 1 else "" for j, w in enumerate(worst)]

    @classmethod
    def calibrate(cls, signals: dict[str, np.ndarray], target: float, calibrated_on: str) -> Reliability:
        """Thresholds at one quantile q of each signal's (N, K) validation values, q such that `target` of the
        landmarks score over 1 (bisection: the flagged share falls as q rises)."""
        if not 0 < target < 0.5:
            raise ValueError(f"reliability target {target!r}: a share of landmarks in (0, 0.5)")
        values = {s: np.asarray(v, dtype=np.float64).ravel() for s, v in signals.items() if s in SIGNALS}
        values = {s: v[np.isfinite(v)] for s, v in values.items()}
        values = {s: v for s, v in values.items() if s not in FIXED and len(v) and np.quantile(v, 0.99) > 0}
        if not values:
            raise ValueError("no reliability signal to calibrate")
        fixed = {s: t for s, t in FIXED.items() if s in signals}
        lo, hi = 1.0 - 4 * target, 1.0
        for _ in range(40):
            q = (lo + hi) / 2
            rel = cls({**{s: float(np.quantile(v, q)) for s, v in values.items()}, **fixed}, target, calibrated_on)
            share = float((rel.score({s: np.asarray(signals[s]) for s in rel.thresholds}) > 1).mean())
            lo, hi = (q, hi) if share > target else (lo, q)
        return cls({**{s: max(float(np.quantile(v, hi)), 1e-9) for s, v in values.items()}, **fixed}, target,
                   calibrated_on)

    def to_dict(self) -> dict:
        return {"thresholds": self.thresholds, "target": self.target, "calibrated_on": self.calibrated_on}

    @classmethod
    def from_dict(cls, d: object, where: str) -> Reliability:
        try:
            thresholds = {str(k): float(v) for k, v in d["thresholds"].items()}  # type: ignore[index]
            target = float(d.get("target", 0.03))  # type: ignore[union-attr]
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{where}: reliability calibration is not valid ({type(e).__name__}: {e})") from None
        bad = [k for k, v in thresholds.items() if k not in SIGNALS or not (math.isfinite(v) and v > 0)]
        if bad:
            raise CheckpointError(f"{where}: reliability thresholds {bad} are not known signals with positive values")
        return cls(thresholds, target, str(d.get("calibrated_on", "")))  # type: ignore[union-attr]


def separation(score: np.ndarray, flagged: np.ndarray, errors: np.ndarray, gross: float = GROSS_MM) -> dict:
    """How well a reliability score separates errors over `gross` mm: AUROC of the score, the share of such errors
    flagged and the share of all landmarks flagged."""
    score, flagged, errors = (np.asarray(a).ravel() for a in (score, flagged, errors))
    bad = errors > gross
    out = {"gross_mm": gross, "gross_errors": int(bad.sum()), "landmarks": int(bad.size),
           "flagged_share": float(flagged.mean()) if flagged.size else float("nan"),
           "gross_flagged_share": float(flagged[bad].mean()) if bad.any() else None, "auroc": None}
    if bad.any() and not bad.all():
        s = np.nan_to_num(score.astype(np.float64), nan=np.inf, posinf=1e300)
        out["auroc"] = float(binary_auroc(torch.from_numpy(s), torch.from_numpy(bad.astype(np.int64))))
    return out
