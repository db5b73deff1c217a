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
    """Soft dice per heatmap (the seed's loss): 1 - 2|P.T| / (|P| + |T|), plus `ce_weight` x the binary
    cross-entropy against the Gaussian target (mean over each map's pixels).

    Why the extra term: dice's gradient on a sigmoid output is dL/dp x p(1 - p), and dice is flat where a
    channel has sunk to p ~ 0 (and where it has risen to p ~ 1 everywhere), so a channel that falls there in
    the first epochs can stay dead for good (seen on ISBI: sella at 256x208, gonion at sigma 1.0;
    benchmarks/RESULTS.md). The cross-entropy's gradient on the logit is (p - t) / pixels: it does not
    vanish there, and its optimum p = t is the target itself, so it does not fight dice over where the peak
    is. Start the network's outputs at the targets' mean (`model.head_bias`, logit of sum(t) / pixels), or the
    first epochs go into pushing sigmoid(0) = 0.5 down on ~30,000 background pixels per map (RESULTS.md).
    """

    def __init__(self, smooth: float = 1.0, ce_weight: float = 0.0) -> None:
        super().__init__()
        self.smooth = smooth
        self.ce_weight = ce_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        inter = (pred * target).sum(dim=(-2, -1))
        denom = pred.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))
        per_map = 1 - (2 * inter + self.smooth) / (denom + self.smooth)
        if self.ce_weight:
            per_map = per_map + self.ce_weight * binary_ce(pred, target)
        return _weighted_mean(per_map, weight)


def binary_ce(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of sigmoid probabilities against soft targets, mean over each map's pixels.

    Logs of clamped probabilities, not F.binary_cross_entropy: autocast refuses that, and its backward
    divides by max(p (1 - p), 1e-12), so it too goes silent on a saturated channel; through the sigmoid
    this gradient on the logit is (p - t) / pixels down to p ~ 1e-38 (and up to 1 - p ~ 6e-8 in float32)."""
    tiny = torch.finfo(prob.dtype).tiny
    log_p = torch.log(prob.clamp_min(tiny))
    log_q = torch.log((1 - prob).clamp_min(tiny))
    return -(target * log_p + (1 - target) * log_q).mean(dim=(-2, -1))


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
