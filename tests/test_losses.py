"""Dice and dice + balanced cross-entropy on channels where dice alone has no gradient left."""

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
def test_a_sunk_channel_gets_no_dice_gradient_and_the_cross_entropy_pulls_its_target_up(logit):
    dice = _grad(DiceLoss(), logit)
    both = _grad(DiceLoss(ce_weight=1.0), logit)
    # at the target's centre (t = 1): dice's push is scaled by p(1-p) ~ e^logit, the cross-entropy's is -1/sum(t)
    assert abs(float(dice[20, 30])) < 1e-8
    assert float(both[20, 30]) == pytest.approx(-1.0 / float(_target().sum()), rel=1e-4)
    assert abs(float(both[0, 0])) < 1e-8  # background already at ~0: nothing to push


@pytest.mark.parametrize("logit", [10.0, 15.0])
def test_a_channel_risen_to_one_everywhere_gets_no_dice_gradient_and_the_cross_entropy_pulls_it_down(logit):
    dice = _grad(DiceLoss(), logit)
    both = _grad(DiceLoss(ce_weight=1.0), logit)
    background = float((1 - _target()).sum())
    assert abs(float(dice[0, 0])) < 1e-8
    assert float(both[0, 0]) == pytest.approx(1.0 / background, rel=1e-3)  # p (1 - t) / sum(1 - t), p ~ 1


def test_the_two_halves_pull_equally_hard_on_a_map_at_one_half():
    """Balanced: the ~10-pixel target pulls up as hard in total as the ~4,000 background pixels pull down,
    so an untrained network's first steps go into telling them apart, not into lowering everything."""
    g = _grad(DiceLoss(ce_weight=1.0), 0.0) - _grad(DiceLoss(), 0.0)
    t = _target()[0, 0]
    up = float((g * t).sum() / t.sum())  # pull where t ~ 1 (weighted by t)
    assert float(g.sum()) == pytest.approx(0.0, abs=1e-6)
    assert up < 0


def test_ce_weight_zero_is_the_seed_dice_loss_exactly():
    target = gaussian_heatmaps(torch.tensor([[[30.0, 20.0], [10.0, 50.0]]]), (64, 64), 2.0)
    pred = torch.rand(1, 2, 64, 64)
    plain = DiceLoss()(pred, target)
    manual = 1 - (2 * (pred * target).sum((-2, -1)) + 1) / (pred.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    assert float(plain) == pytest.approx(float(manual.mean()), rel=1e-6)
    assert float(DiceLoss(ce_weight=1.0)(pred, target)) > float(plain)


def test_dice_ce_runs_under_bf16_autocast_and_stays_finite_on_saturated_and_empty_maps():
    target = torch.cat([_target(), torch.zeros(1, 1, 64, 64)], 1)  # the second landmark left the image
    z = torch.cat([torch.full((1, 1, 64, 64), 200.0), torch.full((1, 1, 64, 64), -200.0)], 1).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DiceLoss(ce_weight=1.0)(torch.sigmoid(z), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
