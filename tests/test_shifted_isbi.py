"""benchmarks.shifted_isbi: the simulated other-site set keeps every landmark on its anatomy and its spacing honest."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, write_isbi_fixture
from PIL import Image

from landmark_exp.data.sources import CSVSource, ISBI2015Source

if str(ROOT) not in sys.path:  # benchmarks/ is not installed with the package: import it from the checkout
    sys.path.insert(0, str(ROOT))
from benchmarks.shifted_isbi import ShiftConfig, draw_ring, draw_ruler, generate, main, shift_image  # noqa: E402

TINY = ShiftConfig(out_width=(100, 140))  # fixture images are 64 px wide; too small for hardware


def _one_dot_fixture(root: Path) -> dict[str, tuple[int, np.ndarray]]:
    """The ISBI-layout fixture with each training image redrawn as one bright dot on a dark background, at the
    ground truth (mean of the doctors) of landmark id % 19: {id: (landmark index, its position)}."""
    write_isbi_fixture(root)
    dots = {}
    for rec in ISBI2015Source(root).load("train"):
        j = int(rec.id) % 19
        x, y = rec.landmarks[j]
        h, w = rec.size
        yy, xx = np.mgrid[0:h, 0:w]
        img = 25 + 220 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2**2))
        Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).save(rec.image_path)
        dots[rec.id] = (j, rec.landmarks)
    return dots


def _bright_spot(image: np.ndarray) -> np.ndarray:
    """(x, y) of the brightest region: the smoothed maximum, refined by the centroid of its surroundings."""
    smooth = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.5)
    y, x = np.unravel_index(np.argmax(smooth), smooth.shape)
    r = 4
    win = smooth[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
    win = np.clip(win - np.percentile(smooth, 50), 0, None)
    yy, xx = np.mgrid[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
    return np.array([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])


def test_landmarks_follow_the_pixels_and_spacing_matches_the_crop(tmp_path: Path) -> None:
    dots = _one_dot_fixture(tmp_path / "isbi")
    out = tmp_path / "shifted"
    table = generate(tmp_path / "isbi", out, seed=42, variants=3, cfg=TINY)
    labels = pd.read_csv(out / "labels.csv", dtype={"image_path": str})
    assert list(labels.columns) == ["image_path"] + [f"{n}_{a}" for n in range(1, 20) for a in "xy"] + ["spacing"]
    assert len(labels) == len(table) == 3 * 2  # 10 fixture training images: validation 2 (val_fraction 0.15)
    assert (out / "README.md").read_text().startswith("# Simulated other-site")
    for (_, row), (_, p) in zip(labels.iterrows(), table.iterrows(), strict=True):
        source_id = row.image_path.split("_v")[0]
        j, original = dots[source_id]
        pts = row[[f"{n}_{a}" for n in range(1, 20) for a in "xy"]].to_numpy(float).reshape(19, 2)
        image = cv2.imread(str(out / "images" / row.image_path), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (p.out_h, p.out_w)
        # the dot drawn at landmark j is where the CSV says landmark j now is
        assert np.linalg.norm(_bright_spot(image) - pts[j]) < 1.0, (row.image_path, _bright_spot(image), pts[j])
        # the spacing is the crop's: 0.1 mm/px x crop width / new width, and distances in mm are kept
        assert row.spacing == pytest.approx(0.1 * p.crop_w / p.out_w, rel=1e-5)
        mm_out = np.linalg.norm(pts[:, None] - pts[None], axis=-1) * row.spacing
        mm_src = np.linalg.norm(original[:, None] - original[None], axis=-1) * 0.1
        far = mm_src > 1.0
        np.testing.assert_allclose(mm_out[far], mm_src[far], rtol=0.01)
        assert (pts >= 0).all() and (pts[:, 0] <= p.out_w - 1).all() and (pts[:, 1] <= p.out_h - 1).all()
    # the package reads it with the spacing column
    recs = CSVSource(out, csv="labels.csv", spacing_column="spacing").load("all")
    assert [r.spacing[0] for r in recs] == pytest.approx(labels.spacing.tolist())


def test_copies_are_deterministic_and_a_full_folder_is_refused(tmp_path: Path, capsys) -> None:
    image = np.random.default_rng(0).uniform(0, 1, (80, 64)).astype(np.float32)
    pts = np.random.default_rng(1).uniform(10, 50, (19, 2))
    a, b = (shift_image(image, pts, 0.1, 42, "007", 1, TINY) for _ in range(2))
    c = shift_image(image, pts, 0.1, 42, "007", 2, TINY)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.landmarks, b.landmarks)
    assert not np.array_equal(a.landmarks, c.landmarks)
    root = write_isbi_fixture(tmp_path / "isbi")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "x.jpg").write_bytes(b"")
    assert main(["--root", str(root), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err


def test_hardware_keeps_clear_of_every_landmark() -> None:
    """Ruler and ear-rod ring on a 500x600 image at 0.3 mm/px never come within the clearance of a landmark."""
    cfg = ShiftConfig()
    spacing, drawn = 0.3, 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        pts = np.column_stack([rng.uniform(100, 420, 19), rng.uniform(150, 560, 19)])
        pts[3], pts[1] = (rng.uniform(110, 160), rng.uniform(260, 320)), (rng.uniform(360, 400), rng.uniform(200, 260))
        canvas = np.zeros((600, 500), np.uint8)
        placed = [draw_ruler(canvas, pts, spacing, cfg, rng), draw_ring(canvas, pts, spacing, cfg, rng)]
        drawn += sum(bool(p) for p in placed)
        distance = cv2.distanceTransform((canvas == 0).astype(np.uint8), cv2.DIST_L2, 5)
        near = distance[np.rint(pts[:, 1]).astype(int), np.rint(pts[:, 0]).astype(int)]
        assert near.min() >= cfg.clearance_mm / spacing - math.sqrt(2), (seed, near.min())
        if placed[0]:  # the ruler stands in front of the face (it looks right: nasion right of porion)
            assert placed[0]["ruler_x"] > pts[1, 0]
    assert drawn >= 12
