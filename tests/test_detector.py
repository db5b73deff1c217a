"""The detector file: built from checkpoints with a shape model and a calibrated reliability score, read back
checked, older versions migrated, and scored by evaluate exactly as its checkpoints are."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose

from landmark_exp.artifact import VERSION, read_detector
from landmark_exp.data.records import CheckpointError
from landmark_exp.detector import build
from landmark_exp.evaluation import evaluate
from landmark_exp.reliability import Reliability, separation
from landmark_exp.shape import ShapeModel


def _shapes(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n noisy copies of a 10-point base shape, each scaled, rotated and moved at random."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 100, size=(10, 2))
    out = []
    for _ in range(n):
        a, s, t = rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.2), rng.uniform(-50, 50, 2)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out.append(s * (base + rng.normal(0, 1.5, base.shape)) @ rot.T + t)
    return np.stack(out), base


def test_shape_model_scores_normal_shapes_low_whatever_their_pose():
    shapes, base = _shapes()
    model = ShapeModel.fit(shapes[:50])
    z = np.stack([model.check(s).z for s in shapes[50:]])
    assert np.median(z) < 2 and z.max() < 4.5
    turned = 2.0 * base @ np.array([[0.0, -1.0], [1.0, 0.0]]).T + 300  # twice the size, a quarter turn
    assert model.check(turned).z.max() < 4


def test_shape_model_sets_aside_a_misplaced_landmark_and_says_where_it_belongs():
    shapes, _ = _shapes()
    model = ShapeModel.fit(shapes[:50])
    moved = shapes[55].copy()
    moved[3] += [40.0, -30.0]
    check = model.check(moved)
    assert check.outlier[3] and check.z[3] > 10
    assert np.delete(check.z, 3).max() < 4.5  # one gross error does not drag the others' scores
    assert np.linalg.norm(check.expected[3] - shapes[55][3]) < 8


def test_shape_model_refuses_a_stored_covariance_that_is_not_positive_definite():
    model = ShapeModel.fit(_shapes()[0])
    stored = model.to_dict()
    assert np.allclose(ShapeModel.from_dict(stored, "x").cov, model.cov)
    with pytest.raises(CheckpointError, match="positive definite"):
        ShapeModel.from_dict({**stored, "cov": (-np.eye(20)).tolist()}, "x")
    with pytest.raises(CheckpointError, match="expected"):
        ShapeModel.from_dict({**stored, "mean": [[1.0, 2.0]]}, "x")


def test_reliability_calibration_flags_the_target_share_of_its_own_landmarks():
    rng = np.random.default_rng(1)
    signals = {"shape": rng.gamma(2, 1, (40, 19)), "stages": rng.gamma(1, 2, (40, 19))}
    rel = Reliability.calibrate(signals, 0.05, "test")
    share = (rel.score(signals) > 1).mean()
    assert 0.04 <= share <= 0.06
    assert set(rel.reasons({s: v[0] for s, v in signals.items()})) <= {"", "off the shape of the others", "stages disagree"}
    with pytest.raises(CheckpointError, match="known signals"):
        Reliability.from_dict({"thresholds": {"magic": 1.0}}, "x")


def test_separation_reports_auroc_and_the_share_of_gross_errors_flagged():
    errors = np.array([0.5, 1.0, 6.0, 8.0, 1.2, 0.7])
    score = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.95])
    sep = separation(score, score > 0.85, errors)
    assert sep["gross_errors"] == 2 and sep["auroc"] == pytest.approx(0.75)
    assert sep["gross_flagged_share"] == 0.5 and sep["flagged_share"] == pytest.approx(2 / 6)


def test_detector_is_built_calibrated_and_scored_by_evaluate_alone(tiny_run, tiny_refine, tmp_path, capsys):
    out = tmp_path / "det.pt"
    build(compose("detector", [f"first={tiny_run['ckpt']}", f"refine={tiny_refine}", f"output={out}",
                               "repair_z=6"], tmp_path / "build"))
    stored = torch.load(out, weights_only=True)
    assert stored["version"] == VERSION and stored["shape"] is not None and stored["reliability"]["thresholds"]
    assert "reliability calibrated on" in capsys.readouterr().out
    evaluate(compose("evaluate", [f"ckpt_path={out}", "split=test1", "overlays=0"], tmp_path / "ev"))
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["reliability"]["score"] == "reliability" and 0 <= metrics["reliability"]["flagged_share"] <= 1
    assert 0 <= metrics["reliability"]["unlike_training_images"] <= metrics["n_images"]
    assert "flags:" in capsys.readouterr().out


def test_detector_without_calibration_gives_its_checkpoints_landmarks_exactly(tiny_run, tiny_refine, tmp_path):
    out = tmp_path / "det.pt"
    build(compose("detector", [f"first={tiny_run['ckpt']}", f"refine={tiny_refine}", f"output={out}",
                               "calibrate=false"], tmp_path / "build"))
    evaluate(compose("evaluate", [f"ckpt_path={out}", "split=test1", "overlays=0"], tmp_path / "a"))
    evaluate(compose("evaluate", [f"ckpt_path={tiny_run['ckpt']}", f"refine_ckpt={tiny_refine}", "split=test1",
                                  "overlays=0"], tmp_path / "b"))
    a, b = (np.loadtxt(tmp_path / d / "predictions.csv", delimiter=",", skiprows=1, usecols=(3, 4)) for d in "ab")
    assert np.abs(a - b).max() <= 1e-6


def test_version_1_detector_is_read_as_one_without_shape_model(tiny_run, tmp_path):
    out = tmp_path / "det.pt"
    build(compose("detector", [f"first={tiny_run['ckpt']}", f"output={out}", "calibrate=false"], tmp_path / "b"))
    old = torch.load(out, weights_only=True)
    old = {k: v for k, v in old.items() if k not in ("shape", "repair_z", "reliability")} | {"version": 1}
    det = read_detector(old, "old.pt")
    assert det.shape is None and det.reliability is None
    with pytest.raises(CheckpointError, match="version 99"):
        read_detector({**old, "version": 99}, "new.pt")


def _site_csv(root, out):
    """The ISBI-layout fixture's images as a new site's images + CSV (senior doctor's points)."""
    rows = []
    for f in sorted((root / "RawImage").rglob("*.*")):
        pts = np.loadtxt(root / "AnnotationsByMD" / "400_senior" / (f.stem + ".txt"), delimiter=",", max_rows=19)
        rows.append(",".join([str(f.resolve())] + [f"{v:.1f}" for v in pts.ravel()]))
    out.mkdir(parents=True)
    header = "image_path," + ",".join(f"{j}_{a}" for j in range(1, 20) for a in "xy")
    (out / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return out


def test_adapt_cross_validates_on_the_site_and_writes_a_detector_evaluate_reads(tiny_run, tiny_refine, tmp_path):
    from landmark_exp.adapt import adapt

    det = tmp_path / "det.pt"
    build(compose("detector", [f"first={tiny_run['ckpt']}", f"refine={tiny_refine}", f"output={det}"], tmp_path / "b"))
    site = _site_csv(tiny_run["root"], tmp_path / "site")
    out = tmp_path / "site.pt"
    summary = adapt(compose("adapt", [f"detector={det}", f"site.root={site}", "site.spacing=0.12", f"output={out}",
                                      "folds=2", "sizes=[3]", "steps=2", f"paths.cache_dir={tmp_path}/cache"],
                            tmp_path / "run"))
    curve = summary["cross_validation"]
    assert [r["training_images"] for r in curve] == [0, 3, 7]
    assert all(r["images_scored"] == 14 and np.isfinite(r["mre_mm"]) for r in curve)
    assert (tmp_path / "run" / "learning_curve.csv").is_file()
    stored = read_detector(torch.load(out, weights_only=True), str(out))
    assert stored.first[0][1]["hyper_parameters"]["data"]["source"]["spacing"] == pytest.approx(0.12)
    assert stored.shape.count == torch.load(det, weights_only=True)["shape"]["count"] + 14
    evaluate(compose("evaluate", [f"ckpt_path={out}", "data=csv", f"data.source.root={site}", "data.source.csv=labels.csv",
                                  "data.source.splits=null", "data.source.spacing=0.12", "data.train_splits=[]",
                                  "data.test_split=all", "split=all", "overlays=0"], tmp_path / "ev"))
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_images"] == 14


def test_half_precision_detector_stores_half_the_weight_bytes_and_predicts_alike(tiny_run, tmp_path):
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    for out, extra in ((full, []), (half, ["half=true"])):
        build(compose("detector", [f"first={tiny_run['ckpt']}", f"output={out}", "calibrate=false", *extra],
                      tmp_path / out.stem))
    weights = torch.load(half, weights_only=True)["first"][0]["checkpoint"]["state_dict"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    full_weights = torch.load(full, weights_only=True)["first"][0]["checkpoint"]["state_dict"]
    assert sum(v.nbytes for v in weights.values()) < 0.55 * sum(v.nbytes for v in full_weights.values())
    for out in (full, half):
        evaluate(compose("evaluate", [f"ckpt_path={out}", "split=test1", "overlays=0"], tmp_path / f"ev_{out.stem}"))
    a, b = (np.loadtxt(tmp_path / f"ev_{n}" / "predictions.csv", delimiter=",", skiprows=1, usecols=(3, 4))
            for n in ("full", "half"))
    assert np.abs(a - b).max() < 0.5  # tiny fixture images: 0.5 px of an 80 px image


def test_a_second_stage_or_its_settings_given_where_they_cannot_apply_are_refused_not_ignored(tiny_run, tiny_refine, tmp_path):
    """A detector brings its own stages: refine_ckpt= beside one once ran the detector alone, silently."""
    from landmark_exp.cascade import load_predictor

    out = tmp_path / "det.pt"
    build(compose("detector", [f"first={tiny_run['ckpt']}", f"output={out}", "calibrate=false"], tmp_path / "build"))
    with pytest.raises(CheckpointError, match="is a detector file and brings its own stages"):
        load_predictor(str(out), "cpu", refine=str(tiny_refine))
    # and second-stage settings for a model without a second stage are refused, not dropped
    with pytest.raises(CheckpointError, match="refine_iterations, refine_shifts: set for a second stage, but"):
        load_predictor(str(out), "cpu", refine_iterations=2, refine_shifts=[[0, 0]])
    with pytest.raises(CheckpointError, match="refine_blend: set for a second stage"):
        load_predictor(tiny_run["ckpt"], "cpu", refine_blend=0.0)


def test_pretrained_names_the_detector_shipped_inside_the_package():
    from landmark_exp.artifact import PRETRAINED_DIR, pretrained_path

    assert pretrained_path("pretrained") == str(PRETRAINED_DIR / "isbi2015_robust.pt")
    assert pretrained_path("other.pt") == "other.pt"


def test_predict_with_a_calibrated_detector_scores_every_landmark_and_image(tiny_run, tiny_refine, tmp_path):
    from landmark_exp.predict import predict

    det = tmp_path / "det.pt"
    build(compose("detector", [f"first={tiny_run['ckpt']}", f"refine={tiny_refine}", f"output={det}"], tmp_path / "b"))
    images = tiny_run["root"] / "RawImage" / "Test1Data"
    predict(compose("predict", [f"ckpt_path={det}", f"input={images}", f"output_dir={tmp_path / 'out'}", "spacing=0.1"],
                    tmp_path / "p"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert all(isinstance(i["image_reliability"], float) for i in summary["images"])
    first = summary["images"][0]["id"]
    one = json.loads((tmp_path / "out" / f"{first}.json").read_text())
    scores = [lm["reliability"] for lm in one["landmarks"]]
    assert max(scores) == pytest.approx(one["image_reliability"])
    assert [f["landmark"] for f in one["flagged"]] == [lm["landmark"] for lm in one["landmarks"] if lm["flag"]]


def test_adapt_refuses_a_learning_curve_size_larger_than_a_fold_leaves_before_training(tiny_run, tmp_path, capsys):
    from landmark_exp.adapt import adapt

    site = _site_csv(tiny_run["root"], tmp_path / "site")
    with pytest.raises(SystemExit):
        adapt(compose("adapt", [f"detector={tiny_run['ckpt']}", f"site.root={site}", f"output={tmp_path / 'o.pt'}",
                                "folds=2", "sizes=[8]", f"paths.cache_dir={tmp_path}/cache"], tmp_path / "run"))
    assert "sizes=[8]: 8 is more than the 7 images outside the largest of 2 folds" in capsys.readouterr().out
    assert not (tmp_path / "run" / "cv").exists() and not (tmp_path / "o.pt").exists()


def test_detector_refuses_to_calibrate_an_ensemble_whose_members_chose_on_different_splits(tiny_run, tmp_path, capsys):
    other = tmp_path / "other_seed.ckpt"
    ckpt = torch.load(tiny_run["ckpt"], weights_only=False)
    ckpt["hyper_parameters"]["data"]["seed"] = 7
    torch.save(ckpt, other)
    out = tmp_path / "det.pt"
    with pytest.raises(SystemExit):
        build(compose("detector", [f"first=[{tiny_run['ckpt']},{other}]", f"output={out}"], tmp_path / "b"))
    assert "carved different validation splits" in capsys.readouterr().out and not out.exists()
    build(compose("detector", [f"first=[{tiny_run['ckpt']},{other}]", f"output={out}", "calibrate=false"],
                  tmp_path / "c"))
    assert out.exists()
