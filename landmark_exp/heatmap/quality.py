"""Heatmaps that cannot be trusted, flagged: `decode` always returns a position, also the argmax of a flat
map (no landmark found), of a saturated one (a diverged sigmoid at ~1 everywhere, confidence 1.0) or of one
of two equally high blobs (a coin toss). `heatmap_flags` names those maps, one reason each (`HeatmapFlag`).

Thresholds assume the targets' scale (peak 1 on a 0 background, `gaussian_heatmaps`), which sigmoid and linear
outputs are both trained to. It runs on every predicted batch, so it is vectorised in torch and cheap.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from landmark_exp.heatmap.peaks import patches

FLAT_MIN_CONTRAST = 0.05
"""A landmark is found only where the peak stands this much above both the map's median and 0: trained
channels peak at 0.3-1.0 on a ~0 background, a channel that never learned at ~3e-4."""

SATURATED_RTOL = 1e-3
"""Pixels within this fraction of the peak count as "at the peak": a diverged sigmoid is there almost
everywhere, a Gaussian blob only within ~0.05 sigma of its centre."""

SATURATED_SHARE = 0.05
"""A map with more than this share of its pixels at the peak is saturated; a dice-trained blob's flat top
is ~1 %."""

SATURATED_BLOB_SIGMAS = 3.0
"""...and more pixels than a disc of this many target sigmas: on a small patch a wide flat blob top is
still one blob, not a saturated map."""

SATURATED_MEDIAN_FRACTION = 0.5
"""A map whose median (its background) is at least this fraction of the peak is saturated however its top
is shaped: a trained map's background is ~0, a diverged sigmoid's is at the peak."""

SATURATED_MIN_PEAK = 0.5
"""A constant map is saturated when its peak is "on" (a sigmoid's upper half: everything fires), else flat."""

EQUAL_PEAK_RTOL = 0.1
"""A second blob within this fraction of the top one makes the location a coin toss; trained models'
second blobs stay below 0.8 of the peak."""

SEPARATION_SIGMAS = 3.0
"""Blobs count as separate only farther apart than this many target sigmas in x or y, plus the radius of
the top's near-top area (a wide flat top is one blob); 2 sigma apart two Gaussians merge into one blob."""

PEAK_DIP = 0.25
"""...and only with a dip between them below (1 - PEAK_DIP) of the second blob's height: a flat top's far
edge does not dip, two real blobs 3 sigma apart do (to 0.65)."""

MAX_EQUAL_PEAKS = 4
"""Separated equal peaks counted at most ("4+ equal peaks"): each more costs a pass over the flagged maps."""

_SAMPLES = 1024  # median and shares read on a grid of ~this many pixels: a background level and a few %
_SEGMENT_SAMPLES = 32  # points read on the line between two peaks for the dip


class HeatmapFlag(enum.IntFlag):
    """Why a heatmap cannot be trusted; 0 (no flag) when it can. One reason per map, chosen in this order:
    NON_FINITE (a NaN or infinity), SATURATED (much of the map at its peak, or its median near it), FLAT
    (the peak does not stand above the map or 0), SEVERAL_PEAKS (separated blobs near the top's height,
    with a dip between)."""

    NON_FINITE = 1
    SATURATED = 2
    FLAT = 4
    SEVERAL_PEAKS = 8


@dataclass(frozen=True)
class HeatmapFlags:
    """`heatmap_flags`'s answer for (B, K) maps: `codes` (B, K) int64, a `HeatmapFlag` value per map (0: fine,
    else exactly one bit), and `peaks` (B, K) int64, the number of separated near-equal peaks (>= 2 only where
    SEVERAL_PEAKS is set, else 1; 0 for flat, saturated and non-finite maps)."""

    codes: torch.Tensor
    peaks: torch.Tensor

    @property
    def ok(self) -> torch.Tensor:
        """(B, K) bool: the maps that can be trusted."""
        return self.codes == 0

    def has(self, flag: HeatmapFlag) -> torch.Tensor:
        """(B, K) bool: the maps flagged `flag`."""
        return (self.codes & int(flag)) != 0


def heatmap_flags(heatmaps: torch.Tensor, sigma_px: float = 2.0, single_channel: bool = False) -> HeatmapFlags:
    """(B, K, H, W) heatmaps -> which ones cannot be trusted (`HeatmapFlags`), one reason per map.

    `sigma_px`: the training targets' sigma in heatmap pixels (`Decoding.sigma`): how far apart two blobs
    must be to count as two. `single_channel`: one map holds all landmarks, so several peaks are expected.
    Each whole map is read only twice (row maxima and minima), then a grid of ~1024 pixels and a window
    around the top; only maps with a near-equal pixel outside the top blob get the (looping) peak count.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, K, H, W), not {tuple(heatmaps.shape)}")
    b, k, h, w = heatmaps.shape
    n = b * k
    if n == 0 or h * w == 0:
        empty = torch.zeros(b, k, dtype=torch.int64, device=heatmaps.device)
        return HeatmapFlags(empty, empty.clone())
    x = heatmaps.detach().reshape(n, h, w)
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    rowmax, rowmin = x.amax(dim=2), x.amin(dim=2)  # (N, H); NaN propagates into both, -inf into the minima
    nonfinite = ~(torch.isfinite(rowmax) & torch.isfinite(rowmin)).all(dim=1)
    if nonfinite.any():  # read the other maps as they are; the non-finite ones get that reason only
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        rowmax = x.amax(dim=2)
    peak, iy = rowmax.max(dim=1)
    rows = torch.arange(n, device=x.device)
    ix = x[rows, iy].argmax(dim=1)

    stride = max(1, int(math.sqrt(h * w / _SAMPLES)))
    sample = x[:, stride // 2::stride, stride // 2::stride].reshape(n, -1)
    median = sample.median(dim=1).values
    at_peak = (sample >= (peak - SATURATED_RTOL * peak.abs())[:, None]).float().mean(dim=1)  # share of the map
    blob_share = math.pi * (SATURATED_BLOB_SIGMAS * sigma_px) ** 2 / (h * w)
    plateau = (at_peak > max(SATURATED_SHARE, blob_share)) | ((peak > 0) & (median >= SATURATED_MEDIAN_FRACTION * peak))
    no_contrast = peak - median.clamp_min(0) < FLAT_MIN_CONTRAST
    saturated = plateau & ~(no_contrast & (peak < SATURATED_MIN_PEAK)) & ~nonfinite
    is_flat = no_contrast & ~saturated & ~nonfinite

    codes = (nonfinite.long() * HeatmapFlag.NON_FINITE + saturated.long() * HeatmapFlag.SATURATED
             + is_flat.long() * HeatmapFlag.FLAT)  # exclusive: one reason per map
    peaks = (codes == 0).long()
    if not single_channel:
        level = (1 - EQUAL_PEAK_RTOL) * peak
        # the top blob's square: a few sigmas, plus the radius of its near-top area (a wide flat top is one blob)
        # (a top wider than this window is caught by the dip test instead)
        top, inside = patches(x, ix, iy, math.ceil(2 * SEPARATION_SIGMAS * sigma_px))
        top_area = ((top >= level[:, None, None]) & (inside > 0)).sum(dim=(1, 2)).to(x.dtype)
        half = (SEPARATION_SIGMAS * sigma_px + torch.sqrt(top_area / math.pi)).ceil().long().clamp(1, max(h, w))
        live = (codes == 0) & (peak > 0)
        candidate = live & (_max_outside(x, rowmax, ix, iy, half, live) >= level)
        if candidate.any():
            sel = candidate.nonzero()[:, 0]
            count = _count_peaks(x[sel], ix[sel], iy[sel], level[sel], half[sel])
            codes[sel[count >= 2]] = int(HeatmapFlag.SEVERAL_PEAKS)
            peaks[sel] = torch.where(count >= 2, count, peaks[sel])
    return HeatmapFlags(codes.view(b, k), peaks.view(b, k))


def _max_outside(x: torch.Tensor, rowmax: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, half: torch.Tensor,
                 live: torch.Tensor) -> torch.Tensor:
    """(N,) highest value of each (N, H, W) map outside the square of half-width `half` around (ix, iy): the rows
    outside its band from the row maxima, the band's rows (a gather of 2 half + 1 rows) outside its columns."""
    n, h, w = x.shape
    ys = torch.arange(h, device=x.device)
    outside_rows = torch.where((ys[None] - iy[:, None]).abs() > half[:, None], rowmax, float("-inf")).amax(dim=1)
    r = int(half[live].max()) if live.any() else 0
    d = torch.arange(-r, r + 1, device=x.device)
    band_rows = iy[:, None] + d[None]  # (N, 2r + 1)
    band = x[torch.arange(n, device=x.device)[:, None], band_rows.clamp(0, h - 1)]  # (N, 2r + 1, W)
    row_ok = (band_rows >= 0) & (band_rows < h) & (d[None].abs() <= half[:, None])
    col_out = (torch.arange(w, device=x.device)[None] - ix[:, None]).abs() > half[:, None]  # (N, W)
    inside_band = torch.where(row_ok[:, :, None] & col_out[:, None, :], band, float("-inf")).flatten(1).amax(dim=1)
    return torch.maximum(outside_rows, inside_band)


def _count_peaks(x: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, level: torch.Tensor,
                 half: torch.Tensor) -> torch.Tensor:
    """(n,) number of blobs reaching `level` in (n, H, W) maps whose top is at (ix, iy): the top, plus each
    highest remaining pixel outside the squares already taken that reaches `level` with a dip between it and
    the top (the edge of a flat top wider than its square does not dip: its square is taken, it is not counted)."""
    n, h, w = x.shape
    y = x.clone()  # the squares already taken are blanked in place: one read of each map per round, no full masks
    r = int(half.max())
    d = torch.arange(-r, r + 1, device=x.device)
    within = (d.abs()[None, :, None] <= half.view(n, 1, 1)) & (d.abs()[None, None, :] <= half.view(n, 1, 1))
    maps3 = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, 2 * r + 1, 2 * r + 1)

    def take(cx: torch.Tensor, cy: torch.Tensor, which: torch.Tensor) -> None:
        rows, cols = cy.view(n, 1, 1) + d.view(1, -1, 1), cx.view(n, 1, 1) + d.view(1, 1, -1)
        rows, cols = rows.expand(n, 2 * r + 1, 2 * r + 1), cols.expand(n, 2 * r + 1, 2 * r + 1)
        ok = within & which.view(n, 1, 1) & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        y[maps3[ok], rows[ok], cols[ok]] = float("-inf")

    take(ix, iy, torch.ones(n, dtype=torch.bool, device=x.device))
    count = torch.ones(n, dtype=torch.int64, device=x.device)
    t = torch.linspace(0, 1, _SEGMENT_SAMPLES + 2, device=x.device, dtype=torch.float64)[1:-1]
    maps = torch.arange(n, device=x.device)[:, None]
    for _ in range(MAX_EQUAL_PEAKS - 1):
        value, idx = y.view(n, -1).max(dim=1)
        reached = value >= level
        if not reached.any():
            break
        jx, jy = idx % w, torch.div(idx, w, rounding_mode="floor")
        line_x = (ix[:, None] + t * (jx - ix)[:, None]).round().long()
        line_y = (iy[:, None] + t * (jy - iy)[:, None]).round().long()
        dip = x[maps, line_y, line_x].amin(dim=1) <= (1 - PEAK_DIP) * value
        count += (reached & dip).long()
        take(jx, jy, reached)
    return count


_REASONS = {HeatmapFlag.NON_FINITE: "non-finite heatmap", HeatmapFlag.SATURATED: "saturated heatmap",
            HeatmapFlag.FLAT: "flat heatmap"}


def describe_flags(flags: HeatmapFlags) -> list[list[str]]:
    """(B, K) short reasons, '' where the map is fine: "flat heatmap", "saturated heatmap", "2 equal peaks",
    "non-finite heatmap"."""
    codes, peaks = flags.codes.cpu().tolist(), flags.peaks.cpu().tolist()
    return [[_describe(c, p) for c, p in zip(cr, pr, strict=True)] for cr, pr in zip(codes, peaks, strict=True)]


def _describe(code: int, peaks: int) -> str:
    if code == HeatmapFlag.SEVERAL_PEAKS:
        return f"{peaks}+ equal peaks" if peaks >= MAX_EQUAL_PEAKS else f"{peaks} equal peaks"
    return _REASONS.get(code, "")
