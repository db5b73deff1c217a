"""Heatmap losses. Each takes (pred, target, weight) with pred/target (B, C, H, W)
and weight (B, C) (0 for landmarks that left the image), and returns a scalar."""

from __future__ import annotations

import torch
from torch import nn


def _weighted_mean(per_map: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per_map.mean()
    weight = weight.to(per_map.dtype)
    return (per_map * weight).sum() / weight.sum().clamp_min(1.0)


class DiceLoss(nn.Module):
    """Soft dice per heatmap (the seed's loss): 1 - (2|P.T| + s) / (|P| + |T| + s), s = `smooth`.

    Where a sigmoid channel has sunk to a small uniform p, `smooth` makes lowering p further lower the loss:
    a trap that can keep a landmark's channel dead (`tests/test_losses.py` measures that pull). `ce_weight` adds
    the cross-entropy of the map read as a distribution over its pixels against the target's: free of the map's
    scale, it pulls mass toward the landmark at any contrast and gains nothing from emptying a map."""

    def __init__(self, smooth: float = 1.0, ce_weight: float = 0.0) -> None:
        super().__init__()
        self.smooth, self.ce_weight = smooth, ce_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        inter = (pred * target).sum(dim=(-2, -1))
        p_sum, t_sum = pred.sum(dim=(-2, -1)), target.sum(dim=(-2, -1))
        per_map = 1 - (2 * inter + self.smooth) / (p_sum + t_sum + self.smooth)
        if self.ce_weight:
            log_q = torch.log(pred.clamp_min(1e-12)) - torch.log(p_sum.clamp_min(1e-12))[..., None, None]
            share = target / t_sum.clamp_min(1e-12)[..., None, None]
            per_map = per_map - self.ce_weight * (share * log_q).sum(dim=(-2, -1))
        return _weighted_mean(per_map, weight)


class MSELoss(nn.Module):
    """Pixel-wise squared error, summed over each map (so its scale does not depend on the resolution's area)
    and averaged over maps."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return _weighted_mean(((pred.float() - target.float()) ** 2).sum(dim=(-2, -1)), weight)


class AdaptiveWingLoss(nn.Module):
    """Adaptive wing loss (Wang et al., ICCV 2019): steep near the foreground, robust far away,
    with the paper's weight map (x `fg_weight` on a dilated foreground)."""

    def __init__(self, alpha: float = 2.1, omega: float = 14.0, epsilon: float = 1.0, theta: float = 0.5,
                 fg_weight: float = 10.0, fg_threshold: float = 0.2) -> None:
        super().__init__()
        self.alpha, self.omega, self.epsilon, self.theta = alpha, omega, epsilon, theta
        self.fg_weight, self.fg_threshold = fg_weight, fg_threshold

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        pred, y = pred.float(), target.float()
        delta = (y - pred).abs()
        a, w, e, t = self.alpha, self.omega, self.epsilon, self.theta
        power = a - y
        A = w * (1 / (1 + (t / e) ** power)) * power * ((t / e) ** (power - 1)) / e
        C = t * A - w * torch.log1p((t / e) ** power)
        loss = torch.where(delta < t, w * torch.log1p((delta / e) ** power), A * delta - C)
        fg = torch.nn.functional.max_pool2d((y > self.fg_threshold).float(), 3, stride=1, padding=1)
        return _weighted_mean((loss * (1 + (self.fg_weight - 1) * fg)).mean(dim=(-2, -1)), weight)
