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
    # at the target's centre (t = 1): dice's push is scaled by p(1-p) ~ e^logit, the cross-entropy's is -1/pixels
    assert abs(float(dice[20, 30])) < 1e-8
    assert float(both[20, 30]) == pytest.approx(-1.0 / 64**2, rel=1e-4)
    assert abs(float(both[0, 0])) < 1e-8  # background already at ~0: nothing to push


@pytest.mark.parametrize("logit", [10.0, 15.0])
def test_a_channel_risen_to_one_everywhere_gets_no_dice_gradient_and_the_cross_entropy_pulls_it_down(logit):
    dice = _grad(DiceLoss(), logit)
    both = _grad(DiceLoss(ce_weight=1.0), logit)
    assert abs(float(dice[0, 0])) < 1e-8
    assert float(both[0, 0]) == pytest.approx(1.0 / 64**2, rel=1e-3)  # (p - t) / pixels with p ~ 1, t ~ 0


def test_the_cross_entropy_is_lowest_at_the_target_itself():
    target = _target()
    z = torch.logit(target.clamp(1e-6, 1 - 1e-6)).requires_grad_()
    DiceLoss(ce_weight=1.0)(torch.sigmoid(z), target).backward()
    ce_only = z.grad - _plain_dice_grad(z.detach(), target)
    assert float(ce_only.abs().max()) < 1e-8


def _plain_dice_grad(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    z = z.clone().requires_grad_()
    DiceLoss()(torch.sigmoid(z), target).backward()
    return z.grad


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


def test_head_bias_starts_the_outputs_at_the_targets_mean_not_at_one_half():
    from landmark_exp.models.unet import UNet

    torch.manual_seed(0)
    prior = 2 * torch.pi / (192 * 160)  # sum(t) / pixels for sigma 1 at 192x160
    net = UNet(widths=(8, 16, 32, 64), head_bias=float(torch.logit(torch.tensor(prior))))
    with torch.no_grad():
        out = net(torch.randn(2, 1, 64, 64))
    assert prior / 3 < float(out.median()) < prior * 3
    assert float(UNet(widths=(8, 16, 32, 64))(torch.randn(2, 1, 64, 64)).median()) > 0.2
