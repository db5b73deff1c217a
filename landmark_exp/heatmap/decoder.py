"""Heatmaps -> sub-pixel coordinates (and a confidence per landmark).

At 256x256 one input pixel of an ISBI image is ~0.76 x 0.94 mm, so a plain
argmax throws away ~0.3 mm. `decode` refines the argmax by a fit around it:
`quadratic` (log-quadratic Taylor step on 3x3), `lsq` (weighted least squares on
log p: exact for Gaussian peaks, as MSE-trained networks draw) or `logit_lsq`
(the same on logit p: exact for the saturated sigmoid blobs dice-trained networks
draw); where a fit fails it falls back to a local centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

METHODS = ("argmax", "quadratic", "lsq", "logit_lsq", "soft_argmax")


def argmax_2d(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer (ix, iy) of the maximum of each map in (..., H, W), and the peak value."""
    h, w = heatmaps.shape[-2:]
    peak, idx = heatmaps.flatten(-2).max(dim=-1)
    return idx % w, torch.div(idx, w, rounding_mode="floor"), peak


def _patches(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2r+1, 2r+1) float64 windows of (N, H, W) maps centred at (ix, iy), zero outside; and an inside mask.

    Gathers only the windows (no padded or float64 copy of the whole maps: for 32 x 19 maps of 256x256
    that copy cost 20x the decoding itself)."""
    n, h, w = maps.shape
    d = torch.arange(-r, r + 1, device=maps.device)
    rows = iy.view(n, 1, 1) + d.view(1, -1, 1)
    cols = ix.view(n, 1, 1) + d.view(1, 1, -1)
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).to(torch.float64)
    ni = torch.arange(n, device=maps.device).view(n, 1, 1)
    values = maps[ni, rows.clamp(0, h - 1), cols.clamp(0, w - 1)].to(torch.float64)
    return values * inside, inside


def refine(
    maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, method: str = "quadratic", window: int = 2
) -> torch.Tensor:
    """Sub-pixel (x, y) near integer peaks (ix, iy) of (N, H, W) maps -> (N, 2) float64."""
    base = torch.stack([ix, iy], dim=-1).to(torch.float64)
    if method == "argmax":
        return base
    centroid = _local_centroid(maps, ix, iy, window)
    if method == "soft_argmax":
        return base + centroid
    if method not in ("quadratic", "lsq", "logit_lsq"):
        raise ValueError(f"unknown decoding method {method!r} (choose from {METHODS})")
    p, inside = _patches(maps, ix, iy, 1)
    logp = torch.log(p.clamp_min(1e-10))
    gx = 0.5 * (logp[:, 1, 2] - logp[:, 1, 0])
    gy = 0.5 * (logp[:, 2, 1] - logp[:, 0, 1])
    hxx = logp[:, 1, 2] - 2 * logp[:, 1, 1] + logp[:, 1, 0]
    hyy = logp[:, 2, 1] - 2 * logp[:, 1, 1] + logp[:, 0, 1]
    hxy = 0.25 * (logp[:, 2, 2] - logp[:, 2, 0] - logp[:, 0, 2] + logp[:, 0, 0])
    det = hxx * hyy - hxy**2
    # Newton step -H^-1 g; valid only at a strict maximum (H negative definite) away from borders.
    # and only where the whole 3x3 carries signal: log of ~0 neighbours would fit noise, not a peak
    ok = (hxx < -1e-6) & (det > 1e-12) & (inside.amin(dim=(1, 2)) > 0) & (p[:, 1, 1] > 1e-6)
    ok = ok & (p.amin(dim=(1, 2)) > 1e-3 * p[:, 1, 1])
    safe_det = torch.where(ok, det, torch.ones_like(det))
    dx = -(hyy * gx - hxy * gy) / safe_det
    dy = -(hxx * gy - hxy * gx) / safe_det
    step = torch.stack([dx, dy], dim=-1)
    ok = ok & (step.abs() <= 1.0).all(dim=-1)
    # flat tops fall back to the local centroid; a peak on the image border keeps its pixel
    # (a truncated blob's centroid is biased inwards)
    interior = inside.amin(dim=(1, 2)) > 0
    fallback = torch.where(interior[:, None], centroid, torch.zeros_like(centroid))
    quad = torch.where(ok[:, None], step, fallback)
    if method == "lsq" and window > 1:
        fit, fit_ok = _log_gaussian_lsq(maps, ix, iy, window)
        quad = torch.where(fit_ok[:, None], fit, quad)
    if method == "logit_lsq" and window > 1:
        fit, fit_ok = _log_gaussian_lsq(maps, ix, iy, window, logit=True, max_step=window)
        # Re-centre once: the window moves to the pixel nearest the fitted peak and fits again, so starting
        # anywhere on a flat top (where float rounding decides the argmax) ends at the same window
        h, w = maps.shape[-2:]
        jx = (ix + torch.where(fit_ok, fit[:, 0].round(), 0).long()).clamp(0, w - 1)
        jy = (iy + torch.where(fit_ok, fit[:, 1].round(), 0).long()).clamp(0, h - 1)
        refit, refit_ok = _log_gaussian_lsq(maps, jx, jy, window, logit=True)
        moved = torch.stack([jx - ix, jy - iy], dim=-1).to(torch.float64)
        fit = torch.where(refit_ok[:, None], moved + refit, fit)
        fit_ok = refit_ok | (fit_ok & (fit.abs() <= 1.0).all(dim=-1))
        quad = torch.where(fit_ok[:, None], fit, quad)
    return base + quad


def _log_gaussian_lsq(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, r: int,
                      logit: bool = False, max_step: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Offset of the peak of a Gaussian fitted to the (2r+1)^2 window by weighted least squares on log values.

    The 3x3 Taylor fit is exact for a clean Gaussian but reads only 5 pixels, so noise in a network's
    output moves it; fitting log p = c0 + c1 x + c2 y + c3 x^2 + c4 xy + c5 y^2 to all pixels of the
    window, weighted by p^2 (log p's noise variance goes as 1/p^2), is just as exact on a clean peak and
    averages the noise out. Returns (N, 2) offsets and where the fit is a proper maximum inside the window.

    logit=True fits the quadratic to logit p instead, weighted by (p (1 - p))^2: a sigmoid network's
    saturated peak (a flat top at 0.9997, as dice loss trains) is sigmoid(quadratic), so the fit reads the
    blob's shape, not a plateau of log 1 = 0, and does not depend on which plateau pixel it starts from.
    For a small peak (p << 1) it is the log fit.
    """
    p, inside = _patches(maps, ix, iy, r)
    n = p.shape[0]
    d = torch.arange(-r, r + 1, device=maps.device, dtype=torch.float64)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    basis = torch.stack([torch.ones_like(dx), dx, dy, dx * dx, dx * dy, dy * dy], dim=-1).reshape(-1, 6)  # (M, 6)
    centre = p[:, r, r].clamp_min(1e-12)
    flat = p.reshape(n, -1)
    # pixels at or below 1e-3 of the peak carry no shape, only the log of noise
    keep = inside.reshape(n, -1) * (flat > 1e-3 * centre[:, None])
    if logit:
        q = flat.clamp(1e-12, 1 - 1e-7)
        wgt = (q * (1 - q)) ** 2 * keep
        z = torch.log(q) - torch.log1p(-q)
    else:
        wgt = (flat.clamp_min(0) ** 2) * keep
        z = torch.log(flat.clamp_min(1e-12))
    ata = torch.einsum("nm,mi,mj->nij", wgt, basis, basis)
    atz = torch.einsum("nm,mi,nm->ni", wgt, basis, z)
    ata = ata + 1e-9 * torch.eye(6, device=maps.device, dtype=torch.float64)
    c = torch.linalg.solve(ata, atz[..., None])[..., 0]
    hxx, hxy, hyy = 2 * c[:, 3], c[:, 4], 2 * c[:, 5]
    det = hxx * hyy - hxy**2
    ok = (hxx < -1e-9) & (det > 1e-12) & ((wgt > 0).sum(dim=1) >= 6)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = -(hyy * c[:, 1] - hxy * c[:, 2]) / safe
    oy = -(hxx * c[:, 2] - hxy * c[:, 1]) / safe
    step = torch.stack([ox, oy], dim=-1)
    ok = ok & (step.abs() <= max_step).all(dim=-1) & torch.isfinite(step).all(dim=-1)
    return torch.where(ok[:, None], step, torch.zeros_like(step)), ok


