import json

import numpy as np
import pandas as pd
from conftest import NCHW, TINY, compose

from landmark_exp.evaluation import evaluate
from landmark_exp.training import train


def test_tiny_train_then_evaluate_writes_reports(tmp_path, isbi_root):
    cfg = compose("train", ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache", *TINY,
                            NCHW], tmp_path / "run")
    summary = train(cfg)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and metrics["mre"] == summary["mre"]
    assert len(pd.read_csv(run / "per_landmark.csv")) == 19
    assert (run / "config.yaml").is_file()
    # runtime=eager reproduces train.py's own test to the bit (tuned rounds differently: test_performance.py)
    ev = compose("evaluate", [f"ckpt_path={run}/checkpoints/best.ckpt", "device=cpu", "runtime=eager"],
                 tmp_path / "eval")
    result = evaluate(ev)
    assert abs(result["mre"] - summary["mre"]) < 1e-9
    preds = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert len(preds) == 4 * 19
    assert (tmp_path / "eval" / "overlays").is_dir()


def test_evaluate_scores_senior_junior_and_mean_and_prints_no_published_table_for_data_that_is_not_isbi(
        tmp_path, isbi_root, capsys):
    cfg = compose("train", ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache", *TINY], tmp_path / "run")
    train(cfg)
    ev = compose("evaluate", [f"ckpt_path={tmp_path}/run/checkpoints/best.ckpt", "device=cpu"], tmp_path / "eval")
    evaluate(ev)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    by = metrics["by_ground_truth"]
    assert set(by) == {"senior", "junior", "mean"}
    # the checkpoint's data uses gt=mean, so that row is the headline number
    assert by["mean"]["mre"] == metrics["mre"]
    assert by["senior"]["mre"] != by["junior"]["mre"]  # the fixture's junior is offset by one pixel
    out = capsys.readouterr().out
    assert "published results" not in out  # an ISBI layout, but 80 x 64 images: not the challenge's data


def test_the_published_table_is_for_isbi_2015_content_not_for_a_split_named_test1(tmp_path):
    from landmark_exp.data.records import ISBI2015_LANDMARKS, Record
    from landmark_exp.data.sources import ISBI2015Source, SyntheticSource
    from landmark_exp.isbi import is_isbi2015
    from landmark_exp.scores import Scores

    def scores(hw):
        recs = [Record(str(i), tmp_path / f"{i}.bmp", np.zeros((19, 2)), (0.1, 0.1), None, hw) for i in range(2)]
        return Scores(recs, list(ISBI2015_LANDMARKS), np.zeros((2, 19, 2)), np.ones((2, 19)), np.zeros((2, 19, 2)), "x")

    isbi = ISBI2015Source(root=str(tmp_path))
    assert is_isbi2015(isbi, scores((2400, 1935)))
    assert not is_isbi2015(isbi, scores((80, 64)))
    assert not is_isbi2015(SyntheticSource(root=str(tmp_path)), scores((2400, 1935)))


def test_training_resumes_from_last_checkpoint(tmp_path, isbi_root):
    import torch

    base = ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none"]
    train(compose("train", base, tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    train(compose("train", [*base, "trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path / "run"))
    assert torch.load(last, weights_only=True)["epoch"] == 1  # continued: epoch 2 of 2, not a fresh start


def test_evaluate_can_override_the_decoder_of_a_checkpoint(tmp_path, isbi_root):
    base = ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none"]
    train(compose("train", base, tmp_path / "run"))
    ckpt = f"ckpt_path={tmp_path}/run/checkpoints/best.ckpt"
    quad = evaluate(compose("evaluate", [ckpt, "device=cpu"], tmp_path / "q"))
    arg = evaluate(compose("evaluate", [ckpt, "device=cpu", "heatmap.decoder=argmax",
                                        "heatmap.prior_sigma=0"], tmp_path / "a"))
    assert quad["n_images"] == arg["n_images"] == 4 and quad["mre"] != arg["mre"]
    # argmax lands on whole model pixels: the fixture's 64x80 images at 32x32 give x_model = 0.5 x - 0.25
    # and y_model = 0.4 y - 0.3; the quadratic decoder's sub-pixel positions do not
    for run, whole in (("a", True), ("q", False)):
        p = pd.read_csv(tmp_path / run / "predictions.csv")
        xm, ym = 0.5 * p.pred_x_px - 0.25, 0.4 * p.pred_y_px - 0.3
        on_grid = np.allclose(xm, xm.round(), atol=1e-6) and np.allclose(ym, ym.round(), atol=1e-6)
        assert on_grid == whole


def test_eval_split_val_scores_the_validation_split_not_the_test_set(tmp_path, isbi_root):
    base = ["data=isbi2015", f"data.source.root={isbi_root}", f"paths.cache_dir={tmp_path}/cache", *TINY, "logger=none"]
    summary = train(compose("train", [*base, "eval_split=val"], tmp_path / "run"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # 10 training images, val_fraction 0.15 -> 2 validation images; the 4 test images are not scored
    assert metrics["split"] == "val" and metrics["n_images"] == summary["n_images"] == 2


def test_the_seed_decks_one_channel_setup_trains_past_its_first_validation(tmp_path, isbi_root):
    """experiment=seed (one output channel for all 19 landmarks) composes with the ISBI layout and trains to a
    finite test score (its first validation once stopped it: tests/test_untrained_landmarks.py)."""
    cfg = compose("train", ["experiment=seed", "data=isbi2015", f"data.source.root={isbi_root}",
                            f"paths.cache_dir={tmp_path}/cache", *TINY, "trainer.num_sanity_val_steps=1"], tmp_path / "run")
    assert cfg.model.out_channels == 1
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["mre"]) and metrics["split"] == "test"
