"""Heatmaps that cannot be trusted (flat, saturated, several equal peaks, non-finite) are flagged; ordinary
trained-model heatmaps are not (issue 28, item 8)."""

from __future__ import annotations

import pytest
import torch

from landmark_exp.heatmap.generator import gaussian_heatmaps
from landmark_exp.heatmap.quality import MAX_EQUAL_PEAKS, HeatmapFlag, describe_flags, heatmap_flags
from landmark_exp.models.unet import UNet

SIZE = (96, 112)


def blob(x: float, y: float, sigma: float = 2.0, peak: float = 1.0, size: tuple[int, int] = SIZE) -> torch.Tensor:
    """(H, W) Gaussian of height `peak` at (x, y): what an MSE-trained network draws."""
    return peak * gaussian_heatmaps(torch.tensor([[[x, y]]]), size, sigma)[0, 0]


def maps(*channels: torch.Tensor) -> torch.Tensor:
    """(1, K, H, W) from K (H, W) maps."""
    return torch.stack(channels)[None]


def codes(heat: torch.Tensor, **kwargs) -> list[list[int]]:
    return heatmap_flags(heat, **kwargs).codes.tolist()


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
@pytest.mark.parametrize("peak", [0.3, 0.6, 1.0])
def test_a_clean_gaussian_is_not_flagged(sigma, peak):
    noise = 1e-3 * torch.rand(SIZE, generator=torch.Generator().manual_seed(0))
    heat = maps(blob(40.3, 50.6, sigma, peak) + noise, blob(1.0, 0.0, sigma, peak), blob(111.0, 95.0, sigma, peak))
    flags = heatmap_flags(heat)
    assert flags.ok.all() and flags.peaks.tolist() == [[1, 1, 1]]
    assert describe_flags(flags) == [["", "", ""]]


@pytest.mark.parametrize("distance", [4.0, 8.0, 30.0, 80.0])
def test_a_gaussian_with_a_weaker_second_blob_is_not_flagged(distance):
    heat = maps(blob(15, 40) + blob(15 + distance, 40, peak=0.79), blob(15, 40, peak=0.5) + blob(15 + distance, 40, peak=0.39))
    assert heatmap_flags(heat).ok.all()


def test_a_linear_output_with_background_noise_is_not_flagged():
    noise = 0.02 * torch.randn(SIZE, generator=torch.Generator().manual_seed(1))
    assert heatmap_flags(maps(blob(60, 30, peak=0.9) + noise)).ok.all()


@pytest.mark.parametrize("top", [40.0, 60.0])
def test_a_dice_trained_flat_topped_blob_on_a_small_patch_is_one_blob(top):
    """sigmoid(quadratic logit), exactly 1.0 in float32 over a disc (74 or 134 px: the latter is over 5 % of a
    48x48 patch, but within 3 target sigmas), as dice loss trains a patch model: neither saturated nor 2 peaks."""
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    heat = torch.sigmoid(top - ((xs - 23.4) ** 2 + (ys - 24.2) ** 2))[None, None]
    assert (heat == 1.0).sum() > (70 if top == 40.0 else 0.05 * 48 * 48)
    assert heatmap_flags(heat, sigma_px=2.5).ok.all()


def test_all_ones_as_a_diverged_sigmoid_gives_is_saturated_on_every_landmark():
    flags = heatmap_flags(torch.ones(2, 19, 64, 64))
    assert (flags.codes == HeatmapFlag.SATURATED).all()
    assert {r for row in describe_flags(flags) for r in row} == {"saturated heatmap"}


def test_a_sigmoid_near_one_everywhere_with_a_faint_blob_is_saturated():
    heat = maps(0.97 + 0.03 * blob(50, 50, sigma=10.0), torch.full(SIZE, 0.9999) + 1e-5 * blob(20, 20))
    assert codes(heat) == [[HeatmapFlag.SATURATED, HeatmapFlag.SATURATED]]


def test_constant_maps_are_flat_below_half_and_saturated_above():
    """A constant map is both flat and saturated; one reason is picked: "on" (>= 0.5, everything fires) is
    saturated, lower (nothing fires) is flat."""
    heat = maps(torch.zeros(SIZE), torch.full(SIZE, 0.3), torch.full(SIZE, 0.7), torch.full(SIZE, -2.0))
    assert codes(heat) == [[HeatmapFlag.FLAT, HeatmapFlag.FLAT, HeatmapFlag.SATURATED, HeatmapFlag.FLAT]]
    assert describe_flags(heatmap_flags(heat))[0][:2] == ["flat heatmap", "flat heatmap"]


def test_a_peak_that_barely_stands_out_is_flat():
    heat = maps(3e-4 * blob(30, 30), 0.2 + 0.04 * blob(30, 30), 0.2 + 0.3 * blob(30, 30))
    assert codes(heat) == [[HeatmapFlag.FLAT, HeatmapFlag.FLAT, 0]]


