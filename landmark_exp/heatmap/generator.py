"""Landmark coordinates -> Gaussian heatmap targets, rendered in batch on the model's device: a Gaussian is
separable, so a (B, K, H, W) target costs two small outer products, and targets rendered in the training step
follow augmentation for free."""

from __future__ import annotations

import torch


def gaussian_heatmaps(coords: torch.Tensor, size: tuple[int, int], sigma: float | torch.Tensor,
                      visible: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, 2) model-pixel coordinates -> (B, K, H, W) Gaussians with peak 1 at each (sub-pixel) centre.

    `sigma` is in model-input pixels, a float or a (K,) tensor (per-landmark); invisible landmarks
    (visible == False) get an all-zero map.
    """
    h, w = size
    dtype = coords.dtype if coords.is_floating_point() else torch.float32
    ys = torch.arange(h, device=coords.device, dtype=dtype)
    xs = torch.arange(w, device=coords.device, dtype=dtype)
    sig = torch.as_tensor(sigma, device=coords.device, dtype=dtype)
    sig = sig.reshape(1, -1, 1) if sig.ndim == 1 else sig
    gx = torch.exp(-((xs.view(1, 1, w) - coords[..., 0:1]) ** 2) / (2 * sig**2))
    gy = torch.exp(-((ys.view(1, 1, h) - coords[..., 1:2]) ** 2) / (2 * sig**2))
    heat = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    if visible is not None:
        heat = heat * visible.to(heat.dtype)[..., None, None]
    return heat


def single_channel(heatmaps: torch.Tensor) -> torch.Tensor:
    """All landmarks in one mask (the seed's single-channel target): the max over landmarks."""
    return heatmaps.amax(dim=1, keepdim=True)
