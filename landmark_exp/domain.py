"""Is this image like the ones the detector was trained on? A whole-image check for what no landmark's own
signal shows: another clinic's conventions and scanner give confident, consistent placements mm off.

An image is described by its first-stage network input averaged down to GRID x GRID cells (framing, contrast,
soft tissue, ear rods): preprocessing only, never the weights, so a fine-tuned detector keeps it valid. Its
distance is the mean distance to its NEIGHBOURS nearest reference images (standardised on the reference) over
the largest such leave-one-out distance among the reference images: over 1, it is further from the training
images than any of them is from the others (reliability signal "domain").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landmark_exp.data.images import read_ahead
from landmark_exp.data.records import CheckpointError, DataError

GRID = 16
NEIGHBOURS = 5


def descriptor(network_input: np.ndarray) -> np.ndarray:
    """(C, h, w) or (h, w) first-stage network input -> (GRID * GRID,) float32 descriptor (first channel)."""
    x = torch.as_tensor(np.asarray(network_input, dtype=np.float32))
    x = x.reshape(-1, *x.shape[-2:])[:1]
    return torch.nn.functional.adaptive_avg_pool2d(x[None], GRID).flatten().numpy()


def describe_images(paths: Sequence[Path], stage: Any) -> np.ndarray:
    """(N, D) descriptors of image files, from the network input the first-stage `predictor.Predictor` `stage`
    makes (typed loosely: predictor.py imports this module)."""
    out = []
    for read in read_ahead(list(paths), stage.info.normalize, then=lambda im: stage.prepare(im)[0]):
        if isinstance(read, DataError):
            raise read
        out.append(descriptor(read))
    return np.stack(out)


class DomainModel:
    """The training images' descriptors and what an image's distance from them is measured against."""

    def __init__(self, reference: np.ndarray) -> None:
        # float16 as stored in a detector file: a model built in memory measures as the one read back does
        self.reference = np.asarray(reference, dtype=np.float16).astype(np.float32)
        if self.reference.ndim != 2 or len(self.reference) <= NEIGHBOURS:
            raise ValueError(f"a domain reference needs more than {NEIGHBOURS} images, "
                             f"got shape {self.reference.shape}")
        ref = self.reference.astype(np.float64)
        sd = ref.std(axis=0)
        # standardised per cell; a cell that never varies there (padding) gets a floor, not a division by ~0
        self._mean, self._sd = ref.mean(axis=0), np.maximum(sd, 0.1 * float(np.median(sd)) + 1e-6)
        self._z = (ref - self._mean) / self._sd  # the reference as every distance measures it
        self._z_sq = (self._z**2).sum(axis=1)
        self._scale = float(self._nearest(ref, leave_one_out=True).max())

    def _nearest(self, x: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
        """Mean distance to the NEIGHBOURS nearest reference images (unscaled while `_scale` is being set)."""
        z = (np.asarray(x, dtype=np.float64) - self._mean) / self._sd
        d = np.sqrt(np.maximum((z**2).sum(1)[:, None] + self._z_sq[None] - 2 * z @ self._z.T, 0.0))
        d.sort(axis=1)
        start = 1 if leave_one_out else 0  # an image's own entry is its nearest, at 0
        return d[:, start:start + NEIGHBOURS].mean(axis=1) / getattr(self, "_scale", 1.0)

    def distance(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, D) descriptors -> (N,) distances; over 1: unlike every training image."""
        return self._nearest(np.atleast_2d(descriptors))

    def with_images(self, descriptors: np.ndarray) -> DomainModel:
        """The reference with a site's images added (they are training images of a fine-tuned detector)."""
        return DomainModel(np.concatenate([self.reference, np.atleast_2d(descriptors).astype(np.float32)]))

    def to_dict(self) -> dict:
        return {"grid": GRID, "neighbours": NEIGHBOURS, "reference": torch.from_numpy(self.reference).half()}

    @classmethod
    def from_dict(cls, d: object, where: str) -> DomainModel:
        try:
            grid, neighbours = int(d["grid"]), int(d["neighbours"])  # type: ignore[index]
            reference = torch.as_tensor(d["reference"]).float().numpy()  # type: ignore[index]
            if (grid, neighbours) != (GRID, NEIGHBOURS) or reference.ndim != 2 or reference.shape[1] != GRID * GRID:
                raise ValueError(f"grid {grid}, neighbours {neighbours}, reference {tuple(reference.shape)}; this "
                                 f"version measures {GRID}x{GRID} cells and {NEIGHBOURS} neighbours")
            if not np.isfinite(reference).all():
                raise ValueError("non-finite reference values")
            return cls(reference)
        except (TypeError, KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{where}: domain reference is not valid ({type(e).__name__}: {e})") from None
