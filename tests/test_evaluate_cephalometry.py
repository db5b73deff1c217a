"""evaluate.py scores the challenge's second task: measurement classes from predicted vs ground-truth landmarks."""

import json

import numpy as np
import pandas as pd
from conftest import compose

from landmark_exp import cephalometry
from landmark_exp.evaluation import evaluate


def test_evaluate_reports_class_accuracy_and_mae_per_measurement(tmp_path, tiny_run, capsys):
    evaluate(compose("evaluate", [f"ckpt_path={tiny_run['ckpt']}", "device=cpu", "overlays=0"], tmp_path / "ev"))
    assert "cephalometric classification" in capsys.readouterr().out
    ceph = json.loads((tmp_path / "ev" / "metrics.json").read_text())["cephalometry"]
    assert [r["measurement"] for r in ceph["per_measurement"]] == list(cephalometry.NAMES) and ceph["n_images"] == 4
    frame = pd.read_csv(tmp_path / "ev" / "cephalometry.csv")
    assert len(frame) == 4
    # the summary is what the per-image table says, recomputed here from the ground truth the run scored against
    preds = pd.read_csv(tmp_path / "ev" / "predictions.csv").sort_values(["image_id", "landmark"])
    true_mm = preds[["true_x_mm", "true_y_mm"]].to_numpy().reshape(4, 19, 2)
    pred_mm = preds[["pred_x_mm", "pred_y_mm"]].to_numpy().reshape(4, 19, 2)
    expected, _ = cephalometry.compare(pred_mm, true_mm)
    for got, want in zip(ceph["per_measurement"], expected["per_measurement"], strict=True):
        assert got["accuracy"] == want["accuracy"]
        assert np.isclose(got["mae"], want["mae"], rtol=1e-3, atol=1e-3)  # CSV keeps 6 digits
        name = got["measurement"]
        assert got["accuracy"] == 100 * (frame[f"{name}_class_pred"] == frame[f"{name}_class_true"]).mean()
