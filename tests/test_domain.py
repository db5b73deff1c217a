"""The domain check: an image unlike every training image is told apart, whatever its landmarks' own signals say,
the reference travels in the detector file, and a site's images join it when the detector is fine-tuned there."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose
from PIL import Image

from landmark_exp.artifact import read_detector
from landmark_exp.data.records import CheckpointError
from landmark_exp.detector import build
from landmark_exp.domain import GRID, DomainModel, descriptor
from landmark_exp.reliability import REASONS, Reliability


def _scans(n: int, seed: int, foreign: bool = False) -> np.ndarray:
    """n descriptors of 64x64 'X-rays': a bright disc (the skull) at a varying place on a dark field; a foreign
    scanner frames the head larger and lifts the background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(26, 38, 2)
        radius = rng.uniform(24, 28) if foreign else rng.uniform(16, 19)
        image = 0.8 * ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2) + (0.3 if foreign else 0.05)
        out.append(descriptor((image + rng.normal(0, 0.02, image.shape))[None]))
    return np.stack(out)


def test_descriptor_averages_the_network_input_down_to_a_fixed_grid_whatever_its_size():
    assert descriptor(np.zeros((1, 192, 160))).shape == (GRID * GRID,)
    assert descriptor(np.ones((256, 256))) == pytest.approx(np.ones(GRID * GRID))


def test_domain_distance_is_over_one_for_another_scanner_and_under_for_the_training_one():
    model = DomainModel(_scans(60, 0))
    assert np.median(model.distance(_scans(30, 1))) < 0.8
    assert model.distance(_scans(30, 2, foreign=True)).min() > 1.5


def test_site_images_added_to_the_reference_make_that_site_familiar():
    model = DomainModel(_scans(60, 0)).with_images(_scans(8, 3, foreign=True))
    assert np.median(model.distance(_scans(30, 4, foreign=True))) < 1
    assert np.median(model.distance(_scans(30, 1))) < 1  # the original site stays familiar


def test_domain_reference_round_trips_and_a_damaged_one_is_refused():
    model = DomainModel(_scans(20, 0))
    again = DomainModel.from_dict(model.to_dict(), "det.pt")
    probe = _scans(5, 9, foreign=True)
    assert again.distance(probe) == pytest.approx(model.distance(probe), rel=1e-2)  # stored as float16
    with pytest.raises(CheckpointError, match="det.pt: domain reference"):
        DomainModel.from_dict({**model.to_dict(), "grid": 8}, "det.pt")
    with pytest.raises(CheckpointError, match="det.pt: domain reference"):
        DomainModel.from_dict({**model.to_dict(), "reference": torch.full((10, GRID * GRID), float("nan"))}, "det.pt")


def test_calibration_keeps_the_domain_threshold_and_flags_a_foreign_image_whole():
    rng = np.random.default_rng(1)
    signals = {"shape": rng.gamma(2, 1, (40, 19)), "domain": np.full((40, 19), 0.5)}
    rel = Reliability.calibrate(signals, 0.03, "test")
    assert rel.thresholds["domain"] == 1.0 and 0.02 <= (rel.score(signals) > 1).mean() <= 0.04
    foreign = {"shape": np.full(19, 0.1), "domain": np.full(19, 1.4)}
    assert (rel.score(foreign) > 1).all() and set(rel.reasons(foreign)) == {REASONS["domain"]}


def test_detector_keeps_its_training_images_reference_and_predict_flags_a_foreign_image(tiny_run, tmp_path, capsys):
    from landmark_exp.predict import predict

    det = tmp_path / "det.pt"
    build(compose("detector", [f"first={tiny_run['ckpt']}", f"output={det}"], tmp_path / "b"))
    stored = torch.load(det, weights_only=True)
    assert stored["domain"]["reference"].shape[1] == GRID * GRID
    images = tmp_path / "in"
    images.mkdir()
    source = sorted((tiny_run["root"] / "RawImage" / "TrainingData").iterdir())[0]
    grey = np.asarray(Image.open(source).convert("L"))
    Image.fromarray(grey).save(images / "same.png")
    Image.fromarray(255 - grey).save(images / "negative.png")  # another 'scanner': inverted contrast
    predict(compose("predict", [f"ckpt_path={det}", f"input={images}", f"output_dir={tmp_path / 'out'}",
                                "spacing=0.1"], tmp_path / "p"))
    negative = json.loads((tmp_path / "out" / "negative.json").read_text())
    same = json.loads((tmp_path / "out" / "same.json").read_text())
    assert negative["domain_distance"] > 1 > same["domain_distance"]
    assert len(negative["flagged"]) == len(negative["landmarks"])
    assert "negative.png: unlike the images the detector was trained on" in capsys.readouterr().out


def test_version_2_detector_is_read_without_a_domain_reference(tiny_run, tmp_path):
    det = tmp_path / "det.pt"
    build(compose("detector", [f"first={tiny_run['ckpt']}", f"output={det}"], tmp_path / "b"))
    old = {k: v for k, v in torch.load(det, weights_only=True).items() if k != "domain"} | {"version": 2}
    read = read_detector(old, "old.pt")
    assert read.domain is None and read.shape is not None
