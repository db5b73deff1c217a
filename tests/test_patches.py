"""The second stage's patches: exact geometry back to original pixels, and the coarse-to-fine cascade."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY, compose

from landmark_exp.data.geometry import Geometry, to_original
from landmark_exp.data.patches import (
    PatchDataset,
    crop,
    cut_patches,
    patch_blend,
    patch_context,
    patch_origins,
    patch_views,
    shift_centres,
    view_points,
)
from landmark_exp.data.records import DataError, Record, whole_number


def _record(landmarks: np.ndarray, hw=(40, 50)) -> Record:
    return Record(id="001", image_path="x.png", landmarks=landmarks, spacing=(0.1, 0.1), size=hw)


def test_crop_fills_outside_with_zeros_and_keeps_the_inside():
    img = np.arange(20, dtype=np.float32).reshape(4, 5)
    out = crop(img, -1, 2, (3, 3))
    np.testing.assert_array_equal(out, [[0, 10, 11], [0, 15, 16], [0, 0, 0]])


def test_patch_origin_puts_the_centre_on_the_middle_pixel():
    # an 8x8 patch has its centre at 3.5: a centre at (10.2, 20.7) gives top-left (6.7 -> 7, 17.2 -> 17)
    np.testing.assert_array_equal(patch_origins(np.array([[10.2, 20.7]]), (8, 8)), [[7, 17]])
    np.testing.assert_array_equal(patch_origins(np.array([[10.0, 20.0]]), (9, 9)), [[6, 16]])


def test_shift_centres_moves_by_working_pixels_in_original_pixels():
    geom = np.array([0.25, 0.2, -0.375, -0.4])  # working = a * original + b
    moved = shift_centres(np.array([[100.0, 50.0], [0.0, 0.0]]), (4, -2), geom)  # (dy, dx) = 4 down, 2 left
    np.testing.assert_array_equal(moved, [[92.0, 70.0], [-8.0, 20.0]])
    working = moved * geom[:2] + geom[2:]
    np.testing.assert_allclose(working - (np.array([[100.0, 50.0], [0.0, 0.0]]) * geom[:2] + geom[2:]), [[-2, 4], [-2, 4]])


def test_combine_stages_blends_only_refined_landmarks_by_the_first_stage_weight():
    from landmark_exp.cascade import combine_stages

    first = np.array([[[10.0, 20.0], [30.0, 40.0], [0.0, 0.0]]])
    second = np.array([[[14.0, 16.0], [34.0, 44.0], [8.0, 8.0]]])
    refined = np.array([True, True, False])
    np.testing.assert_array_equal(combine_stages(first, second, refined, 0.25), [[[13.0, 17.0], [33.0, 43.0], [0.0, 0.0]]])
    np.testing.assert_array_equal(combine_stages(first, second, refined, 0.0), [[[14.0, 16.0], [34.0, 44.0], [0.0, 0.0]]])
    np.testing.assert_array_equal(combine_stages(first, second, np.ones(3, bool), 1.0), first)


def test_patch_blend_takes_the_given_weight_then_the_stored_one_and_refuses_out_of_range():
    assert patch_blend(None) == 0.0 and patch_blend(None, 0.2) == 0.2
    assert patch_blend(0, 0.2) == 0.0 and patch_blend("0.5", 0.2) == 0.5  # 0 given: the second stage alone
    for bad in (-0.1, 1.5, "half", float("nan")):
        with pytest.raises(DataError, match="refine_blend must be a number from 0"):
            patch_blend(bad)


def test_a_context_channel_is_the_wider_window_with_the_same_centre_averaged_down():
    image = np.arange(64, dtype=np.float32).reshape(8, 8)  # pixel (x, y) = 8 y + x
    out = cut_patches(image, np.array([[3, 2], [-1, 0]]), (2, 2), context=2)
    assert out.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(out[0, 0], [[19, 20], [27, 28]])  # rows 2-3, columns 3-4
    # the 4x4 window with the same centre (3.5, 2.5) is rows 1-4, columns 2-5, each 2x2 block averaged
    np.testing.assert_array_equal(out[0, 1], [[(10 + 11 + 18 + 19) / 4, (12 + 13 + 20 + 21) / 4],
                                              [(26 + 27 + 34 + 35) / 4, (28 + 29 + 36 + 37) / 4]])
    # at the corner: zeros outside the image, in both channels
    np.testing.assert_array_equal(out[1, 0], [[0, 0], [0, 8]])  # columns -1..0, rows 0..1
    np.testing.assert_array_equal(out[1, 1], [[0, (0 + 1) / 4], [0, (8 + 9 + 16 + 17) / 4]])  # columns -2..1, rows -1..2
    np.testing.assert_array_equal(cut_patches(image, np.array([[3, 2]]), (2, 2))[:, 0], out[:1, 0])  # no context: 1 channel
    assert cut_patches(image, np.array([[3, 2]]), (2, 2)).shape == (1, 1, 2, 2)


def test_patch_context_accepts_whole_numbers_from_one_and_refuses_the_rest():
    assert patch_context(None) == 1 and patch_context(1) == 1 and patch_context(3) == 3
    for bad in (0, -2, 1.5, "wide"):
        with pytest.raises(DataError, match="data.patch.context must be a whole number"):
            patch_context(bad)


def test_every_whole_number_setting_takes_ints_their_digits_and_2_0_and_refuses_bools_fractions_and_words():
    assert whole_number(8, "batch_size") == 8 and whole_number("8", "batch_size") == 8
    assert whole_number(2.0, "x") == 2 and whole_number(0, "data.num_workers", least=0) == 0
    for bad, least in ((True, 1), (1.5, 1), ("two", 1), (None, 1), (0, 1), (4, 8)):
        with pytest.raises(DataError, match=f"x must be a whole number >= {least}, got"):
            whole_number(bad, "x", least=least)


def test_patches_with_context_carry_two_channels_and_the_same_keypoints():
    rng = np.random.default_rng(0)
    rec = _record(np.array([[10.0, 12.0], [30.0, 20.0]]))
    image = rng.random((40, 50)).astype(np.float32)
    geom = Geometry.for_resize((40, 50), (40, 50), False)
    plain = PatchDataset([rec], [image], [geom], (8, 8), jitter=2.0)[0]
    wide = PatchDataset([rec], [image], [geom], (8, 8), jitter=2.0, context=3)[0]
    assert plain["image"].shape == (2, 1, 8, 8) and wide["image"].shape == (2, 2, 8, 8)
    torch.testing.assert_close(wide["image"][:, :1], plain["image"])
    torch.testing.assert_close(wide["keypoints"], plain["keypoints"])


def test_patch_keypoints_and_geometry_map_back_to_original_pixels_exactly():
    landmarks = np.array([[12.3, 7.9], [40.0, 30.5], [2.0, 38.0]])
    # working resolution = half of the 40x50 original (as an ImageCache at input_size (20, 25) would store it)
    geom = Geometry.for_resize((40, 50), (20, 25))
    image = np.random.default_rng(0).random((20, 25)).astype(np.float32)
    ds = PatchDataset([_record(landmarks)], [image], [geom], size=(8, 8), jitter=3.0, seed=1)
    s = ds[0]
    assert s["image"].shape == (3, 1, 8, 8) and s["geometry"].shape == (3, 4)
    # every patch's keypoints go back to the original landmarks through that patch's own geometry
    for j in range(3):
        back = to_original(s["keypoints"][j].double().numpy(), s["geometry"][j].numpy())
        np.testing.assert_allclose(back, landmarks, atol=1e-5)
    # the seeded validation jitter keeps landmark j within jitter + rounding of its patch's centre
    centre = np.array([3.5, 3.5])
    diag = s["keypoints"][torch.arange(3), torch.arange(3)].numpy()
    assert np.all(np.abs(diag - centre) <= 3.0 + 0.5 + 1e-6)
    assert torch.equal(ds[0]["image"], s["image"])  # validation patches are the same every epoch


def test_an_identity_view_cuts_exactly_the_crop():
    image = np.random.default_rng(0).random((20, 25)).astype(np.float32)
    origins = np.array([[3, 4], [-2, 15], [20, 1]])
    np.testing.assert_array_equal(cut_patches(image, origins, (6, 5), view=(0.0, 1.0)), cut_patches(image, origins, (6, 5)))


def test_a_quarter_turn_view_reads_the_window_turned_about_its_centre():
    image = np.arange(64, dtype=np.float32).reshape(8, 8)  # pixel (x, y) = 8 y + x
    # the 3x3 window at (2, 2) has its centre at (3, 3); turned 90 degrees, patch pixel (px, py) shows
    # image x = 4 - py, y = px + 2
    out = cut_patches(image, np.array([[2, 2]]), (3, 3), view=(90.0, 1.0))[0, 0]
    np.testing.assert_allclose(out, [[8 * (px + 2) + 4 - py for px in range(3)] for py in range(3)], atol=1e-4)


def test_a_turned_and_zoomed_view_shows_a_point_where_view_points_says_and_returns_it():
    yy, xx = np.mgrid[0:40, 0:50]
    truth = np.array([23.3, 17.6])
    image = np.exp(-((xx - truth[0]) ** 2 + (yy - truth[1]) ** 2) / (2 * 1.5**2)).astype(np.float32)
    origins = np.array([[14, 9]])  # a 16x16 window centred on (21.5, 16.5), the blob 1.8 px right, 1.1 px down
    view = (20.0, 1.25)
    patch = cut_patches(image, origins, (16, 16), view=view)[0, 0].astype(np.float64)
    py, px = np.mgrid[0:16, 0:16]
    seen = np.array([(patch * px).sum(), (patch * py).sum()]) / patch.sum() + origins[0]  # the blob's centroid
    centre = np.array([21.5, 16.5])
    np.testing.assert_allclose(view_points(truth, centre, view), seen, atol=0.02)
    np.testing.assert_allclose(view_points(seen, centre, view, inverse=True), truth, atol=0.02)
    np.testing.assert_allclose(view_points(view_points(truth, centre, view), centre, view, inverse=True), truth, atol=1e-12)


def _blob_refiner(working_hw: tuple[int, int], size: tuple[int, int], k: int):
    """A second stage that sees perfectly: its heatmap of every landmark is the patch itself (an image of blobs)."""
    from landmark_exp.heatmap.decoder import Decoding
    from landmark_exp.predictor import ModelInfo, Predictor

    info = ModelInfo(num_landmarks=k, landmark_names=[f"l{j}" for j in range(k)], input_size=size,
                     working_size=working_hw, decoding=Decoding("lsq", 2))
    return Predictor(info, lambda batch: torch.from_numpy(batch).repeat(1, k, 1, 1), "test", "cpu")


def test_the_second_stage_finds_a_blob_where_it_is_through_shifted_turned_and_zoomed_patches():
    landmarks = np.array([[41.3, 35.7], [121.9, 62.2], [70.4, 100.8]])  # original pixels of a 120x160 image
    geom = Geometry.for_resize((120, 160), (60, 80))  # the working resolution: half
    yy, xx = np.mgrid[0:60, 0:80]
    image = np.zeros((60, 80))
    for x, y in geom.to_model(landmarks):
        image += 0.9 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    second = _blob_refiner((60, 80), (16, 16), 3)
    first = landmarks + [[3.0, -2.2], [-1.7, 2.9], [2.4, 2.4]]  # first estimates a few pixels off
    for shifts, views in [([[0, 0]], [[0, 1]]), ([[0, 0], [3, -2]], [[0, 1], [20, 1.25], [-10, 0.9]])]:
        got = second.refine_working(image.astype(np.float32), geom, first, shifts, views)
        np.testing.assert_allclose(got.xy, landmarks, atol=0.1)  # 0.05 working px: the blob, not the estimate
    # a turned view alone: the estimate made in the turned patch is turned back (else it would land ~1 px off)
    turned = second.refine_working(image.astype(np.float32), geom, first, [[0, 0]], [[25, 1.0]])
    np.testing.assert_allclose(turned.xy, landmarks, atol=0.1)


def test_patch_views_take_the_given_ones_then_the_stored_ones_and_refuse_bad_values():
    assert patch_views(None) == [(0.0, 1.0)] and patch_views(None, [[5, 1]]) == [(5.0, 1.0)]
    assert patch_views([[0, 1], [-6, 1.06]], [[5, 1]]) == [(0.0, 1.0), (-6.0, 1.06)]
    with pytest.raises(DataError, match="refine_views must be a list of .angle in degrees, zoom. pairs"):
        patch_views([1, 2])
    with pytest.raises(DataError, match="within"):
        patch_views([[90, 1]])
    with pytest.raises(DataError, match="within"):
        patch_views([[0, 3]])


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    """A tiny first stage (its 4 test images in 2 batches) and second stage, trained once for this module."""
    from conftest import write_isbi_fixture

    from landmark_exp.training import train

    tmp = tmp_path_factory.mktemp("cascade")
    base = ["data=isbi2015", f"data.source.root={write_isbi_fixture(tmp / 'isbi')}", f"paths.cache_dir={tmp}/cache",
            *TINY, "logger=none"]
    train(compose("train", [*base, "data.batch_size=2"], tmp / "coarse"))
    fine = [*base, "data.input_size=[80,64]", "+data.patch.size=[16,16]", "+data.patch.jitter=3", "trainer.max_epochs=2"]
    fine_summary = train(compose("train", fine, tmp / "fine"))
    return tmp, fine_summary


def _evaluate_cascade(tmp, out, *overrides):
    from landmark_exp.evaluation import evaluate

    return evaluate(compose("evaluate", [f"ckpt_path={tmp}/coarse/checkpoints/best.ckpt", "device=cpu",
                                         f"refine_ckpt={tmp}/fine/checkpoints/best.ckpt", *overrides], out))


def test_coarse_to_fine_evaluation_refines_the_first_stage(cascade, tmp_path):
    tmp, fine_summary = cascade
    fine_metrics = json.loads((tmp / "fine" / "metrics.json").read_text())
    assert fine_metrics["reference"]["name"] == "patch centres" and fine_summary["n_images"] == 4
    result = _evaluate_cascade(tmp, tmp_path / "ev", "refine_iterations=2")
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["reference"]["name"] == "first stage" and metrics["mre"] == result["mre"]
    assert set(metrics["by_ground_truth"]) == {"senior", "junior", "mean"}


def test_refine_iterations_not_a_whole_number_from_one_is_a_one_line_error(cascade, tmp_path, capsys):
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit, match="1"):
            _evaluate_cascade(cascade[0], tmp_path / "ev", f"refine_iterations={bad}")
        out = capsys.readouterr().out
        assert f"data error: refine_iterations must be a whole number >= 1, got {bad}" in out
        assert not (tmp_path / "ev" / "metrics.json").exists()


def _with_test2(root, out):
    """A copy of the fixture's layout whose Test2Data holds Test1's images and annotations as ids 311-314."""
    import shutil

    shutil.copytree(root, out)
    test2 = out / "RawImage" / "Test2Data"
    test2.mkdir()
    for image in sorted((out / "RawImage" / "Test1Data").iterdir()):
        new = f"{int(image.stem) + 300:03d}"
        shutil.copy(image, test2 / f"{new}{image.suffix}")
        for doctor in ("400_senior", "400_junior"):
            shutil.copy(out / "AnnotationsByMD" / doctor / f"{image.stem}.txt", out / "AnnotationsByMD" / doctor / f"{new}.txt")
    return out


def test_test2_is_scored_by_name_from_another_root_with_both_stages(cascade, tmp_path, capsys):
    import pandas as pd

    tmp = cascade[0]
    test1 = _evaluate_cascade(tmp, tmp_path / "t1")
    assert json.loads((tmp_path / "t1" / "metrics.json").read_text())["source_split"] == "test1"
    capsys.readouterr()
    # the same 4 images renamed: the same errors, though neither stage was trained where they now are
    root = _with_test2(tmp / "isbi", tmp_path / "unpacked")
    test2 = _evaluate_cascade(tmp, tmp_path / "t2", "split=test2", f"data_root={root}")
    assert test2["n_images"] == 4 and test2["mre"] == pytest.approx(test1["mre"], abs=1e-9)
    metrics = json.loads((tmp_path / "t2" / "metrics.json").read_text())
    assert metrics["source_split"] == "test2" and metrics["reference"]["name"] == "first stage"
    ids = sorted(set(pd.read_csv(tmp_path / "t2" / "predictions.csv", dtype={"image_id": str}).image_id))
    assert ids == ["311", "312", "313", "314"]
    out = " ".join(capsys.readouterr().out.split())
    assert "test2 (4 images)" in out


def test_a_source_split_that_is_not_there_is_a_one_line_error_naming_its_folder(cascade, tmp_path, capsys):
    with pytest.raises(SystemExit, match="1"):
        _evaluate_cascade(cascade[0], tmp_path / "ev", "split=test2")
    out = " ".join(capsys.readouterr().out.split())
    assert "data error:" in out and "Test2Data: split folder for 'test2' not found" in out


def test_a_malformed_stored_view_stops_training_before_it_starts(tmp_path, capsys):
    from conftest import write_isbi_fixture

    from landmark_exp.training import train

    cfg = compose("train", ["data=isbi2015", f"data.source.root={write_isbi_fixture(tmp_path / 'isbi')}",
                            f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none", "+data.patch.size=[16,16]",
                            "+data.patch.jitter=3", "+data.patch.views=[[90,1]]"], tmp_path / "run")
    with pytest.raises(SystemExit):
        train(cfg)
    assert "refine_views: each angle must be within +/-45 degrees" in capsys.readouterr().out
    assert not (tmp_path / "run" / "checkpoints").exists()
