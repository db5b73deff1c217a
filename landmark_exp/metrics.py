"""Millimetre metrics, the product's verdict: errors are distances in the original image's pixel grid,
scaled by its spacing per axis: e = sqrt(((dx * sx)^2 + (dy * sy)^2)). MRE, SD (ddof=1) and median are over
all (image, landmark) pairs; SDR@t is the percentage of pairs with e <= t mm (the challenge's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric

THRESHOLDS_MM: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)


def radial_errors_mm(pred_px, true_px, spacing):
    """(N, K, 2) predicted and true original-pixel coordinates, (N, 2) or (2,) mm/px -> (N, K) errors in mm."""
    lib = torch if isinstance(pred_px, torch.Tensor) else np
    spacing = spacing if isinstance(spacing, torch.Tensor | np.ndarray) else np.asarray(spacing, dtype=np.float64)
    sp = spacing[..., None, :] if spacing.ndim == 2 else spacing
    d = (pred_px - true_px) * sp
    return lib.sqrt((d**2).sum(-1))


def _stats(e: np.ndarray) -> dict[str, float]:
    e = np.asarray(e, dtype=np.float64).ravel()
    sd = float(e.std(ddof=1)) if e.size > 1 else 0.0
    return {"mre": float(e.mean()), "sd": sd, "median": float(np.median(e)),
            **{f"sdr_{t:g}": float(100.0 * (e <= t).mean()) for t in THRESHOLDS_MM}}


def summarize(errors: np.ndarray, names: Sequence[str] | None = None) -> dict:
    """(N, K) mm errors -> {"n_images", "n_landmarks", "mre", "sd", "median", "sdr_2", ..., "per_landmark": [...]}."""
    errors = np.asarray(errors, dtype=np.float64)
    n, k = errors.shape
    names = list(names) if names is not None else [f"L{i + 1}" for i in range(k)]
    summary: dict = {"n_images": int(n), "n_landmarks": int(k), **_stats(errors)}
    return {**summary, "per_landmark": [{"landmark": i + 1, "name": names[i], **_stats(errors[:, i])}
                                         for i in range(k)]}


class LandmarkPredictions(Metric):
    """Collects per-sample predictions across batches and processes: `compute()` gathers every process's
    samples (DDP) and drops the duplicates a distributed sampler pads the split with: each sample once."""

    full_state_update = False
    FIELDS = ("index", "pred", "true", "spacing", "geometry", "peak")

    def __init__(self) -> None:
        super().__init__()
        for name in self.FIELDS:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, pred: torch.Tensor, true: torch.Tensor, spacing: torch.Tensor,
               geometry: torch.Tensor, peak: torch.Tensor) -> None:
        self.index.append(index.long())
        for name, value in zip(self.FIELDS[1:], (pred, true, spacing, geometry, peak), strict=True):
            getattr(self, name).append(value.double())

    def compute(self) -> dict[str, np.ndarray]:
        def cat(x):
            return (torch.cat(x) if isinstance(x, list) else x).cpu().numpy()

        if isinstance(self.index, list) and not self.index:
            return {}
        uniq, first = np.unique(cat(self.index), return_index=True)
        return {"index": uniq, **{name: cat(getattr(self, name))[first] for name in self.FIELDS[1:]}}
