"""Heatmaps that cannot be trusted, flagged (issue 28, item 8: "Degenerate outputs are flagged").

`decode` always returns a position: the argmax of a flat map (no landmark found), of a saturated one (a
diverged run's sigmoid at ~1 everywhere, reported as confidence 1.0) or of one of two equally high blobs
(the position is a coin toss). `heatmap_flags` names those maps, one reason each:

- `NON_FINITE`: a NaN or an infinity anywhere in the map;
- `SATURATED`: a large share of the map at (or the map's median near) its peak: nothing is localised;
- `FLAT`: the peak does not stand above the map (or above 0): no landmark was found;
- `SEVERAL_PEAKS`: two or more separated blobs (farther apart than a few target sigmas in x or y, with
  a dip between them) within a small relative tolerance of the top one: the location is ambiguous.

The rule reads one map per landmark. For a single-channel model (`Decoding.single_channel`: one map holds
all landmarks) pass `single_channel=True`: several equal peaks are what that map should show, so only
non-finite, saturated and flat apply.

Thresholds assume the heatmap targets' scale (peak 1 on a 0 background, `gaussian_heatmaps`), which both
sigmoid and linear (`activation: null`) outputs are trained to. It is meant to run on every predicted batch
(after `Decoding` in `Predictor.predict`), so it is vectorised in torch and cheap: see `heatmap_flags`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

FLAT_MIN_CONTRAST = 0.05
"""A landmark is found only where the peak stands this much above both the map's median and 0. Trained
channels peak at 0.3-1.0 on a ~0 background (6x this or more); a channel that never learned peaks at
~3e-4 (a dead sigmoid channel, tests/test_untrained_landmarks.py); `reports.untrained_landmarks` calls a
channel untrained below 0.1x the typical peak (~0.09): per image, 0.05 flags only maps with no peak at all."""

SATURATED_RTOL = 1e-3
"""Pixels within this fraction of the peak count as "at the peak": a sigmoid at ~1 everywhere (a diverged
run) is within 1e-3 of its maximum almost everywhere, a Gaussian blob only within ~0.05 sigma of its centre."""

SATURATED_SHARE = 0.05
"""A map with more than this share of its pixels at the peak is saturated (5 % of 256x256: a disc of 32 px
radius, 16 sigmas of the targets). A dice-trained blob's flat top (a sigmoid above 0.999 over a disc of a
few pixels, about the targets' half-maximum disc: 27 px at sigma 2.5) is ~1 % of a 48x48 patch."""

SATURATED_BLOB_SIGMAS = 3.0
"""...and more pixels than a disc of this many target sigmas: on small maps (a 48x48 patch at sigma 2.5,
where 5 % is a disc of 6 px radius, this one 7.5 px) a wide flat blob top is still one blob, not a saturated
map (tests: a top of 134 px at 1.0 on a 48x48 patch is not flagged)."""

SATURATED_MEDIAN_FRACTION = 0.5
"""A map whose median (its background) is at least this fraction of the peak is saturated too, however
its top is shaped: a trained map's background is ~0, a diverged sigmoid's is at the peak."""

SATURATED_MIN_PEAK = 0.5
"""A map at its peak nearly everywhere (constant) is saturated when that peak is "on" (a sigmoid's upper
half: everything fires, as a diverged run) and flat below (nothing fires: all 0, a constant 0.3)."""

EQUAL_PEAK_RTOL = 0.1
"""A second blob within this fraction of the top one (>= 0.9 of it) makes the location ambiguous: which of
the two wins is decided by noise. Trained models' second blobs stay below 0.8 of the peak."""

SEPARATION_SIGMAS = 3.0
"""Blobs count as separate only farther apart than this many target sigmas in x or y (the larger of |dx|,
|dy|: a square around the top, cheap to exclude), plus the radius of the top's near-top area (its pixels at
>= 0.9 of the peak within 6 sigmas, as one disc), so a wide flat top is one blob. Two Gaussians 3 sigma
apart dip to 0.65 of their height between them; 2 sigma apart they are one blob, its top between them."""

PEAK_DIP = 0.25
"""...and only with a dip between them: somewhere on the straight line the map falls below (1 - PEAK_DIP)
of the second blob's height. A flat-topped blob's far edge does not dip; two real blobs 3 sigma apart do
(to 0.65 of their height), 4 sigma apart to 0.27."""

MAX_EQUAL_PEAKS = 4
"""Separated equal peaks counted at most (describe_flags says "4+ equal peaks"); each more costs one pass over
the flagged maps (on an undertrained ISBI model, 8 took twice the time of 4 for the same flags)."""

