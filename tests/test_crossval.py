"""K-fold cross-validation: folds partition the training pool; fold runs pool into one out-of-fold score."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose, write_isbi_fixture

from landmark_exp.crossval import crossvalidate
from landmark_exp.data.datamodule import LandmarkDataModule
from landmark_exp.data.records import DataError
from landmark_exp.data.sources import ISBI2015Source
from landmark_exp.fold_runs import candidate_name


def _val_ids(root: Path, folds: int, fold: int, seed: int = 42) -> tuple[list[str], list[str]]:
    dm = LandmarkDataModule(ISBI2015Source(root=str(root)), folds=folds, fold=fold, seed=seed, test_split=None)
    split = dm.split_records()
    return [r.id for r in split["val"]], [r.id for r in split["train"]]


def test_folds_partition_the_training_pool_into_near_equal_disjoint_parts(tmp_path):
    root = write_isbi_fixture(tmp_path / "isbi", n_train=11, n_test1=1, size=(24, 20))
    every = []
    for f in range(3):
        val, train = _val_ids(root, 3, f)
        assert not set(val) & set(train) and len(val) + len(train) == 11
        assert len(val) in (3, 4)
        every += val
    assert sorted(every) == [f"{i:03d}" for i in range(1, 12)]
    assert _val_ids(root, 3, 1) == _val_ids(root, 3, 1)  # seeded: the same fold every time
    assert _val_ids(root, 3, 1, seed=7) != _val_ids(root, 3, 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"folds": 1}, "data.folds must be at least 2"),
    ({"folds": 5, "fold": 5}, "data.fold must be in 0..4 for data.folds=5, got 5"),
    ({"folds": 5, "val_split": "test1"}, "cannot be combined with data.val_split"),
    ({"folds": 5, "random_split": [0.7, 0.15, 0.15]}, "cannot be combined"),
])
def test_impossible_fold_settings_are_refused_with_the_setting_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        LandmarkDataModule(ISBI2015Source(root=str(tmp_path)), **kwargs)


def test_more_folds_than_images_is_a_data_error(tmp_path):
    root = write_isbi_fixture(tmp_path / "isbi", n_train=4, n_test1=1, size=(24, 20))
    with pytest.raises(DataError, match="data.folds=5 is more than the 4 images"):
        _val_ids(root, 5, 0)


# -- pooling, on hand-written run directories with known errors ------------------------------------
def _fake_run(d: Path, fold: int, errors: dict[str, list[float]], overrides: list[str], folds: int = 2,
              data_seed: int = 42, split: str = "val") -> Path:
    d.mkdir(parents=True)
    rows = [{"image_id": i, "landmark": k + 1, "name": f"L{k + 1}", "error_mm": e}
            for i, es in errors.items() for k, e in enumerate(es)]
    pd.DataFrame(rows).to_csv(d / "predictions.csv", index=False)
    (d / "metrics.json").write_text(json.dumps({"split": split, "fold": {"folds": folds, "fold": fold, "data_seed": data_seed}}))
    (d / "run_info.json").write_text(json.dumps({"overrides": [*overrides, f"data.fold={fold}", f"hydra.run.dir={d}"]}))
    return d


def test_folds_pool_to_the_mean_over_every_image_and_a_second_candidate_is_compared_pairwise(tmp_path):
    a, b = ["data.folds=2", "model=unet_small"], ["data.folds=2", "model=unet"]
    _fake_run(tmp_path / "a0", 0, {"001": [1.0, 3.0], "003": [2.0, 2.0]}, a)
    _fake_run(tmp_path / "a1", 1, {"002": [4.0, 0.0]}, a)
    _fake_run(tmp_path / "b0", 0, {"001": [0.5, 2.5], "003": [2.0, 1.0]}, b)
    _fake_run(tmp_path / "b1", 1, {"002": [4.0, 1.0]}, b)
    _fake_run(tmp_path / "test_scored", 0, {"001": [9.0, 9.0]}, a, split="test")  # not a fold score: ignored
    first, second = crossvalidate([tmp_path])
    assert first["candidate"] == "data.folds=2 model=unet_small" and first["summary"]["n_images"] == 3
    assert first["summary"]["mre"] == pytest.approx(12.0 / 6)
    assert first["fold_mre"] == pytest.approx([2.0, 2.0]) and first["missing_folds"] == []
    assert [row["mre"] for row in first["summary"]["per_landmark"]] == pytest.approx([7 / 3, 5 / 3])
    v = second["vs_first"]
    per_image = np.array([-0.5, 0.5, -0.5])  # images 001, 002, 003: (b - a) averaged over landmarks
    assert v["delta_mre"] == pytest.approx(per_image.mean())
    assert v["ci95"] == pytest.approx(1.96 * per_image.std(ddof=1) / np.sqrt(3))
    assert (v["better"], v["worse"]) == (2, 1)
    assert v["per_landmark"] == pytest.approx({"L1": -0.5 / 3, "L2": -0.5 / 3})
    # per fold (fold 0: images 001 and 003, fold 1: image 002), with a t interval over the 2 folds
    assert v["fold_delta"] == pytest.approx({0: -0.5, 1: 0.5}) and v["folds_better"] == 1
    assert v["fold_ci95"] == pytest.approx(12.7062 * np.std([-0.5, 0.5], ddof=1) / np.sqrt(2), rel=1e-4)
    table = pd.read_csv(tmp_path / "crossval_summary.csv")
    assert list(table["images"]) == [3, 3] and table.loc[1, "delta_vs_first"] == pytest.approx(-1 / 6, rel=1e-4)  # the CSV keeps 6 digits


def test_a_missing_fold_is_said_and_the_rest_still_pooled(tmp_path, capsys):
    _fake_run(tmp_path / "a0", 0, {"001": [1.0]}, ["data.folds=3"], folds=3)
    (only,) = crossvalidate([tmp_path])
    assert only["missing_folds"] == [1, 2]
    assert "folds [1, 2] of 3 are not scored, so 1 images are pooled" in capsys.readouterr().out


@pytest.mark.parametrize(("second", "message"), [
    ({"fold": 0}, "fold 0 was already scored by"),
    ({"fold": 1, "data_seed": 7}, "with data seed 7, but"),
    ({"fold": 1, "errors": {"001": [1.0]}}, "image 001 is also in the validation fold of"),
])
def test_folds_that_do_not_fit_together_are_refused_naming_the_run(tmp_path, second, message):
    _fake_run(tmp_path / "a0", 0, {"001": [1.0]}, ["data.folds=2"])
    _fake_run(tmp_path / "a1", second["fold"], second.get("errors", {"002": [1.0]}), ["data.folds=2"],
              data_seed=second.get("data_seed", 42))
    with pytest.raises(DataError, match=message):
        crossvalidate([tmp_path])


def test_command_line_says_in_one_line_when_there_is_nothing_to_pool(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "landmark_exp.crossval", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert f"error: no cross-validation runs under {tmp_path}" in " ".join(proc.stdout.split())


def test_a_candidate_is_named_by_what_was_done_not_by_fold_or_checkpoint_paths():
    name = candidate_name(["ckpt_path=/r/3/checkpoints/best.ckpt", "refine_ckpt=[/a.ckpt,/b.ckpt]", "split=val",
                           "data.fold=3", "heatmap.decoder=lsq", "hydra.run.dir=x", "data.source.root=/d"])
    assert name == "ckpt_path=<1 checkpoint> refine_ckpt=<2 checkpoints> heatmap.decoder=lsq"


# -- real runs: a tiny two-fold sweep, then evaluate.py on its fold checkpoints ------------------------
@pytest.mark.slow
def test_a_fold_sweep_scores_every_training_image_once_and_evaluate_keeps_the_fold(tmp_path, capsys):
    from landmark_exp.evaluation import evaluate

    root = write_isbi_fixture(tmp_path / "isbi")
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "data=isbi2015", f"data.source.root={root}", f"paths.log_dir={tmp_path}/out",
           f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none", "callbacks.progress_bar=null", "eval_split=val",
           "data.folds=2", "data.fold=0,1", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "every image scored once, out of fold" in proc.stdout  # pooled by the sweep's end callback
    (pooled,) = json.loads((sweep / "crossval.json").read_text())
    assert pooled["summary"]["n_images"] == 10 and pooled["folds_scored"] == [0, 1]
    ids = [pd.read_csv(sweep / str(j) / "predictions.csv", dtype={"image_id": str})["image_id"].unique() for j in (0, 1)]
    assert sorted([*ids[0], *ids[1]]) == [f"{i:03d}" for i in range(1, 11)]
    # the same checkpoints re-decoded by evaluate.py form a second candidate, compared image by image
    for j in (0, 1):
        cfg = compose("evaluate", [f"ckpt_path={sweep / str(j) / 'checkpoints' / 'best.ckpt'}", "split=val",
                                   f"paths.cache_dir={tmp_path}/cache", "device=cpu", "overlays=0",
                                   "heatmap.decoder=argmax"], tmp_path / "argmax" / str(j))
        evaluate(cfg)
        info = json.loads((tmp_path / "argmax" / str(j) / "run_info.json").read_text())
        info["overrides"] = [f"ckpt_path={sweep / str(j)}", "split=val", "heatmap.decoder=argmax"]  # as the CLI writes them
        (tmp_path / "argmax" / str(j) / "run_info.json").write_text(json.dumps(info))
    first, second = crossvalidate([sweep, tmp_path / "argmax"], out=tmp_path)
    assert second["candidate"] == "ckpt_path=<1 checkpoint> heatmap.decoder=argmax"
    assert second["summary"]["n_images"] == 10 and second["vs_first"]["n_images"] == 10
    # the two fold models as one ensemble on validation: each trained on the other's fold, which is said
    capsys.readouterr()
    both = ",".join(str(sweep / str(j) / "checkpoints" / "best.ckpt") for j in (0, 1))
    evaluate(compose("evaluate", [f"ckpt_path=[{both}]", "split=val", f"paths.cache_dir={tmp_path}/cache",
                                  "device=cpu", "overlays=0"], tmp_path / "ensemble"))
    said = " ".join(capsys.readouterr().out.split())
    assert "carved the 'val' split differently (seed 42 fold 0/2, seed 42 fold 1/2)" in said and "optimistic" in said


def test_candidates_on_other_folds_are_compared_by_image_only(tmp_path):
    _fake_run(tmp_path / "a0", 0, {"001": [1.0], "002": [2.0]}, ["data.folds=2"])
    _fake_run(tmp_path / "b0", 0, {"001": [0.0], "002": [1.0]}, ["data.folds=2", "data.seed=7"], data_seed=7)
    _, second = crossvalidate([tmp_path])
    assert second["vs_first"]["delta_mre"] == pytest.approx(-1.0) and "fold_delta" not in second["vs_first"]


def test_runs_with_the_same_overrides_but_another_config_file_are_told_apart_not_pooled(tmp_path):
    """The experiment file changed between the folds' trainings (sigma 2 -> 1.5): two candidates, named by
    the key that differs; places (fold, output folders) differ too but do not split."""
    over = ["data.folds=2", "experiment=x"]
    for name, fold, sigma in (("old0", 0, 2.0), ("old1", 1, 2.0), ("new0", 0, 1.5), ("new1", 1, 1.5)):
        d = _fake_run(tmp_path / name, fold, {f"00{fold + 1}": [1.0 if sigma == 2.0 else 0.5]}, over)
        (d / "config.yaml").write_text(f"heatmap:\n  sigma: {sigma}\ndata:\n  fold: {fold}\n"
                                       f"trainer:\n  default_root_dir: {d}\npaths:\n  output_dir: {d}\n")
    old, new = crossvalidate([tmp_path])
    assert {old["candidate"], new["candidate"]} == {"data.folds=2 experiment=x [heatmap.sigma=2.0]",
                                                    "data.folds=2 experiment=x [heatmap.sigma=1.5]"}
    assert old["folds_scored"] == new["folds_scored"] == [0, 1]
    assert abs(new["vs_first"]["delta_mre"]) == pytest.approx(0.5)


# -- against a candidate recorded in an earlier crossval.json (its fold runs gone) ---------------------
def _recorded(tmp_path: Path, fold_mre: list[float], per_landmark: dict[str, float], data_seed: int = 42,
              folds_scored: tuple[int, ...] = (0, 1)) -> Path:
    path = tmp_path / "earlier" / "crossval.json"
    path.parent.mkdir(parents=True)
    old = {"candidate": "data.folds=2 heatmap.sigma=1.5", "folds": 2, "data_seed": data_seed,
           "folds_scored": list(folds_scored), "fold_mre": fold_mre,
           "summary": {"mre": float(np.mean(fold_mre)),
                       "per_landmark": [{"landmark": i + 1, "name": n, "mre": m}
                                        for i, (n, m) in enumerate(per_landmark.items())]}}
    path.write_text(json.dumps([{"candidate": "something older", "folds": 2}, old]))
    return path


def test_a_recorded_candidate_is_compared_fold_by_fold_and_per_landmark(tmp_path):
    from landmark_exp.crossval import read_recorded

    over = ["data.folds=2", "data.input_size=[256,208]"]
    _fake_run(tmp_path / "runs" / "a0", 0, {"001": [1.0, 3.0], "003": [2.0, 2.0]}, over)  # fold 0 MRE 2.0
    _fake_run(tmp_path / "runs" / "a1", 1, {"002": [4.0, 0.0]}, over)                     # fold 1 MRE 2.0
    recorded = read_recorded(_recorded(tmp_path, [2.5, 1.9], {"L1": 3.0, "L2": 1.0}))     # the last candidate
    (r,) = crossvalidate([tmp_path / "runs"], against=recorded)
    v = r["vs_recorded"]
    assert v["fold_delta"] == pytest.approx({0: -0.5, 1: 0.1}) and v["folds_better"] == 1
    assert v["fold_delta_mean"] == pytest.approx(-0.2)
    assert v["fold_ci95"] == pytest.approx(12.7062 * np.std([-0.5, 0.1], ddof=1) / np.sqrt(2), rel=1e-4)
    assert v["delta_mre"] == pytest.approx(2.0 - 2.2)
    assert v["per_landmark"] == pytest.approx({"L1": 7 / 3 - 3.0, "L2": 5 / 3 - 1.0})
    assert "heatmap.sigma=1.5" in v["against"]
    saved = json.loads((tmp_path / "runs" / "crossval.json").read_text())
    assert saved[0]["vs_recorded"]["fold_delta"] == pytest.approx({"0": -0.5, "1": 0.1})


def test_a_recorded_candidate_on_other_folds_is_refused_and_partial_folds_give_no_pooled_difference(tmp_path):
    from landmark_exp.crossval import read_recorded

    _fake_run(tmp_path / "runs" / "a0", 0, {"001": [1.0]}, ["data.folds=2"])
    other_seed = read_recorded(_recorded(tmp_path / "s7", [1.0, 1.0], {"L1": 1.0}, data_seed=7))
    with pytest.raises(DataError, match="data seed 7.*its folds hold other images"):
        crossvalidate([tmp_path / "runs"], against=other_seed)
    (r,) = crossvalidate([tmp_path / "runs"], against=read_recorded(_recorded(tmp_path / "s42", [1.5, 1.0], {"L1": 1.0})))
    assert r["vs_recorded"]["fold_delta"] == pytest.approx({0: -0.5}) and "delta_mre" not in r["vs_recorded"]


def test_an_unusable_recorded_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "crossval.json"
    bad.write_text("[{\"candidate\": \"x\"}]")
    _fake_run(tmp_path / "runs" / "a0", 0, {"001": [1.0]}, ["data.folds=2"])
    proc = subprocess.run([sys.executable, "-m", "landmark_exp.crossval", str(tmp_path / "runs"), "--against", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"error: {bad}: no candidate -1 with folds" in " ".join(proc.stdout.split())
