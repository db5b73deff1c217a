import numpy as np
import pytest
import torch

from landmark_exp.data.geometry import Geometry, to_original
from landmark_exp.metrics import LandmarkPredictions, radial_errors_mm, summarize


def test_radial_error_uses_per_axis_spacing():
    pred = np.array([[[3.0, 4.0], [0.0, 0.0]]])
    true = np.zeros((1, 2, 2))
    e = radial_errors_mm(pred, true, np.array([[0.1, 0.2]]))
    # sqrt((3*0.1)^2 + (4*0.2)^2) = sqrt(0.09 + 0.64)
    np.testing.assert_allclose(e, [[np.sqrt(0.73), 0.0]])


def test_summary_matches_hand_computed_numbers():
    errors = np.array([[1.0, 2.0, 3.0], [2.5, 4.0, 5.0]])
    s = summarize(errors, ["a", "b", "c"])
    assert s["mre"] == pytest.approx(17.5 / 6)
    assert s["median"] == pytest.approx(2.75)
    assert s["sd"] == pytest.approx(np.std(errors, ddof=1))
    assert s["sdr_2"] == pytest.approx(100 * 2 / 6)  # 1.0, 2.0 (<= is inclusive)
    assert s["sdr_2.5"] == pytest.approx(100 * 3 / 6)
    assert s["sdr_3"] == pytest.approx(100 * 4 / 6)
    assert s["sdr_4"] == pytest.approx(100 * 5 / 6)
    assert s["per_landmark"][1] == pytest.approx(
        {"landmark": 2, "name": "b", "mre": 3.0, "sd": np.std([2, 4], ddof=1), "median": 3.0,
         "sdr_2": 50.0, "sdr_2.5": 50.0, "sdr_3": 50.0, "sdr_4": 100.0})


def test_millimetres_after_undoing_anisotropic_resize_of_a_non_square_image():
    # 1935 x 2400 image at 0.1 mm/px resized to 256 x 256; the model is off by exactly one model pixel in x
    g = Geometry.for_resize((2400, 1935), (256, 256)).as_array()
    true_px = np.array([[[1000.0, 1200.0]]])
    true_model = true_px * g[:2] + g[2:]
    pred_px = to_original(true_model + np.array([1.0, 0.0]), g)
    e = radial_errors_mm(pred_px, true_px, np.array([[0.1, 0.1]]))
    assert e[0, 0] == pytest.approx(1935 / 256 * 0.1)  # 0.7559 mm per model pixel in x
    pred_px = to_original(true_model + np.array([0.0, 1.0]), g)
    assert radial_errors_mm(pred_px, true_px, np.array([[0.1, 0.1]]))[0, 0] == pytest.approx(2400 / 256 * 0.1)


def test_prediction_collector_drops_duplicate_samples_from_distributed_padding():
    m = LandmarkPredictions()
    z = torch.zeros(2, 3, 2, dtype=torch.float64)
    sp = torch.ones(2, 2, dtype=torch.float64)
    geom = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    m.update(torch.tensor([0, 1]), z + 1, z, sp, geom, torch.ones(2, 3))
    m.update(torch.tensor([2, 0]), z + 2, z, sp, geom, torch.ones(2, 3))  # index 0 again (padding)
    res = m.compute()
    assert res["index"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(res["pred"][:, 0, 0], [1.0, 1.0, 2.0])