_SAMPLES = 1024  # median and shares are read on a regular grid of ~this many pixels (all of a 32x32 map or less):
# the median is a background level, the shares only need to tell a few % of the map from a blob (1024 points
# read them to ~0.1 %); a 4096-point median took 4x as long, 8 ms on one core for (8, 19, 256, 256)
_SEGMENT_SAMPLES = 32  # points read on the line between two peaks for the dip


class HeatmapFlag(enum.IntFlag):
    """Why a heatmap cannot be trusted; 0 (no flag) when it can. One reason per map, chosen in this order."""

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

    `sigma_px`: the training targets' sigma in heatmap pixels (`Decoding.sigma`); it sets how far apart two
    blobs must be to count as two. `single_channel`: one map holds all landmarks (several peaks expected).
    Cost: it runs on every predicted batch, so it reads each whole map only twice (row maxima and minima: the
    peak, its position, non-finite values and the highest pixel outside the top blob follow from them and from
    a band of rows around the peak), then a grid of ~1024 of its pixels (median, share at the peak) and a
    window around the top; only maps with a near-equal pixel outside the top blob get the (looping, whole-map)
    peak count. For (8, 19, 256, 256) float32 (4 of the maps with two equal blobs) on one CPU core: 9-12 ms,
    ~0.1 % of the spec U-Net's (31 M parameters) 10-15 s forward pass on that batch (a shared 2-core machine;
    on 2 threads 15 ms at best, 93 ms median there while other jobs held the cores: 0.4 % of its forward).
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

    codes = torch.zeros(n, dtype=torch.int64, device=x.device)
    codes[nonfinite] = int(HeatmapFlag.NON_FINITE)
    codes[saturated] = int(HeatmapFlag.SATURATED)
    codes[is_flat] = int(HeatmapFlag.FLAT)
    peaks = (codes == 0).long()
    if not single_channel:
        level = (1 - EQUAL_PEAK_RTOL) * peak
        # the top blob's square: a few sigmas, plus the radius of its near-top area (a wide flat top is one blob)
        top_area = _near_top_area(x, ix, iy, level, math.ceil(2 * SEPARATION_SIGMAS * sigma_px))
        half = (SEPARATION_SIGMAS * sigma_px + torch.sqrt(top_area / math.pi)).ceil().long().clamp(1, max(h, w))
        live = (codes == 0) & (peak > 0)
        candidate = live & (_max_outside(x, rowmax, ix, iy, half, live) >= level)
        if candidate.any():
            sel = candidate.nonzero()[:, 0]
            count = _count_peaks(x[sel], ix[sel], iy[sel], level[sel], half[sel])
            several = torch.zeros(n, dtype=torch.bool, device=x.device)
            several[sel] = count >= 2
            codes[several] = int(HeatmapFlag.SEVERAL_PEAKS)
            peaks[sel] = torch.where(count >= 2, count, peaks[sel])
    return HeatmapFlags(codes.view(b, k), peaks.view(b, k))


def _near_top_area(x: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, level: torch.Tensor, r: int) -> torch.Tensor:
    """(N,) pixels at or above `level` within +/- r of (ix, iy): the area of the top blob's flat top (a gather of
    (2r + 1)^2 pixels per map; a top wider than that is caught by the dip test instead)."""
    n, h, w = x.shape
    d = torch.arange(-r, r + 1, device=x.device)
    rows, cols = iy[:, None, None] + d[None, :, None], ix[:, None, None] + d[None, None, :]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    window = x[torch.arange(n, device=x.device)[:, None, None], rows.clamp(0, h - 1), cols.clamp(0, w - 1)]
    return ((window >= level[:, None, None]) & inside).sum(dim=(1, 2)).to(x.dtype)


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


def describe_flags(flags: HeatmapFlags) -> list[list[str]]:
    """(B, K) short reasons, '' where the map is fine: "flat heatmap", "saturated heatmap", "2 equal peaks",
    "non-finite heatmap"."""
    codes, peaks = flags.codes.cpu().tolist(), flags.peaks.cpu().tolist()
    return [[_describe(c, p) for c, p in zip(cr, pr, strict=True)] for cr, pr in zip(codes, peaks, strict=True)]


def _describe(code: int, peaks: int) -> str:
    if code & HeatmapFlag.NON_FINITE:
        return "non-finite heatmap"
    if code & HeatmapFlag.SATURATED:
        return "saturated heatmap"
    if code & HeatmapFlag.FLAT:
        return "flat heatmap"
    if code & HeatmapFlag.SEVERAL_PEAKS:
        return f"{peaks}+ equal peaks" if peaks >= MAX_EQUAL_PEAKS else f"{peaks} equal peaks"
    return ""
