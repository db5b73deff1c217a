"""Heatmaps -> sub-pixel coordinates (and a confidence per landmark), as one model's `Decoding` says: the peak
of each landmark's map, chosen under an optional shape prior, or the blobs of one all-landmark mask matched to
the mean shape; then refined to sub-pixel by `peaks.refine`."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from landmark_exp.heatmap.generator import gaussian_heatmaps
from landmark_exp.heatmap.peaks import METHODS, argmax_2d, peak_spread, refine


def _climb(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, r: int,
           weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each integer peak to the raw maps' maximum within +/- r pixels.

    The prior-weighted argmax picks the right blob but sits off its top, towards the prior; the sub-pixel fit
    must start from the raw top, or the prior biases the answer. One step: on ISBI validation
    (docs/results.md) climbing further walked into neighbouring blobs more often than it helped. Pixels within
    1e-4 of the window's maximum count as tied and the tie goes to the highest `weight` (the prior), so float
    rounding (ONNX vs PyTorch, a saturated sigmoid's flat top) cannot flip the choice between equal pixels."""
    n, h, w = maps.shape
    d = torch.arange(-r, r + 1, device=maps.device)
    m = torch.arange(n, device=maps.device)
    rows = (iy[:, None] + d).clamp(0, h - 1)
    cols = (ix[:, None] + d).clamp(0, w - 1)
    at = (m[:, None, None], rows[:, :, None], cols[:, None, :])
    win = maps[at].flatten(1).float()
    top = win.amax(dim=1, keepdim=True)
    tied = win >= top - 1e-4 * top.abs()
    best = torch.where(tied, weight[at].flatten(1).float(), torch.full_like(win, -1.0)).argmax(dim=1)
    return cols[m, best % (2 * r + 1)], rows[m, torch.div(best, 2 * r + 1, rounding_mode="floor")]


def decode(heatmaps: torch.Tensor, method: str = "quadratic", window: int = 2, prior: torch.Tensor | None = None,
           prior_sigma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) heatmaps -> (B, K, 2) float64 model-pixel coordinates and (B, K) peak values.

    With `prior` (K, 2) model-pixel positions (the mean training shape) and `prior_sigma` (pixels), the peak is
    *chosen* on the heatmap times a broad Gaussian around the prior, which discards far-away false maxima; the
    sub-pixel position is then refined on the raw heatmap, so the prior adds no bias.
    """
    b, k, h, w = heatmaps.shape
    maps = heatmaps.detach().reshape(b * k, h, w)
    if prior is not None and prior_sigma:
        weight = gaussian_heatmaps(prior[None].to(maps.device, torch.float32), (h, w), float(prior_sigma))
        weighted = (maps.view(b, k, h, w).float() * weight).view(b * k, h, w)  # (1, K) prior broadcast over B
        ix, iy, _ = argmax_2d(weighted)
        ix, iy = _climb(maps, ix, iy, max(1, window), weighted)
        peak = maps[torch.arange(b * k, device=maps.device), iy, ix]
    else:
        ix, iy, peak = argmax_2d(maps)
    xy = refine(maps, ix, iy, method, window)
    return xy.view(b, k, 2), peak.view(b, k)


def decode_single_channel(heatmap: torch.Tensor, mean_shape: torch.Tensor, method: str = "quadratic",
                          window: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask with all landmarks, (B, 1, H, W) -> identified (B, K, 2) coordinates and (B, K) peaks.

    Blob centres (local maxima in 5x5) are matched to the mean shape (K, 2) by an optimal assignment, after
    aligning the mean shape to the blobs by a robust translation; a landmark with no blob within 10 % of the
    image diagonal gets the aligned mean-shape position and peak 0.
    """
    b, _, h, w = heatmap.shape
    k = mean_shape.shape[0]
    maps = heatmap.detach()[:, 0].to(torch.float64)
    pooled = F.max_pool2d(maps[:, None], 5, stride=1, padding=2)[:, 0]
    is_peak = (maps == pooled) & (maps > 0.05 * maps.flatten(1).amax(1).view(b, 1, 1).clamp_min(1e-12))
    max_distance = 0.1 * float(np.hypot(h, w))
    shape = mean_shape.detach().cpu().to(torch.float64).numpy()
    out = np.empty((b, k, 2))
    peaks = np.zeros((b, k))
    for i in range(b):
        ys, xs = torch.nonzero(is_peak[i], as_tuple=True)
        vals = maps[i, ys, xs]
        order = torch.argsort(vals, descending=True)[: 3 * k]
        ys, xs, vals = ys[order], xs[order], vals[order]
        cands = torch.stack([xs, ys], -1).to(torch.float64)
        if len(cands):
            cands = refine(maps[i : i + 1].expand(len(cands), h, w), xs, ys, method, window)
        cand = cands.cpu().numpy()
        assigned, shift = _match(shape, cand, max_distance)
        out[i] = shape + shift
        for lm, c in assigned.items():
            out[i, lm] = cand[c]
            peaks[i, lm] = float(vals[c])
    return torch.from_numpy(out).to(heatmap.device), torch.from_numpy(peaks).to(heatmap.device)