def test_two_equal_separated_blobs_are_several_peaks():
    heat = maps(blob(20, 20) + blob(80, 70), blob(20, 20, peak=0.6) + blob(29, 20, peak=0.57),
                blob(10, 10) + blob(50, 50, peak=0.95) + blob(100, 90, peak=0.92))
    flags = heatmap_flags(heat)
    assert flags.codes.tolist() == [[HeatmapFlag.SEVERAL_PEAKS] * 3]
    assert flags.peaks.tolist() == [[2, 2, 3]]
    assert describe_flags(flags) == [["2 equal peaks", "2 equal peaks", "3 equal peaks"]]


def test_equal_blobs_that_overlap_into_one_are_not_several_peaks():
    # 2 px apart at sigma 2: one elongated blob with its top between them
    assert heatmap_flags(maps(blob(40, 40) + blob(42, 40))).ok.all()


def test_many_equal_blobs_are_counted_up_to_a_limit():
    many = sum(blob(10 + 12 * i, 10 + 9 * i) for i in range(9))
    flags = heatmap_flags(maps(many))
    assert flags.codes.tolist() == [[HeatmapFlag.SEVERAL_PEAKS]]
    assert describe_flags(flags) == [[f"{MAX_EQUAL_PEAKS}+ equal peaks"]]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_flagged(bad):
    heat = maps(blob(30, 30), blob(30, 30))
    heat[0, 1, 5, 7] = bad
    flags = heatmap_flags(heat)
    assert flags.codes.tolist() == [[0, HeatmapFlag.NON_FINITE]]
    assert describe_flags(flags) == [["", "non-finite heatmap"]]


def test_a_mixed_batch_flags_exactly_the_right_entries():
    good, weak_second = blob(30, 40), blob(30, 40) + blob(90, 20, peak=0.7)
    nan = blob(30, 40).clone()
    nan[10, 10] = float("nan")
    batch = torch.stack([
        torch.stack([good, torch.ones(SIZE), weak_second, torch.zeros(SIZE)]),
        torch.stack([blob(30, 40) + blob(90, 20), good, nan, torch.full(SIZE, 0.3)]),
        torch.stack([good, weak_second, good, good]),
    ])
    flags = heatmap_flags(batch)
    f = HeatmapFlag
    assert flags.codes.tolist() == [[0, f.SATURATED, 0, f.FLAT], [f.SEVERAL_PEAKS, 0, f.NON_FINITE, f.FLAT], [0, 0, 0, 0]]
    assert flags.ok.tolist() == [[True, False, True, False], [False, True, False, False], [True] * 4]
    assert flags.has(f.FLAT).nonzero().tolist() == [[0, 3], [1, 3]]
    assert describe_flags(flags) == [["", "saturated heatmap", "", "flat heatmap"],
                                     ["2 equal peaks", "", "non-finite heatmap", "flat heatmap"], ["", "", "", ""]]


def test_a_single_channel_map_may_hold_many_equal_peaks_but_not_saturate():
    all_landmarks = sum(blob(8 + 5.5 * i, 10 + 4 * i) for i in range(19))
    assert heatmap_flags(maps(all_landmarks), single_channel=True).ok.all()
    assert not heatmap_flags(maps(all_landmarks)).ok.all()  # read as one landmark's map it is ambiguous
    assert codes(maps(torch.ones(SIZE)), single_channel=True) == [[HeatmapFlag.SATURATED]]
    assert codes(maps(torch.zeros(SIZE)), single_channel=True) == [[HeatmapFlag.FLAT]]


def test_half_precision_and_float64_maps_are_read():
    heat = maps(blob(30, 40), torch.ones(SIZE))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert codes(heat.to(dtype)) == [[0, HeatmapFlag.SATURATED]]


def test_a_unet_whose_sigmoid_saturated_as_in_a_diverged_run_is_flagged_on_every_landmark():
    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=19, widths=(4, 8), bottleneck=8).eval()
    with torch.no_grad():
        net.head.bias.fill_(50.0)  # sigmoid(50 + small) = 1.0: what a diverged run's checkpoint predicts
        heat = net(torch.rand(2, 1, 64, 64))
    assert heat.shape == (2, 19, 64, 64)
    flags = heatmap_flags(heat)
    assert (flags.codes == HeatmapFlag.SATURATED).all()
    assert describe_flags(flags)[1][18] == "saturated heatmap"


def test_an_empty_batch_gives_empty_flags():
    flags = heatmap_flags(torch.zeros(0, 19, 32, 32))
    assert flags.codes.shape == (0, 19) and describe_flags(flags) == []


def test_non_4d_input_is_refused():
    with pytest.raises(ValueError, match="B, K, H, W"):
        heatmap_flags(torch.zeros(3, 8, 8))
