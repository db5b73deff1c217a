"""Sub-pixel peak positions and spreads of heatmaps, around given integer peaks.

At 256x256 one input pixel of an ISBI image is ~0.76 x 0.94 mm, so a plain argmax throws away ~0.3 mm.
`refine` fits around the argmax: `quadratic` (log-quadratic Taylor step on 3x3), `lsq` (weighted least squares
on log p: exact for Gaussian peaks, as MSE-trained networks draw) or `logit_lsq` (the same on logit p: exact for
the saturated sigmoid blobs dice-trained networks draw); where a fit fails it falls back to a local centroid.
"""

from __future__ import annotations

import torch

METHODS = ("argmax", "quadratic", "lsq", "logit_lsq", "soft_argmax")


def argmax_2d(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer (ix, iy) of the maximum of each map in (..., H, W), and the peak value."""
    h, w = heatmaps.shape[-2:]
    peak, idx = heatmaps.flatten(-2).max(dim=-1)
    return idx % w, torch.div(idx, w, rounding_mode="floor"), peak


def patches(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor,
            r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2r+1, 2r+1) float64 windows of (N, H, W) maps centred at (ix, iy), zero outside; and an inside mask.
    Only the windows are gathered: a padded float64 copy of whole maps cost 20x the decoding itself."""
    n, h, w = maps.shape
    d = torch.arange(-r, r + 1, device=maps.device)
    rows = iy.view(n, 1, 1) + d.view(1, -1, 1)
    cols = ix.view(n, 1, 1) + d.view(1, 1, -1)
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).to(torch.float64)
    ni = torch.arange(n, device=maps.device).view(n, 1, 1)
    values = maps[ni, rows.clamp(0, h - 1), cols.clamp(0, w - 1)].to(torch.float64)
    return values * inside, inside


def refine(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, method: str = "quadratic",
           window: int = 2) -> torch.Tensor:
    """Sub-pixel (x, y) near integer peaks (ix, iy) of (N, H, W) maps -> (N, 2) float64."""
    base = torch.stack([ix, iy], dim=-1).to(torch.float64)
    if method == "argmax":
        return base
    centroid = _local_centroid(maps, ix, iy, window)
    if method == "soft_argmax":
        return base + centroid
    if method not in ("quadratic", "lsq", "logit_lsq"):
        raise ValueError(f"unknown decoding method {method!r} (choose from {METHODS})")
    p, inside = patches(maps, ix, iy, 1)
    logp = torch.log(p.clamp_min(1e-10))
    gx = 0.5 * (logp[:, 1, 2] - logp[:, 1, 0])
    gy = 0.5 * (logp[:, 2, 1] - logp[:, 0, 1])
    hxx = logp[:, 1, 2] - 2 * logp[:, 1, 1] + logp[:, 1, 0]
    hyy = logp[:, 2, 1] - 2 * logp[:, 1, 1] + logp[:, 0, 1]
    hxy = 0.25 * (logp[:, 2, 2] - logp[:, 2, 0] - logp[:, 0, 2] + logp[:, 0, 0])
    interior = inside.amin(dim=(1, 2)) > 0
    # away from borders, and only where the whole 3x3 carries signal: log of ~0 neighbours would fit noise
    signal = interior & (p[:, 1, 1] > 1e-6) & (p.amin(dim=(1, 2)) > 1e-3 * p[:, 1, 1])
    step, ok = _newton_step(gx, gy, hxx, hyy, hxy, signal, -1e-6, 1.0)
    # flat tops fall back to the local centroid; a peak on the image border keeps its pixel
    # (a truncated blob's centroid is biased inwards)
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
    """(N, 2) offset of the peak of a quadratic fitted to log p over the (2r+1)^2 window, weighted by p^2
    (log p's noise variance goes as 1/p^2), and where it is a proper maximum. As exact as the 3x3 Taylor fit
    on a clean Gaussian, but it averages a network's noise over all pixels, not 5. logit=True fits logit p,
    weighted by (p (1 - p))^2: a saturated sigmoid peak (dice loss's flat top at 0.9997) is
    sigmoid(quadratic), so the fit reads the blob's shape, not a plateau of log 1 = 0; for p << 1 it is the
    log fit."""
    p, inside = patches(maps, ix, iy, r)
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
    enough = (wgt > 0).sum(dim=1) >= 6
    step, ok = _newton_step(c[:, 1], c[:, 2], 2 * c[:, 3], 2 * c[:, 5], c[:, 4], enough, -1e-9, max_step)
    return torch.where(ok[:, None], step, torch.zeros_like(step)), ok


