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
    """Soft dice per heatmap (the seed's loss): 1 - 2|P.T| / (|P| + |T|), plus `fg_ce_weight` x the
    cross-entropy on the target's foreground, -sum(t log p) / sum(t).

    Why the extra term: dice's gradient on a sigmoid output is dL/dp x p(1 - p), so a channel whose output
    has sunk to p ~ 0 everywhere (the first epochs push every tiny target's background down) gets almost no
    gradient back and can stay dead for good (seen on ISBI: sella at 256x208, gonion at sigma 1.0;
    benchmarks/RESULTS.md). The foreground cross-entropy's gradient on the logit is -t (1 - p) / sum(t): it
    does not vanish on a sunk channel, and it is ~0 on a channel that already peaks at 1. Foreground only:
    a full binary cross-entropy also pushes the whole background towards 0, and with Adam's bounded steps
    that took the first dozen epochs of a 60-epoch run away from localisation (RESULTS.md).
    """

    def __init__(self, smooth: float = 1.0, fg_ce_weight: float = 0.0) -> None:
        super().__init__()
        self.smooth = smooth
        self.fg_ce_weight = fg_ce_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        inter = (pred * target).sum(dim=(-2, -1))
        denom = pred.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))
        per_map = 1 - (2 * inter + self.smooth) / (denom + self.smooth)
        if self.fg_ce_weight:
            per_map = per_map + self.fg_ce_weight * _foreground_ce(pred, target)
        return _weighted_mean(per_map, weight)


def _foreground_ce(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum(t log p) / sum(t) per map, from sigmoid probabilities (0 for an empty target).

    log of the clamped probability, not F.binary_cross_entropy: autocast refuses that, and its backward
    divides by max(p (1 - p), 1e-12), so it too goes silent below 1e-12; through the sigmoid this
    gradient on the logit is -t (1 - p) / sum(t) down to p ~ 1e-38."""
    log_p = torch.log(prob.clamp_min(torch.finfo(prob.dtype).tiny))
    return -(target * log_p).sum(dim=(-2, -1)) / target.sum(dim=(-2, -1)).clamp_min(1e-12)


class MSELoss(nn.Module):
    """Pixel-wise squared error, summed over each map (so its scale does not depend on the resolution's area)
    and averaged over maps."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        per_map = ((pred.float() - target.float()) ** 2).sum(dim=(-2, -1))
        return _weighted_mean(per_map, weight)


class AdaptiveWingLoss(nn.Module):
    """Adaptive wing loss (Wang et al., ICCV 2019): steep near the foreground, robust far away,
    with the paper's weight map (x `fg_weight` on a dilated foreground)."""

    def __init__(
        self,
        alpha: float = 2.1,
        omega: float = 14.0,
        epsilon: float = 1.0,
        theta: float = 0.5,
        fg_weight: float = 10.0,
        fg_threshold: float = 0.2,
    ) -> None:
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
        loss = loss * (1 + (self.fg_weight - 1) * fg)
        per_map = loss.mean(dim=(-2, -1))
        return _weighted_mean(per_map, weight)