def _match(shape: np.ndarray, cand: np.ndarray, max_distance: float) -> tuple[dict[int, int], np.ndarray]:
    """Assign candidates to shape points; returns {landmark: candidate} and the shape's alignment shift."""
    shift = np.zeros(2)
    assigned: dict[int, int] = {}
    if len(cand) == 0:
        return assigned, shift
    for _ in range(3):
        cost = np.linalg.norm((shape + shift)[:, None, :] - cand[None, :, :], axis=-1)
        # dummy columns let a landmark stay unmatched at cost max_distance
        full = np.concatenate([cost, np.full((len(shape), len(shape)), max_distance)], axis=1)
        rows, cols = linear_sum_assignment(full)
        assigned = {int(r): int(c) for r, c in zip(rows, cols, strict=True) if c < len(cand)}
        if not assigned:
            break
        deltas = np.array([cand[c] - shape[r] for r, c in assigned.items()])
        shift = np.median(deltas, axis=0)
    return assigned, shift


def prior_sigma_pixels(fraction: float | None, input_size: tuple[int, int]) -> float | None:
    """The peak-choice prior's width in pixels: configured as a fraction of the input diagonal (0 / None: off)."""
    return float(fraction) * float(math.hypot(*input_size)) if fraction else None


@dataclass(eq=False)
class Decoding:
    """Everything that turns one model's heatmaps into coordinates: a `LandmarkModule` builds it from its config
    and mean shape, an exported model carries it as metadata (`to_dict`/`from_dict`), so both decode identically."""

    method: str = "quadratic"
    window: int = 2
    single_channel: bool = False
    mean_shape: torch.Tensor | None = None  # (K, 2) model pixels: the single-mask prior / peak-choice prior
    prior_sigma: float | None = None  # pixels; None: plain argmax (no prior)
    sigma: float = 2.0  # the training targets' sigma (pixels): sets the window of `peak_spread`

    def __post_init__(self) -> None:
        """Checked when made (from a config, a checkpoint or an export's metadata), not at the first image."""
        if self.method not in METHODS:
            raise ValueError(f"unknown decoding method {self.method!r} (choose from {', '.join(METHODS)})")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or not 0 <= self.window <= 16:
            raise ValueError(f"decoding window must be a whole number 0-16, got {self.window!r}")
        if self.prior_sigma is not None and not (isinstance(self.prior_sigma, int | float)
                                                 and math.isfinite(self.prior_sigma) and self.prior_sigma > 0):
            raise ValueError(f"prior_sigma must be a positive number of pixels, got {self.prior_sigma!r}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"heatmap sigma must be a positive number of pixels, got {self.sigma!r}")

    def __call__(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K or 1, H, W) -> (B, K, 2) float64 model-pixel coordinates and (B, K) peak values."""
        if self.single_channel:
            return decode_single_channel(heatmaps, self.mean_shape, self.method, self.window)
        prior = self.mean_shape if self.prior_sigma else None
        return decode(heatmaps, self.method, self.window, prior, self.prior_sigma)

    def overridden(self, heatmap: dict, input_size: tuple[int, int]) -> Decoding:
        """This decoding with `heatmap:` overrides (decoder, window, prior_sigma as a fraction of the input
        diagonal, as in the config) applied, for a model whose decoding is not in its weights (an export)."""
        unknown = set(heatmap) - {"decoder", "window", "prior_sigma"}
        if unknown:
            raise ValueError(f"heatmap overrides {sorted(unknown)} do not change how heatmaps are decoded")
        changes = {"window": heatmap["window"]} if "window" in heatmap else {}
        if "decoder" in heatmap:
            changes["method"] = str(heatmap["decoder"])
        if "prior_sigma" in heatmap:
            changes["prior_sigma"] = prior_sigma_pixels(heatmap["prior_sigma"], input_size)
        return replace(self, **changes)  # checked again (__post_init__)

    def spread(self, heatmaps: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        return peak_spread(heatmaps, xy, max(2, math.ceil(3 * self.sigma)))

    def to_dict(self) -> dict:
        shape = None if self.mean_shape is None else self.mean_shape.detach().cpu().double().tolist()
        return {"method": self.method, "window": self.window, "single_channel": self.single_channel,
                "mean_shape": shape, "prior_sigma": self.prior_sigma, "sigma": self.sigma}

    @classmethod
    def from_dict(cls, d: dict) -> Decoding:
        shape = d.get("mean_shape")
        return cls(method=d.get("method", "quadratic"), window=int(d.get("window", 2)),
                   single_channel=bool(d.get("single_channel", False)),
                   mean_shape=None if shape is None else torch.tensor(shape, dtype=torch.float64),
                   prior_sigma=d.get("prior_sigma"), sigma=float(d.get("sigma", 2.0)))
