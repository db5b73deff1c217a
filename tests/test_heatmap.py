import numpy as np
import pytest
import torch

from landmark_exp.heatmap.decoder import decode, decode_single_channel, refine
from landmark_exp.heatmap.generator import gaussian_heatmaps, single_channel


def _random_centres(n, k, size, margin=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return margin + torch.rand(n, k, 2, generator=g, dtype=torch.float64) * (size - 2 * margin)


def test_generated_heatmap_peaks_at_one_at_the_subpixel_centre():
    c = torch.tensor([[[10.25, 20.75]]], dtype=torch.float64)
    h = gaussian_heatmaps(c, (32, 40), 2.0)
    assert h.shape == (1, 1, 32, 40)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    want = torch.exp(-((xs - 10.25) ** 2 + (ys - 20.75) ** 2) / 8.0)
    torch.testing.assert_close(h[0, 0], want.double())


def test_invisible_landmarks_get_empty_maps():
    c = torch.tensor([[[5.0, 5.0], [9.0, 9.0]]])
    h = gaussian_heatmaps(c, (16, 16), 1.5, visible=torch.tensor([[True, False]]))
    assert h[0, 0].max() == pytest.approx(1.0) and h[0, 1].abs().sum() == 0


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.5])
def test_quadratic_decoder_recovers_subpixel_centres_within_a_tenth_of_a_pixel(sigma):
    centres = _random_centres(16, 19, 64)
    coords, peak = decode(gaussian_heatmaps(centres, (64, 64), sigma), "quadratic")
    err = (coords - centres).norm(dim=-1)
    assert err.max() < 0.01  # exact for Gaussians; the bar is 0.1
    assert peak.min() > np.exp(-0.25 / sigma**2) - 1e-9  # the nearest pixel is at most (0.5, 0.5) away


def test_soft_argmax_decoder_recovers_centres_within_a_tenth_of_a_pixel():
    centres = _random_centres(8, 19, 64)
    coords, _ = decode(gaussian_heatmaps(centres, (64, 64), 1.5), "soft_argmax", window=5)
    assert (coords - centres).norm(dim=-1).max() < 0.1


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_least_squares_decoder_is_exact_on_clean_gaussians(sigma):
    centres = _random_centres(16, 19, 64)
    coords, _ = decode(gaussian_heatmaps(centres, (64, 64), sigma), "lsq", window=2)
    assert (coords - centres).norm(dim=-1).max() < 1e-6


def test_least_squares_decoder_averages_out_noise_the_3x3_fit_follows():
    centres = _random_centres(32, 19, 96, margin=8)
    g = torch.Generator().manual_seed(1)
    clean = gaussian_heatmaps(centres, (96, 96), 2.0)
    noisy = (clean + 0.02 * torch.randn(clean.shape, generator=g, dtype=clean.dtype)).clamp_min(0)
    err = {m: float((decode(noisy, m, window=2)[0] - centres).norm(dim=-1).mean()) for m in ("quadratic", "lsq")}
    assert err["lsq"] < 0.05 and err["lsq"] < 0.5 * err["quadratic"]


def test_argmax_alone_loses_up_to_half_a_pixel_per_axis():
    centres = _random_centres(8, 19, 64)
    coords, _ = decode(gaussian_heatmaps(centres, (64, 64), 2.0), "argmax")
    err = (coords - centres).abs()
    assert err.max() <= 0.5 + 1e-9 and err.mean() > 0.15


def test_decoder_survives_flat_tops_and_borders():
    # a saturated plateau (sigmoid at 1) centred between pixels: centroid fallback
    hm = torch.zeros(1, 2, 32, 32)
    hm[0, 0, 10:12, 20:22] = 1.0
    hm[0, 1] = gaussian_heatmaps(torch.tensor([[[0.0, 31.0]]]), (32, 32), 2.0)[0, 0]
    coords, _ = decode(hm)
    torch.testing.assert_close(coords[0, 0], torch.tensor([20.5, 10.5], dtype=torch.float64))
    assert (coords[0, 1] - torch.tensor([0.0, 31.0], dtype=torch.float64)).norm() < 0.6


def test_single_channel_mask_decodes_into_identified_landmarks():
    mean_shape = torch.tensor([[10.0, 10.0], [50.0, 12.0], [30.0, 40.0], [12.0, 55.0]], dtype=torch.float64)
    # the true shape: mean shape shifted by (3, -2) with small per-landmark offsets
    true = mean_shape + torch.tensor([3.0, -2.0], dtype=torch.float64) + torch.tensor(
        [[0.3, 0.1], [-0.4, 0.2], [0.25, -0.35], [0.1, 0.45]], dtype=torch.float64)
    mask = single_channel(gaussian_heatmaps(true[None], (64, 64), 2.0))
    coords, peak = decode_single_channel(mask, mean_shape)
    assert (coords[0] - true).norm(dim=-1).max() < 0.05
    assert (peak > 0.9).all()


def test_single_channel_missing_blob_falls_back_to_aligned_mean_shape():
    mean_shape = torch.tensor([[10.0, 10.0], [50.0, 12.0], [30.0, 40.0]], dtype=torch.float64)
    true = mean_shape + 2.0
    mask = single_channel(gaussian_heatmaps(true[None, :2], (64, 64), 2.0))  # landmark 3 has no blob
    coords, peak = decode_single_channel(mask, mean_shape)
    np.testing.assert_allclose(coords[0, 2].numpy(), (mean_shape[2] + 2.0).numpy(), atol=0.05)
    assert peak[0, 2] == 0


