"""A landmark whose heatmap channel never learned is named, not hidden behind a good mean error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose

from landmark_exp.reports import unlearned, untrained_landmarks, warn_unlearned, weakest_peak_ratio


def test_a_channel_peaking_near_zero_is_named_and_healthy_channels_are_not():
    rng = np.random.default_rng(0)
    peak = rng.uniform(0.8, 1.0, size=(30, 4))
    assert untrained_landmarks(peak, ["a", "b", "c", "d"]) == []
    peak[:, 2] = rng.uniform(1e-4, 3e-4, size=30)  # what a dead sigmoid channel gives (seen: sella, 0.0003)
    (found,) = untrained_landmarks(peak, ["a", "b", "c", "d"])
    assert (found["landmark"], found["name"]) == (3, "c")
    assert found["median_peak"] < 3e-4 and 0.8 < found["typical_median_peak"] < 1.0
    peak[:, 2] = 0.5  # weaker but trained: not flagged
    assert untrained_landmarks(peak, ["a", "b", "c", "d"]) == []


def test_evaluate_warns_and_records_a_landmark_whose_output_is_switched_off(tmp_path, tiny_run, capsys):
    from landmark_exp.evaluation import evaluate

    ckpt = torch.load(tiny_run["ckpt"], weights_only=True)
    sd = ckpt["state_dict"]
    k = 19
    bias = next(name for name in reversed(list(sd)) if name.endswith("bias") and sd[name].shape == (k,))
    sd[bias][0] = -60.0  # landmark 1's output channel: sigmoid ~ 0 everywhere, as a dead channel
    sd[bias.removesuffix("bias") + "weight"][0] = 0.0
    dead = tmp_path / "dead.ckpt"
    torch.save(ckpt, dead)
    cfg = compose("evaluate", [f"ckpt_path={dead}", f"paths.cache_dir={tmp_path}/cache", "device=cpu",
                               "overlays=0"], tmp_path / "eval")
    evaluate(cfg)
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: landmark 1 sella: its heatmap peaks at" in out and "did not learn" in out
    recorded = json.loads((tmp_path / "eval" / "metrics.json").read_text())["untrained_landmarks"]
    assert recorded[0]["landmark"] == 1 and recorded[0]["median_peak"] < 1e-6


def test_weakest_peak_ratio_is_near_one_when_all_channels_learned_and_near_zero_with_a_dead_one():
    rng = np.random.default_rng(0)
    peak = rng.uniform(0.95, 1.0, size=(22, 19))
    assert weakest_peak_ratio(peak) > 0.9
    peak[:, 0] = 3e-4  # sella's channel on the seed-42 256x208 run (docs/results.md)
    assert weakest_peak_ratio(peak) < 1e-3


def test_weakest_peak_ratio_is_zero_not_nan_when_most_landmarks_have_no_peak():
    """An untrained one-channel model (experiment=seed) matches blobs to few landmarks, peak 0 for the rest: a
    NaN here stopped training at its first validation (the non-finite guard)."""
    peak = np.zeros((4, 19))
    peak[:, :5] = 0.5
    assert weakest_peak_ratio(peak) == 0.0
    assert np.isnan(weakest_peak_ratio(np.full((4, 19), np.nan)))


def _summary_with_landmark_errors(mre_mm: list[float]) -> dict:
    from landmark_exp.metrics import summarize

    errors = np.tile(np.asarray(mre_mm, dtype=float), (10, 1))  # every image: each landmark's error = its MRE
    return summarize(errors, [f"L{k + 1}" for k in range(len(mre_mm))])


def test_a_landmark_learned_in_the_wrong_place_is_named_though_its_peak_is_fine(capsys):
    from landmark_exp.reports import outlier_landmarks, warn_outliers

    # Test1 per-landmark MREs of isbi2015_cpu with smooth 1e-4, seed 2: sella 10.28 mm (a copy of the kept run's
    # benchmarks/results/cv5/test1_sigma1.5_smooth1e-4_s2/per_landmark.csv, its first columns; tests read only tests/)
    kept = Path(__file__).parent / "fixtures" / "per_landmark_sella_outlier.csv"
    mre = pd.read_csv(kept)["mre"].tolist()
    (found,) = outlier_landmarks(_summary_with_landmark_errors(mre))
    assert (found["landmark"], found["name"]) == (1, "L1")
    assert found["mre"] == pytest.approx(10.2803) and found["typical_mre"] == pytest.approx(1.33283)
    warn_outliers([found], "test")
    out = " ".join(capsys.readouterr().out.split())
    assert "landmark 1 L1: 10.28 mm on the test images, 7.7x the median landmark's 1.33 mm" in out


def test_the_hardest_landmark_of_a_healthy_run_is_not_an_outlier():
    from landmark_exp.reports import outlier_landmarks

    # the worst healthy report kept: porion 3.4x the median landmark (cpu_cascade60/fine_s42)
    assert outlier_landmarks(_summary_with_landmark_errors([3.40] + [1.0] * 18)) == []
    assert outlier_landmarks(_summary_with_landmark_errors([5.01] + [1.0] * 18))[0]["landmark"] == 1


def test_a_model_no_better_than_the_mean_shape_is_named_though_no_landmark_stands_out(capsys):
    # seen: an output prior that kept every map from localising, 11.17 mm against the mean shape's 9.6 mm, and
    # no per-landmark warning (all landmarks were bad alike)
    found = unlearned({"mre": 11.17}, {"mre": 9.6}, "mean-shape baseline")
    assert found == {"mre": 11.17, "mean_shape_mre": 9.6}
    warn_unlearned(found, "test")
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: MRE 11.17 mm on the test images is not under half the mean-shape baseline's 9.60 mm" in out
    assert unlearned({"mre": 1.3}, {"mre": 9.6}, "mean-shape baseline") is None        # a trained model
    assert unlearned({"mre": 5.0}, {"mre": 1.3}, "first stage") is None                # a cascade's reference
    assert unlearned({"mre": 5.0}, None, "mean-shape baseline") is None