def _newton_step(gx: torch.Tensor, gy: torch.Tensor, hxx: torch.Tensor, hyy: torch.Tensor, hxy: torch.Tensor,
                 ok: torch.Tensor, hxx_max: float, max_step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Newton step -H^-1 g to a quadratic's peak, and where it is valid: `ok`, a strict maximum (H
    negative definite) and a step of at most `max_step` per axis (a NaN or infinite step fails that too)."""
    det = hxx * hyy - hxy**2
    ok = ok & (hxx < hxx_max) & (det > 1e-12)
    safe = torch.where(ok, det, torch.ones_like(det))
    step = torch.stack([-(hyy * gx - hxy * gy) / safe, -(hxx * gy - hxy * gx) / safe], dim=-1)
    return step, ok & (step.abs() <= max_step).all(dim=-1)


def _local_centroid(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, r: int) -> torch.Tensor:
    """Offset of the centre of mass of the (2r+1)^2 window around the peak (a local soft-argmax)."""
    p, inside = patches(maps, ix, iy, r)
    # subtract the window's floor so a broad background does not pull the centroid to the window centre
    floor = p.masked_fill(inside == 0, float("inf")).amin(dim=(1, 2), keepdim=True)
    wgt = (p - floor).clamp_min(0) * inside
    d = torch.arange(-r, r + 1, device=maps.device, dtype=torch.float64)
    total = wgt.sum(dim=(1, 2)).clamp_min(1e-12)
    ox = (wgt * d.view(1, 1, -1)).sum(dim=(1, 2)) / total
    oy = (wgt * d.view(1, -1, 1)).sum(dim=(1, 2)) / total
    return torch.stack([ox, oy], dim=-1)


def peak_spread(heatmaps: torch.Tensor, xy: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, K or 1, H, W) maps, (B, K, 2) positions -> (B, K, 2) weighted std per axis of the (non-negative)
    map in a (2r+1)^2 window around each position: about the training sigma for a clean peak, larger for a
    blurred or split one, so it says how sure the model is beyond the peak height."""
    b, k = xy.shape[:2]
    maps = heatmaps.detach()
    if maps.shape[1] == 1 and k > 1:
        maps = maps.expand(b, k, *maps.shape[-2:])
    h, w = maps.shape[-2:]
    maps = maps.reshape(b * k, h, w)
    pos = xy.detach().to(maps.device, torch.float64).reshape(b * k, 2)
    ix = pos[:, 0].round().clamp(0, w - 1).long()
    iy = pos[:, 1].round().clamp(0, h - 1).long()
    p, inside = patches(maps, ix, iy, radius)
    wgt = p.clamp_min(0) * inside
    d = torch.arange(-radius, radius + 1, device=maps.device, dtype=torch.float64)
    dx = d.view(1, 1, -1) + (ix - pos[:, 0]).view(-1, 1, 1)  # offsets from the sub-pixel position
    dy = d.view(1, -1, 1) + (iy - pos[:, 1]).view(-1, 1, 1)
    total = wgt.sum(dim=(1, 2)).clamp_min(1e-12)
    var_x = (wgt * dx**2).sum(dim=(1, 2)) / total
    var_y = (wgt * dy**2).sum(dim=(1, 2)) / total
    return torch.stack([var_x, var_y], dim=-1).sqrt().view(b, k, 2)
