"""Dice's smoothing constant and the dead-channel trap: the pull on a sunk channel's output bias; the output
prior that starts every map small instead of near 0.5."""

import pytest
import torch

from landmark_exp.heatmap.generator import gaussian_heatmaps
from landmark_exp.losses import DiceLoss
from landmark_exp.models.unet import UNet


def _bias_grad(smooth: float, logit: float, size=(192, 160), sigma: float = 1.0) -> float:
    """d loss / d bias of one channel that is `logit` everywhere (its output bias moves all pixels at once)."""
    h, w = size
    target = gaussian_heatmaps(torch.tensor([[[w / 2, h / 2]]]), size, sigma)
    z = torch.full((1, 1, h, w), logit, requires_grad=True)
    DiceLoss(smooth=smooth)(torch.sigmoid(z), target).backward()
    return float(z.grad.sum())


@pytest.mark.parametrize("logit", [-6.0, -9.0, -12.0])
def test_smooth_one_pushes_a_sunk_channel_further_down_and_a_small_smooth_pulls_it_back(logit):
    # positive: gradient descent lowers the bias, deeper into the dead state
    assert _bias_grad(1.0, logit) > 0
    assert _bias_grad(1e-4, logit) < 0


def test_the_trap_is_stronger_for_narrower_targets():
    """Sigma 1.0 at 192x160 (gonion lost in 2 of 5 folds) against sigma 1.5 (none lost in 9 runs)."""
    assert _bias_grad(1.0, -9.0, sigma=1.0) > 2 * _bias_grad(1.0, -9.0, sigma=1.5) > 0


def test_dice_is_the_seed_formula():
    target = gaussian_heatmaps(torch.tensor([[[30.0, 20.0], [10.0, 50.0]]]), (64, 64), 2.0)
    pred = torch.rand(1, 2, 64, 64)
    manual = 1 - (2 * (pred * target).sum((-2, -1)) + 1) / (pred.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    assert float(DiceLoss()(pred, target)) == pytest.approx(float(manual.mean()), rel=1e-6)


def test_a_head_bias_starts_every_map_at_its_prior_and_leaves_the_other_weights_as_drawn():
    torch.manual_seed(0)
    plain_net = UNet(widths=[4, 8], bottleneck=8, out_channels=3)
    torch.manual_seed(0)
    prior_net = UNet(widths=[4, 8], bottleneck=8, out_channels=3, head_bias=-4.6)
    a, b = plain_net.state_dict(), prior_net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k != "head.bias")
    assert torch.all(b["head.bias"] == -4.6)
    prior_net.eval()
    with torch.no_grad():
        out = prior_net(torch.rand(2, 1, 32, 32))
    assert 0.001 < float(out.mean()) < 0.1  # near sigmoid(-4.6) = 0.01, where the default starts near 0.5


def _grads(loss: DiceLoss, logit: float, size=(192, 160), sigma: float = 1.5) -> torch.Tensor:
    h, w = size
    target = gaussian_heatmaps(torch.tensor([[[w / 2, h / 2]]]), size, sigma)
    z = torch.full((1, 1, h, w), logit, requires_grad=True)
    loss(torch.sigmoid(z), target).backward()
    return z.grad[0, 0]


@pytest.mark.parametrize("logit", [-9.0, 0.0])
def test_the_distribution_term_pulls_a_flat_maps_landmark_up_and_leaves_its_level_alone(logit):
    # a map with no contrast, sunk or broad (seed 2's sella): dice alone only lowers it everywhere
    ce = _grads(DiceLoss(ce_weight=1.0), logit) - _grads(DiceLoss(), logit)
    assert abs(float(ce.sum())) < 1e-6 * float(ce.abs().sum())   # no net push on the map's level (its bias)
    assert float(ce[96, 80]) < 0 < float(ce[0, 0])                 # descent raises the landmark, lowers the rest


def test_the_distribution_term_is_off_by_default():
    target = gaussian_heatmaps(torch.tensor([[[30.0, 20.0]]]), (64, 64), 2.0)
    pred = torch.rand(1, 1, 64, 64)
    assert float(DiceLoss()(pred, target)) == float(DiceLoss(ce_weight=0.0)(pred, target))
    assert float(DiceLoss(ce_weight=0.1)(pred, target)) > float(DiceLoss()(pred, target))
