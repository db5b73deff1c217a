"""Dice and dice + foreground cross-entropy: what each does on a channel whose sigmoid output has sunk to ~0."""

import pytest
import torch

from landmark_exp.heatmap.generator import gaussian_heatmaps
from landmark_exp.losses import DiceLoss


def _target() -> torch.Tensor:
    return gaussian_heatmaps(torch.tensor([[[30.0, 20.0]]]), (64, 64), 2.0)


def _grad(loss: DiceLoss, logit: float) -> torch.Tensor:
    """Gradient on the logits of one 64x64 map that is `logit` everywhere, for a sigma-2 target at (30, 20)."""
    z = torch.full((1, 1, 64, 64), logit, requires_grad=True)
    loss(torch.sigmoid(z), _target()).backward()
    return z.grad[0, 0]


@pytest.mark.parametrize("logit", [-20.0, -60.0])
def test_dice_alone_leaves_a_sunk_channel_without_gradient_and_foreground_ce_revives_it(logit):
    dice = _grad(DiceLoss(), logit)
    both = _grad(DiceLoss(fg_ce_weight=1.0), logit)
    # at the target's centre (t = 1): dice's push is scaled by p(1-p) ~ e^logit, the cross-entropy's is -1/sum(t)
    assert abs(float(dice[20, 30])) < 1e-8
    assert float(both[20, 30]) == pytest.approx(-1.0 / float(_target().sum()), rel=1e-4)
    assert float(both[0, 0]) == pytest.approx(float(dice[0, 0]), abs=1e-12)  # background: only dice acts


def test_foreground_ce_is_silent_on_a_channel_that_already_peaks_at_one():
    target = _target()
    grads = []
    for loss in (DiceLoss(), DiceLoss(fg_ce_weight=1.0)):
        z = torch.where(target > 1e-5, 30.0, -30.0).requires_grad_()
        loss(torch.sigmoid(z), target).backward()
        grads.append(z.grad)
    assert float((grads[1] - grads[0]).abs().max()) < 1e-6  # what is left: the t-weighted pull on the far tails


def test_fg_ce_weight_zero_is_the_seed_dice_loss_exactly():
    target = gaussian_heatmaps(torch.tensor([[[30.0, 20.0], [10.0, 50.0]]]), (64, 64), 2.0)
    pred = torch.rand(1, 2, 64, 64)
    plain = DiceLoss()(pred, target)
    manual = 1 - (2 * (pred * target).sum((-2, -1)) + 1) / (pred.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    assert float(plain) == pytest.approx(float(manual.mean()), rel=1e-6)
    assert float(DiceLoss(fg_ce_weight=1.0)(pred, target)) > float(plain)


def test_dice_fgce_runs_under_bf16_autocast_and_stays_finite_on_saturated_and_empty_maps():
    target = torch.cat([_target(), torch.zeros(1, 1, 64, 64)], 1)  # the second landmark left the image
    z = torch.cat([torch.full((1, 1, 64, 64), 200.0), torch.full((1, 1, 64, 64), -200.0)], 1).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DiceLoss(fg_ce_weight=1.0)(torch.sigmoid(z), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