def test_shape_prior_discards_a_far_false_peak_without_biasing_the_true_one():
    true = torch.tensor([[[20.3, 30.6]]], dtype=torch.float64)
    hm = gaussian_heatmaps(true, (64, 64), 2.0) * 0.8
    hm = hm + 1.0 * gaussian_heatmaps(torch.tensor([[[58.0, 5.0]]]), (64, 64), 2.0)  # stronger false blob
    plain, _ = decode(hm)
    assert (plain[0, 0] - torch.tensor([58.0, 5.0], dtype=torch.float64)).norm() < 0.1
    prior = torch.tensor([[24.0, 28.0]], dtype=torch.float64)
    coords, peak = decode(hm, prior=prior, prior_sigma=8.0)
    assert (coords[0, 0] - true[0, 0]).norm() < 0.01 and 0.6 < peak[0, 0] <= 0.8


def test_shape_prior_does_not_pull_a_broad_peak_towards_itself():
    # a prior 20 px away tilts the weighted maximum ~2 px off a sigma-4 blob's top;
    # decoding must still return the blob's own sub-pixel centre
    true = torch.tensor([[[20.4, 30.7]]], dtype=torch.float64)
    hm = gaussian_heatmaps(true, (64, 64), 4.0)
    prior = torch.tensor([[40.4, 30.7]], dtype=torch.float64)
    weighted = hm[0, 0] * gaussian_heatmaps(prior[None], (64, 64), 12.0)[0, 0]
    assert abs(int(weighted.flatten().argmax()) % 64 - 20.4) > 1.5  # the tilt this test is about
    coords, peak = decode(hm, prior=prior, prior_sigma=12.0)
    assert (coords[0, 0] - true[0, 0]).norm() < 0.01 and peak[0, 0] > 0.95


def _sigmoid_blobs(centres: torch.Tensor, size: int, top: float) -> torch.Tensor:
    """What a dice-trained sigmoid network draws: sigmoid(top - d^2 / 4), a blob saturated to a flat top."""
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    return torch.sigmoid(top - d2 / 4.0).float()


@pytest.mark.parametrize("top", [4.0, 8.0])
def test_logit_decoder_is_exact_on_saturated_sigmoid_blobs_the_log_fit_misplaces(top):
    centres = _random_centres(16, 19, 64, margin=6)
    maps = _sigmoid_blobs(centres, 64, top)
    err = {m: float((decode(maps, m, window=3)[0] - centres).norm(dim=-1).max()) for m in ("lsq", "logit_lsq")}
    assert err["logit_lsq"] < 1e-4 and err["lsq"] > 0.05


def test_logit_decoder_is_close_on_clean_gaussians():
    centres = _random_centres(16, 19, 64)
    coords, _ = decode(gaussian_heatmaps(centres, (64, 64), 2.0).float(), "logit_lsq", window=3)
    assert (coords - centres).norm(dim=-1).max() < 0.05


def test_logit_decoder_ends_at_the_same_point_from_any_pixel_of_a_flat_top():
    centre = torch.tensor([[[30.3, 21.6]]], dtype=torch.float64)
    maps = _sigmoid_blobs(centre, 64, 8.0)[0, 0]  # p > 0.999 on the pixels around the centre
    starts = [(30 + dx, 22 + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    assert all(maps[y, x] > 0.999 for x, y in starts)
    ix, iy = (torch.tensor(v) for v in zip(*starts, strict=True))
    got = refine(maps.expand(len(starts), 64, 64), ix, iy, "logit_lsq", window=3)
    assert float((got - got[0]).abs().max()) < 1e-9
    assert float((got[0] - centre[0, 0]).norm()) < 1e-4


def _module(heatmap: dict, names: list[str]):
    from landmark_exp.module import LandmarkModule

    model = {"_target_": "landmark_exp.models.unet.UNet", "out_channels": len(names), "widths": [4, 8, 8, 8],
             "bottleneck": 8}
    return LandmarkModule(model=model, loss={"_target_": "landmark_exp.losses.DiceLoss"},
                          optimizer={"_target_": "torch.optim.Adam"}, heatmap=heatmap, num_landmarks=len(names),
                          landmark_names=names, input_size=(64, 64))


def test_landmark_sigma_widens_only_the_named_or_numbered_landmarks_targets():
    names = ["sella", "nasion", "gonion"]
    m = _module({"sigma": 1.5, "landmark_sigma": {"Gonion": 3.0, "1": 1.0}}, names)
    assert m.landmark_sigma == [1.0, 1.5, 3.0]
    batch = {"keypoints": torch.tensor([[[20.0, 20.0], [32.0, 30.0], [40.0, 41.0]]]), "visible": torch.ones(1, 3)}
    heat, _ = m.targets(batch)
    # an unnormalised Gaussian of peak 1 far from the border sums to 2 pi sigma^2
    assert heat.sum(dim=(-2, -1))[0].tolist() == pytest.approx([2 * np.pi * s**2 for s in (1.0, 1.5, 3.0)], rel=1e-3)
    assert m.decoding().sigma == 3.0  # the spread window covers the widest target
    assert _module({"sigma": 1.5}, names).landmark_sigma == [1.5, 1.5, 1.5]


def test_an_unknown_landmark_in_landmark_sigma_is_one_line_naming_the_setting():
    from landmark_exp.data.records import DataError

    with pytest.raises(DataError, match=r"heatmap.landmark_sigma: 'chin' is neither a landmark number 1-2 nor one of a, b"):
        _module({"landmark_sigma": {"chin": 2.0}}, ["a", "b"])
    with pytest.raises(ValueError, match="heatmap.landmark_sigma.a must be > 0"):
        _module({"landmark_sigma": {"a": 0}}, ["a", "b"])
