"""A scored split as one typed object (`Scores`: predictions and truth in the original images' pixels with
their spacing, so every figure is millimetres after every resize was undone), and the `report` every command
writes from it; data-source-specific extras come from `isbi.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landmark_exp.data.images import read_grey
from landmark_exp.data.records import Record
from landmark_exp.metrics import radial_errors_mm, summarize
from landmark_exp.pictures import draw_overlay, write_report_plots
from landmark_exp.reliability import separation
from landmark_exp.reports import (
    console,
    outlier_landmarks,
    print_report,
    save_png,
    unlearned,
    untrained_landmarks,
    warn_outliers,
    warn_unlearned,
    warn_untrained,
    write_results,
)


@dataclass
class Scores:
    """One split's predictions, scored: (N, K, 2) original pixels, (N, 2) mm/px, (N, K) mm errors."""

    records: list[Record]
    names: list[str]
    pred: np.ndarray
    peak: np.ndarray
    reference_pred: np.ndarray  # what the report compares with: the mean training shape, or a cascade's first stage
    reference_name: str
    # (N, K) a calibrated detector's reliability score, else None; and which landmarks were flagged (any reason)
    reliability: np.ndarray | None = None
    flagged: np.ndarray | None = None
    reasons: list[list[str]] | None = None  # (N, K) why each flagged landmark is ("" when it is not)
    signals: dict[str, np.ndarray] = field(default_factory=dict)  # (N, K) each reliability signal (reliability.py)
    true: np.ndarray = field(init=False)
    spacing: np.ndarray = field(init=False)
    errors: np.ndarray = field(init=False)
    reference_errors: np.ndarray = field(init=False)
    summary: dict = field(init=False)
    reference: dict = field(init=False)

    def __post_init__(self) -> None:
        self.true = np.stack([r.landmarks for r in self.records]).astype(np.float64)
        self.spacing = np.array([r.spacing for r in self.records], dtype=np.float64)
        self.errors = radial_errors_mm(np.asarray(self.pred, dtype=np.float64), self.true, self.spacing)
        self.reference_errors = radial_errors_mm(np.asarray(self.reference_pred, dtype=np.float64), self.true,
                                                 self.spacing)
        self.summary = summarize(self.errors, self.names)
        self.reference = summarize(self.reference_errors, self.names)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def as_results(self) -> dict[str, np.ndarray]:
        """The arrays `reports.predictions_frame` writes."""
        optional = {"flagged": self.flagged, "reliability": self.reliability}
        return {"pred": self.pred, "true": self.true, "spacing": self.spacing, "errors": self.errors,
                "peak": self.peak, **{k: v for k, v in optional.items() if v is not None}}

    def separation(self) -> dict | None:
        """How well the flags and the reliability score (else 1 - the heatmap peak) pick out errors over 5 mm."""
        if self.flagged is None:
            return None
        score = self.reliability if self.reliability is not None else 1.0 - np.asarray(self.peak, dtype=np.float64)
        out = {"score": "reliability" if self.reliability is not None else "1 - heatmap peak",
               **separation(score, self.flagged, self.errors)}
        if "domain" in self.signals:  # images further from the training images than any of them (domain.py)
            out["unlike_training_images"] = int((self.signals["domain"][:, 0] > 1).sum())
        return out


def report(scores: Scores, out_dir: Path, title: str, split: str, checkpoint: str = "", overlays: int = 0,
           extra: dict[str, Any] | None = None) -> None:
    """Print the millimetre report and write it (metrics.json, per_landmark.csv, predictions.csv, overlays)."""
    summary, names = scores.summary, scores.names
    print_report(summary, title, scores.reference, baseline_name=scores.reference_name)
    extra = {**(extra or {}), "split": split, "checkpoint": checkpoint,
             "reference": {"name": scores.reference_name,
                           **{k: v for k, v in scores.reference.items() if k != "per_landmark"}}}
    for key, found, warn in (("unlearned", unlearned(summary, scores.reference, scores.reference_name), warn_unlearned),
                             ("untrained_landmarks", untrained_landmarks(scores.peak, names), warn_untrained),
                             ("outlier_landmarks", outlier_landmarks(summary), warn_outliers)):
        if found:
            warn(found, split)
            extra[key] = found
    sep = scores.separation()
    if sep is not None:
        extra["reliability"] = sep
        print_separation(sep)
    write_results(out_dir, summary, extra, scores.ids, scores.as_results(), names)
    for j, rec in enumerate(scores.records[:overlays]):
        flags = (scores.reasons[j] if scores.reasons is not None
                 else None if scores.flagged is None else ["flagged" if f else "" for f in scores.flagged[j]])
        overlay = draw_overlay(read_grey(rec.image_path), rec.landmarks, scores.pred[j], numbers=True, names=names,
                               errors_mm=scores.errors[j], flags=flags)
        save_png(out_dir / "overlays" / f"{rec.id}.png", overlay)
    write_report_plots(out_dir, summary, scores.errors, scores.reference_errors, scores.reference_name)
    console.print(f"results written to {out_dir}")


def print_separation(sep: dict) -> None:
    """One line: how many landmarks are flagged and how many of the gross errors they catch."""
    auroc = "n/a" if sep["auroc"] is None else f"{sep['auroc']:.3f}"
    caught = ("no errors over" if sep["gross_flagged_share"] is None
              else f"{100 * sep['gross_flagged_share']:.0f} % of the {sep['gross_errors']} errors over")
    unlike = sep.get("unlike_training_images")
    whole = f" ({unlike} image(s) unlike the training images, flagged whole)" if unlike else ""
    console.print(f"flags: {100 * sep['flagged_share']:.1f} % of landmarks flagged{whole}, {caught} "
                  f"{sep['gross_mm']:g} mm; AUROC of the {sep['score']} for those errors {auroc}",
                  soft_wrap=True, highlight=False)


def same_image_note(scores: Scores, same: list[tuple[str, str]], named: str) -> dict[str, Any]:
    """Images of the scored split that are byte-identical to training images (ISBI 2015: Test1's 173 and 283 are
    training images 144 and 038, annotated again): said on the console, and the MRE without them."""
    if not same:
        return {}
    listed = ", ".join(f"{a} (= training {b})" for a, b in same)
    seen = {a for a, _ in same}
    rest = [n for n, i in enumerate(scores.ids) if i not in seen]
    without = float(scores.errors[rest].mean()) if rest else float("nan")
    console.print(f"[bold yellow]warning:[/] {len(same)} {named} image(s) are byte-identical to training images: "
                  f"{listed}; MRE {scores.summary['mre']:.4f} mm with them, {without:.4f} without", soft_wrap=True)
    return {"same_image_in_training": [{"id": a, "training_id": b} for a, b in same],
            "mre_without_same_images": without if rest else None}