def _local_centroid(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, r: int) -> torch.Tensor:
    """Offset of the centre of mass of the (2r+1)^2 window around the peak (a local soft-argmax)."""
    p, inside = _patches(maps, ix, iy, r)
    # subtract the window's floor so a broad background does not pull the centroid to the window centre
    floor = p.masked_fill(inside == 0, float("inf")).amin(dim=(1, 2), keepdim=True)
    wgt = (p - floor).clamp_min(0) * inside
    d = torch.arange(-r, r + 1, device=maps.device, dtype=torch.float64)
    total = wgt.sum(dim=(1, 2)).clamp_min(1e-12)
    ox = (wgt * d.view(1, 1, -1)).sum(dim=(1, 2)) / total
    oy = (wgt * d.view(1, -1, 1)).sum(dim=(1, 2)) / total
    return torch.stack([ox, oy], dim=-1)


def _climb(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, r: int = 2, max_steps: int = 1,
           weight: torch.Tensor | None = None, rtol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each integer peak to the raw maps' maximum within +/- r pixels (`max_steps` times).

    The prior-weighted argmax picks the right blob but sits off its top, towards the prior (the
    prior tilts it); the sub-pixel fit must start from the raw top, or the prior biases the answer.
    One step: on ISBI validation (docs/results.md) climbing further walked into neighbouring
    blobs more often than it helped. Pixels within `rtol` of the window's maximum count as tied and
    the tie goes to the highest `weight` (the prior), so float rounding (ONNX vs PyTorch, a
    saturated sigmoid's flat top) cannot flip the choice between equally high pixels."""
    n, h, w = maps.shape
    d = torch.arange(-r, r + 1, device=maps.device)
    m = torch.arange(n, device=maps.device)
    for _ in range(max_steps):
        rows = (iy[:, None] + d).clamp(0, h - 1)
        cols = (ix[:, None] + d).clamp(0, w - 1)
        win = maps[m[:, None, None], rows[:, :, None], cols[:, None, :]].flatten(1).float()
        top = win.amax(dim=1, keepdim=True)
        tied = win >= top - rtol * top.abs()
        tie_break = (torch.zeros_like(win) if weight is None
                     else weight[m[:, None, None], rows[:, :, None], cols[:, None, :]].flatten(1).float())
        best = torch.where(tied, tie_break, torch.full_like(win, -1.0)).argmax(dim=1)
        nx, ny = cols[m, best % (2 * r + 1)], rows[m, torch.div(best, 2 * r + 1, rounding_mode="floor")]
        if torch.equal(nx, ix) and torch.equal(ny, iy):
            break
        ix, iy = nx, ny
    return ix, iy


def decode(
    heatmaps: torch.Tensor,
    method: str = "quadratic",
    window: int = 2,
    prior: torch.Tensor | None = None,
    prior_sigma: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) heatmaps -> (B, K, 2) float64 model-pixel coordinates and (B, K) peak values.

    With `prior` (K, 2) model-pixel positions (the mean training shape) and
    `prior_sigma` (pixels), the peak is *chosen* on the heatmap times a broad
    Gaussian around the prior, which discards far-away false maxima; the
    sub-pixel position is then refined on the raw heatmap, so the prior adds no bias.
    """
    b, k, h, w = heatmaps.shape
    maps = heatmaps.detach().reshape(b * k, h, w)
    if prior is not None and prior_sigma:
        from landmark_exp.heatmap.generator import gaussian_heatmaps

        weight = gaussian_heatmaps(prior[None].to(maps.device, torch.float32), (h, w), float(prior_sigma))
        weighted = (maps.view(b, k, h, w).float() * weight).view(b * k, h, w)  # (1, K) prior broadcast over B
        ix, iy, _ = argmax_2d(weighted)
        ix, iy = _climb(maps, ix, iy, max(1, window), weight=weighted)
        peak = maps[torch.arange(b * k, device=maps.device), iy, ix]
    else:
        ix, iy, peak = argmax_2d(maps)
    xy = refine(maps, ix, iy, method, window)
    return xy.view(b, k, 2), peak.view(b, k)


def decode_single_channel(
    heatmap: torch.Tensor,
    mean_shape: torch.Tensor,
    method: str = "quadratic",
    window: int = 2,
    nms_radius: int = 2,
    max_distance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask with all landmarks, (B, 1, H, W) -> identified (B, K, 2) coordinates and (B, K) peaks.

    Blob centres (local maxima after non-maximum suppression) are matched to the
    mean shape (K, 2) by an optimal assignment, after aligning the mean shape to
    the blobs by a robust translation; a landmark with no blob within
    `max_distance` pixels (default 10% of the image diagonal) gets the aligned
    mean-shape position and peak 0.
    """
    b, _, h, w = heatmap.shape
    k = mean_shape.shape[0]
    maps = heatmap.detach()[:, 0].to(torch.float64)
    pooled = F.max_pool2d(maps[:, None], 2 * nms_radius + 1, stride=1, padding=nms_radius)[:, 0]
    is_peak = (maps == pooled) & (maps > 0.05 * maps.flatten(1).amax(1).view(b, 1, 1).clamp_min(1e-12))
    max_distance = max_distance if max_distance is not None else 0.1 * float(np.hypot(h, w))
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


def peak_spread(heatmaps: torch.Tensor, xy: torch.Tensor, radius: int) -> torch.Tensor:
    """Spread of each map around its decoded position: (B, K or 1, H, W), (B, K, 2) -> (B, K, 2) std in pixels.

    The weighted standard deviation per axis of the (non-negative) heatmap in a
    (2r+1)^2 window around the position: about the training sigma for a clean peak,
    larger for a blurred or split one, so it says how sure the model is beyond the
    peak height. A single-mask model's one map serves all its landmarks.
    """
    b, k = xy.shape[:2]
    maps = heatmaps.detach()  # windows are gathered (and made float64) by _patches
    if maps.shape[1] == 1 and k > 1:
        maps = maps.expand(b, k, *maps.shape[-2:])
    h, w = maps.shape[-2:]
    maps = maps.reshape(b * k, h, w)
    pos = xy.detach().to(maps.device, torch.float64).reshape(b * k, 2)
    ix = pos[:, 0].round().clamp(0, w - 1).long()
    iy = pos[:, 1].round().clamp(0, h - 1).long()
    p, inside = _patches(maps, ix, iy, radius)
    wgt = p.clamp_min(0) * inside
    d = torch.arange(-radius, radius + 1, device=maps.device, dtype=torch.float64)
    dx = d.view(1, 1, -1) + (ix - pos[:, 0]).view(-1, 1, 1)  # offsets from the sub-pixel position
    dy = d.view(1, -1, 1) + (iy - pos[:, 1]).view(-1, 1, 1)
    total = wgt.sum(dim=(1, 2)).clamp_min(1e-12)
    var_x = (wgt * dx**2).sum(dim=(1, 2)) / total
    var_y = (wgt * dy**2).sum(dim=(1, 2)) / total
    return torch.stack([var_x, var_y], dim=-1).sqrt().view(b, k, 2)


def prior_sigma_pixels(fraction: float | None, input_size: tuple[int, int]) -> float | None:
    """The peak-choice prior's width in pixels: configured as a fraction of the input diagonal (0 / None: off)."""
    return float(fraction) * float(math.hypot(*input_size)) if fraction else None


@dataclass(eq=False)
class Decoding:
    """Everything that turns one model's heatmaps into coordinates, in one object.

    A `LandmarkModule` builds it from its config and mean shape; an exported model
    carries it as metadata (`to_dict`/`from_dict`), so both decode identically.
    """

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
        changes: dict = {}
        if "decoder" in heatmap:
            changes["method"] = str(heatmap["decoder"])
        if "window" in heatmap:
            changes["window"] = heatmap["window"]
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
