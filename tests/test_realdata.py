"""The real ISBI 2015 data beside the checkout (../shared/data), in both layouts; skipped where it is absent.

Loading reads only image headers, so the full splits are checked. The end-to-end
runs use a subset (symbolic links into the real data, never copies) so that this
file stays well under a minute on a 2-core CPU.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import NCHW, REAL_DATA, TINY, compose

from landmark_exp.data.records import ISBI2015_LANDMARKS, Record
from landmark_exp.data.sources import CSVSource, ISBI2015Source, follow_link_stub
from landmark_exp.metrics import radial_errors_mm

ISBI, CEPHA = REAL_DATA / "isbi2015", REAL_DATA / "cepha400"
CSV_SPLITS = {"train": "train_senior.csv", "test1": "test1_senior.csv"}
HEIGHT, WIDTH, K = 2400, 1935, 19
IDS = {"train": [f"{i:03d}" for i in range(1, 151)], "test1": [f"{i:03d}" for i in range(151, 301)]}
SUBSET = {"train": IDS["train"][:12], "test1": IDS["test1"][:8]}  # e2e: 10 train + 2 val, 8 test

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (ISBI.is_dir() and CEPHA.is_dir()), reason=f"real data not found at {REAL_DATA}"),
]


@pytest.fixture(scope="module")
def senior() -> dict[str, dict[str, list[Record]]]:
    """Senior-doctor records of both splits in both layouts: {layout: {split: records}}."""
    isbi = ISBI2015Source(ISBI, gt="senior")
    table = CSVSource(CEPHA, splits=CSV_SPLITS)
    return {"isbi": {s: isbi.load(s) for s in IDS}, "csv": {s: table.load(s) for s in IDS}}


@pytest.mark.parametrize("layout", ["isbi", "csv"])
@pytest.mark.parametrize("split", ["train", "test1"])
def test_each_layout_loads_150_images_of_19_landmarks_inside_the_image(senior, layout: str, split: str) -> None:
    records = senior[layout][split]
    assert [r.id for r in records] == IDS[split]
    for r in records:
        assert r.size == (HEIGHT, WIDTH), r.image_path  # from the image header
        assert r.landmarks.shape == (K, 2) and r.spacing == (0.1, 0.1)
        x, y = r.landmarks[:, 0], r.landmarks[:, 1]
        assert (x >= 0).all() and (x <= WIDTH - 1).all() and (y >= 0).all() and (y <= HEIGHT - 1).all(), r.id


def test_the_two_layouts_give_identical_senior_coordinates_per_image(senior) -> None:
    for split in IDS:
        for a, b in zip(senior["isbi"][split], senior["csv"][split], strict=True):
            assert a.id == b.id and Path(a.image_path).samefile(b.image_path)
            np.testing.assert_array_equal(a.landmarks, b.landmarks, err_msg=a.id)


def test_senior_and_junior_disagree_by_2_35_mm_on_average_over_training() -> None:
    source = ISBI2015Source(ISBI)
    s, j = (np.stack([r.landmarks for r in source.load_doctor("train", d)]) for d in ("senior", "junior"))
    assert radial_errors_mm(s, j, (0.1, 0.1)).mean() == pytest.approx(2.35, abs=0.01)


# -- tiny end-to-end runs through the real configs -------------------------------------------------------------


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> dict[str, Path]:
    """Both layouts of a few real images: symbolic links to the real files, CSV rows copied from the real CSVs."""
    base = tmp_path_factory.mktemp("realdata_subset")
    isbi, table = base / "isbi2015", base / "cepha400"
    for split, ids in SUBSET.items():
        folder = ISBI2015Source.SPLIT_DIRS[split]
        for i in ids:
            image = ISBI / "RawImage" / folder / f"{i}.jpg"
            _link(isbi / "RawImage" / folder / image.name, image)
            _link(table / "images" / image.name, image)
            for sub in ISBI2015Source.DOCTORS.values():
                _link(isbi / "AnnotationsByMD" / sub / f"{i}.txt", ISBI / "AnnotationsByMD" / sub / f"{i}.txt")
        with (CEPHA / CSV_SPLITS[split]).open(newline="") as fh:
            rows = list(csv.reader(fh))
        keep = [rows[0]] + [r for r in rows[1:] if Path(r[0]).stem in ids]
        assert len(keep) == len(ids) + 1
        with (table / CSV_SPLITS[split]).open("w", newline="") as fh:
            csv.writer(fh).writerows(keep)
    return {"isbi2015": isbi, "csv": table, "cache": base / "cache"}


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(follow_link_stub(target).resolve())


def _tiny_run(data: str, root: Path, cache: Path, out: Path) -> dict:
    from landmark_exp.training import train

    overrides = [
        f"data={data}", f"data.source.root={root}", f"paths.cache_dir={cache}", *TINY, "data.input_size=[64,64]",
        "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=2", NCHW,
    ]
    summary = train(compose("train", overrides, out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 8 and metrics["n_landmarks"] == K
    assert metrics["mre"] == summary["mre"] and np.isfinite(summary["mre"])
    assert [row["name"] for row in metrics["per_landmark"]] == list(ISBI2015_LANDMARKS)
    return summary


def test_tiny_run_on_real_isbi_layout_trains_and_tests(subset, tmp_path: Path) -> None:
    _tiny_run("isbi2015", subset["isbi2015"], subset["cache"], tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_tiny_run_on_real_csv_layout_then_evaluate_on_test1_reproduces_it(subset, tmp_path: Path) -> None:
    from landmark_exp.evaluation import evaluate

    run = tmp_path / "run"
    summary = _tiny_run("csv", subset["csv"], subset["cache"], run)
    ev = compose("evaluate", [f"ckpt_path={run}/checkpoints/best.ckpt", "device=cpu", "overlays=1",
                              "runtime=eager"], tmp_path / "eval")  # eager: train.py's own test, to the bit
    result = evaluate(ev)
    assert result["n_images"] == len(SUBSET["test1"])
    assert result["mre"] == pytest.approx(summary["mre"], abs=1e-9)
    preds = pd.read_csv(tmp_path / "eval" / "predictions.csv", dtype={"image_id": str})
    assert len(preds) == len(SUBSET["test1"]) * K
    assert sorted(set(preds["image_id"])) == SUBSET["test1"]
    truth = {r.id: r.landmarks for r in CSVSource(CEPHA, splits=CSV_SPLITS).load("test1")}
    for image_id, rows in preds.groupby("image_id"):
        np.testing.assert_array_equal(rows[["true_x_px", "true_y_px"]].to_numpy(), truth[image_id])


def test_isbi_jpegs_read_bit_for_bit_as_their_full_rgb_decode() -> None:
    """The luma-only decoding of grey-as-RGB JPEGs changes no pixel; 300.jpg (real colour) takes the full path."""
    from PIL import Image

    from landmark_exp.data.decoding import _has_neutral_chroma
    from landmark_exp.data.images import read_grey

    folder = ISBI / "RawImage" / "Test1Data"
    for name in ("151.jpg", "152.jpg", "226.jpg", "300.jpg"):
        full = np.asarray(Image.open(folder / name).convert("L")).astype(np.float32) / np.float32(255)
        assert np.array_equal(read_grey(folder / name), full), name
        assert _has_neutral_chroma(folder / name) == (name != "300.jpg"), name
