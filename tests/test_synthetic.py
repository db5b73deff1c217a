"""The synthetic cephalogram generator: ISBI layout, determinism, doctors, caching, image/landmark agreement."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from landmark_exp.data import synthetic
from landmark_exp.data.synthetic import GENERATOR_VERSION, SYNTHETIC_SPACING_MM, ensure_synthetic

SMALL = {"n_train": 6, "n_test1": 3}
SELLA, UPPER_LIP, SOFT_POGONION = 0, 12, 15


def _ids(root: Path, split: str) -> list[str]:
    return sorted(p.stem for p in (root / "RawImage" / split).glob("*.png"))


def _points(root: Path, doctor: str, image_id: str) -> np.ndarray:
    return np.loadtxt(root / "AnnotationsByMD" / f"400_{doctor}" / f"{image_id}.txt", delimiter=",")


def _image(root: Path, image_id: str) -> np.ndarray:
    path = next((root / "RawImage").glob(f"*/{image_id}.png"))
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "synthetic.json"
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synthetic") / "data", n_train=12, n_test1=8, seed=0)


def test_generate_writes_the_isbi2015_layout_with_ids_continuing_into_test1(dataset: Path):
    train, test1 = _ids(dataset, "TrainingData"), _ids(dataset, "Test1Data")
    assert train == [f"{i:03d}" for i in range(1, 13)]
    assert test1 == [f"{i:03d}" for i in range(13, 21)]
    for doctor in ("senior", "junior"):
        txts = sorted(p.stem for p in (dataset / "AnnotationsByMD" / f"400_{doctor}").glob("*.txt"))
        assert txts == train + test1
    meta = json.loads((dataset / "synthetic.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION
    assert meta["params"] == {"n_train": 12, "n_test1": 8, "width": 387, "height": 480, "seed": 0}
    assert meta["spacing_mm"] == SYNTHETIC_SPACING_MM == 0.5
    assert not list(dataset.parent.glob(".data.tmp-*")) and not list(dataset.parent.glob(".data.old-*"))


def test_images_are_8bit_greyscale_at_the_requested_size(dataset: Path):
    for image_id in ("001", "020"):
        img = _image(dataset, image_id)
        assert img.dtype == np.uint8 and img.shape == (480, 387)
        assert img.std() > 20  # not blank


def test_every_annotation_has_19_integer_lines_inside_the_image(dataset: Path):
    for txt in (dataset / "AnnotationsByMD").rglob("*.txt"):
        lines = txt.read_text().splitlines()
        assert len(lines) == 19, txt
        pts = np.array([[int(v) for v in line.split(",")] for line in lines])  # int() rejects "12.5"
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= 386).all(), txt
        assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= 479).all(), txt


def test_the_face_points_right_as_in_real_cephalograms(dataset: Path):
    for image_id in _ids(dataset, "TrainingData"):
        p = _points(dataset, "senior", image_id)
        assert p[1, 0] > p[0, 0] + 60  # nasion well anterior (right) of sella
        assert p[12, 0] > p[16, 0]  # upper lip in front of the posterior nasal spine
        assert p[7, 1] > p[1, 1] + 150  # menton far below nasion


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path):
    a = _all_bytes(ensure_synthetic(tmp_path / "a", seed=3, **SMALL))
    b = _all_bytes(ensure_synthetic(tmp_path / "b", seed=3, **SMALL))
    c = _all_bytes(ensure_synthetic(tmp_path / "c", seed=4, **SMALL))
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".png"))
    assert any(a[k] != c[k] for k in a if k.endswith(".txt"))


def test_adding_images_does_not_change_the_existing_ones(tmp_path: Path):
    small = ensure_synthetic(tmp_path / "small", n_train=3, n_test1=0)
    large = ensure_synthetic(tmp_path / "large", n_train=5, n_test1=0)
    for image_id in ("001", "002", "003"):
        assert (small / "RawImage/TrainingData" / f"{image_id}.png").read_bytes() == (
            large / "RawImage/TrainingData" / f"{image_id}.png"
        ).read_bytes()


def test_senior_and_junior_disagree_by_a_plausible_amount_in_mm(dataset: Path):
    ids = _ids(dataset, "TrainingData") + _ids(dataset, "Test1Data")
    senior = np.stack([_points(dataset, "senior", i) for i in ids])
    junior = np.stack([_points(dataset, "junior", i) for i in ids])
    dist_mm = np.linalg.norm(senior - junior, axis=2) * SYNTHETIC_SPACING_MM
    assert 0.5 < dist_mm.mean() < 3.0
    assert (dist_mm > 0).mean() > 0.5  # independent noise, not a copy
    per_landmark = dist_mm.mean(axis=0)
    assert per_landmark.argmax() == SOFT_POGONION  # the most ambiguous landmark, as in the real data


def test_ensure_synthetic_reuses_a_matching_dataset_without_rewriting_it(tmp_path: Path):
    root = ensure_synthetic(tmp_path / "data", **SMALL)
    meta, image = root / "synthetic.json", root / "RawImage/TrainingData/001.png"
    before = (meta.stat().st_mtime_ns, image.stat().st_mtime_ns, image.stat().st_ino)
    assert ensure_synthetic(root, **SMALL) == root
    assert (meta.stat().st_mtime_ns, image.stat().st_mtime_ns, image.stat().st_ino) == before


def test_ensure_synthetic_regenerates_when_params_or_version_change(tmp_path: Path, monkeypatch):
    root = ensure_synthetic(tmp_path / "data", **SMALL)
    ensure_synthetic(root, n_train=4, n_test1=1, width=160, height=200)
    assert _ids(root, "TrainingData") == ["001", "002", "003", "004"]
    assert _ids(root, "Test1Data") == ["005"]
    assert _image(root, "001").shape == (200, 160)
    params = json.loads((root / "synthetic.json").read_text())["params"]
    assert params == {"n_train": 4, "n_test1": 1, "width": 160, "height": 200, "seed": 0}

    inode = (root / "synthetic.json").stat().st_ino
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", GENERATOR_VERSION + 1)
    ensure_synthetic(root, n_train=4, n_test1=1, width=160, height=200)
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION + 1
    assert (root / "synthetic.json").stat().st_ino != inode


def test_ensure_synthetic_generates_once_when_called_concurrently(tmp_path: Path, monkeypatch):
    calls = []
    real = synthetic._write_dataset

    def counting(out, params):
        calls.append(out)
        real(out, params)

    monkeypatch.setattr(synthetic, "_write_dataset", counting)
    errors: list[BaseException] = []

    def worker():
        try:
            ensure_synthetic(tmp_path / "data", **SMALL)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 1
    assert len(_ids(tmp_path / "data", "TrainingData")) == SMALL["n_train"]


def test_generate_refuses_to_replace_a_directory_it_did_not_create(tmp_path: Path):
    root = tmp_path / "real_data"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        ensure_synthetic(root, **SMALL)
    assert (root / "precious.txt").read_text() == "keep me"


def test_unknown_or_invalid_params_are_rejected(tmp_path: Path):
    with pytest.raises(TypeError):
        ensure_synthetic(tmp_path / "data", n_images=5)
    with pytest.raises(ValueError):
        ensure_synthetic(tmp_path / "data", n_train=0)


def _sella_and_lip_contrast(img: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(ring - inside) around sella, (behind - in front) of the upper lip, in grey levels."""
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    r = np.hypot(xx - p[SELLA, 0], yy - p[SELLA, 1])
    sella = img[(r >= 13) & (r <= 20)].mean() - img[r <= 5].mean()
    x, y = (int(round(v)) for v in p[UPPER_LIP])
    lip = img[y - 2 : y + 3, x - 10 : x - 5].mean() - img[y - 2 : y + 3, x + 5 : x + 10].mean()
    return float(sella), float(lip)


def test_landmarks_sit_on_the_drawn_anatomy(dataset: Path):
    """Sella is a dark pocket in bright bone and the upper lip is the soft-tissue/air edge, image by image.

    Pairing each image with another image's landmarks must lose that contrast: it would not if the
    image ignored the landmarks.
    """
    ids = _ids(dataset, "TrainingData") + _ids(dataset, "Test1Data")
    images = [_image(dataset, i).astype(np.float64) for i in ids]
    truth = [(_points(dataset, "senior", i) + _points(dataset, "junior", i)) / 2 for i in ids]
    own = np.array([_sella_and_lip_contrast(img, p) for img, p in zip(images, truth, strict=True)])
    assert (own[:, 0] > 8).all(), own[:, 0]
    assert (own[:, 1] > 20).all(), own[:, 1]
    background = np.mean([img[-40:, -40:].mean() for img in images])
    assert background < 60  # dark air around the head, like an X-ray
    shifted = truth[1:] + truth[:1]
    other = np.array([_sella_and_lip_contrast(img, p) for img, p in zip(images, shifted, strict=True)])
    assert own[:, 0].mean() > other[:, 0].mean() + 10
    assert own[:, 1].mean() > other[:, 1].mean() + 10
