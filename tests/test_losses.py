"""Dice and dice + cross-entropy: what each does on a channel whose sigmoid output has sunk to ~0."""

import pytest
import torch

from landmark_exp.heatmap.generator import gaussian_heatmaps
from landmark_exp.losses import DiceLoss


def _dead_channel_grad(loss: DiceLoss, logit: float) -> torch.Tensor:
    """Gradient on the logits of one 64x64 map that is `logit` everywhere, for a sigma-2 target at (30, 20)."""
    target = gaussian_heatmaps(torch.tensor([[[30.0, 20.0]]]), (64, 64), 2.0)
    z = torch.full((1, 1, 64, 64), logit, requires_grad=True)
    loss(torch.sigmoid(z), target).backward()
    return z.grad[0, 0]


@pytest.mark.parametrize("logit", [-20.0, -60.0])
def test_dice_alone_leaves_a_sunk_channel_without_gradient_and_bce_revives_it(logit):
    dice = _dead_channel_grad(DiceLoss(), logit)
    both = _dead_channel_grad(DiceLoss(bce_weight=1.0), logit)
    # at the target's centre: dice's push is scaled by p(1-p) ~ e^logit, the cross-entropy's is -(t - p)/pixels
    assert abs(float(dice[20, 30])) < 1e-8
    assert float(both[20, 30]) == pytest.approx(-1.0 / 64**2, rel=1e-3)
    assert float(both[0, 0]) == pytest.approx(0.0, abs=1e-9)  # background far away: nothing to push


def test_bce_weight_zero_is_the_seed_dice_loss_exactly():
    target = gaussian_heatmaps(torch.tensor([[[30.0, 20.0], [10.0, 50.0]]]), (64, 64), 2.0)
    pred = torch.rand(1, 2, 64, 64)
    plain = DiceLoss()(pred, target)
    manual = 1 - (2 * (pred * target).sum((-2, -1)) + 1) / (pred.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    assert float(plain) == pytest.approx(float(manual.mean()), rel=1e-6)
    assert float(DiceLoss(bce_weight=1.0)(pred, target)) > float(plain)


def test_dice_bce_runs_under_bf16_autocast_and_stays_finite_on_saturated_outputs():
    target = gaussian_heatmaps(torch.tensor([[[30.0, 20.0]]]), (64, 64), 2.0)
    z = torch.cat([torch.full((1, 1, 64, 64), 200.0), torch.full((1, 1, 64, 64), -200.0)], 1).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DiceLoss(bce_weight=1.0)(torch.sigmoid(z), target.expand(1, 2, 64, 64))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
