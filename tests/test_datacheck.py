"""`python -m landmark_exp.datacheck`: a dataset checked with training's own checks before anyone trains on it.

Fixtures are tiny datasets in tmp_path (80x64 images, 19 landmarks, 4 training and 2 Test1 images) in both layouts:
the ISBI layout of conftest's `write_isbi_fixture`, and the same images and doctors as images + CSV.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, compose, write_isbi_fixture
from PIL import Image

from landmark_exp.data.records import Record
from landmark_exp.datacheck import datacheck, disagreement

H, W, K, N_TRAIN, N_TEST1 = 80, 64, 19, 4, 2
SQRT2 = float(np.sqrt(2.0))  # the fixture's junior doctor marks every landmark 1 px right and 1 px down of the senior


def write_csv_set(root: Path) -> Path:
    """The ISBI fixture as images + CSV: images/NNN.png, train_senior.csv (001-004) and test1_senior.csv (005-006)
    with the senior doctor's points, doctor1.csv / doctor2.csv with the senior's / junior's points of all six.
    Rows in id order: image NNN of a split's CSV is on line (its place in the split) + 1."""
    isbi = write_isbi_fixture(root / "_isbi", N_TRAIN, N_TEST1)
    (root / "images").mkdir(parents=True)
    header = ["image_path"] + [f"{i}_{a}" for i in range(1, K + 1) for a in "xy"]
    tables: dict[str, list] = {name: [header] for name in
                               ("train_senior.csv", "test1_senior.csv", "doctor1.csv", "doctor2.csv")}
    for image in sorted((isbi / "RawImage").rglob("*.png")):
        (root / "images" / image.name).write_bytes(image.read_bytes())
        split = "train_senior.csv" if image.parent.name == "TrainingData" else "test1_senior.csv"
        for doctor, tables_of in (("400_senior", (split, "doctor1.csv")), ("400_junior", ("doctor2.csv",))):
            pts = np.loadtxt(isbi / "AnnotationsByMD" / doctor / f"{image.stem}.txt", delimiter=",")
            for name in tables_of:
                tables[name].append([image.name, *(str(int(v)) for v in pts.ravel())])
    for name, rows in tables.items():
        with (root / name).open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    return root


@pytest.fixture(params=["isbi", "csv"])
def dataset(request, tmp_path) -> tuple[str, Path]:
    if request.param == "isbi":
        return "isbi", write_isbi_fixture(tmp_path / "isbi", N_TRAIN, N_TEST1)
    return "csv", write_csv_set(tmp_path / "csvdata")


def run_check(tmp_path: Path, kind: str, root: Path, *overrides: str) -> tuple[int, dict, pd.DataFrame]:
    """(exit status, datacheck.json, datacheck.csv) of the job, composed as the command composes it."""
    out = tmp_path / "run"
    data = "isbi2015" if kind == "isbi" else "csv"
    cfg = compose("datacheck", [f"data={data}", f"data.source.root={root}", "workers=2", *overrides], out)
    try:
        datacheck(cfg)
        status = 0
    except SystemExit as e:
        status = e.code
    report = json.loads((out / "datacheck.json").read_text(), parse_constant=_not_strict_json)
    problems = pd.read_csv(out / "datacheck.csv", dtype={"line": "Int64"}, keep_default_na=False, na_values=[""])
    return status, report, problems


def _not_strict_json(token: str) -> None:
    raise ValueError(f"datacheck.json is not strict JSON: {token}")


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_a_clean_set_exits_0_and_says_how_many_images_are_ready(dataset, tmp_path, capsys):
    kind, root = dataset
    status, report, problems = run_check(tmp_path, kind, root)
    assert status == 0 and report["ok"] and problems.empty and list(problems.columns) == ["split", "file", "line", "problem"]
    assert last_line(capsys) == f"OK: {N_TRAIN + N_TEST1} images ready to train"
    train = report["splits"]["train"]
    assert (train["images"], train["ready"], train["landmarks"], train["spacing_mm"]) == (N_TRAIN, N_TRAIN, [K], [[0.1, 0.1]])
    assert train["image_size"] | {"most_common": None} == {"min": f"{W}x{H}", "median": f"{W}x{H}", "max": f"{W}x{H}",
                                                            "distinct": 1, "most_common": None}
    assert report["splits"]["test1"]["ready"] == N_TEST1
    assert report["training"] == {"train": N_TRAIN - 1, "val": 1, "test": N_TEST1}  # as training would carve it


# each case spoils training image 002 and returns (file the problem names, its line or None, fragments of the
# problem, the kind counted in the table)
def _truncated_image(kind: str, root: Path) -> tuple:
    image = root / ("RawImage/TrainingData" if kind == "isbi" else "images") / "002.png"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    where = [] if kind == "isbi" else [f"referenced at {root / 'train_senior.csv'}:3"]
    return image, None, ["image data truncated", *where], "unreadable"


def _point_outside(kind: str, root: Path) -> tuple:
    if kind == "isbi":
        ann = root / "AnnotationsByMD" / "400_senior" / "002.txt"
        lines = ann.read_text().splitlines()
        lines[3] = f"{W},{lines[3].split(',')[1]}"  # pixel centres run 0..W-1: the edge is at W - 0.5
        ann.write_text("\n".join(lines) + "\n")
        return ann, 4, ["landmark 4 (porion)", f"outside the {W}x{H} image 002.png"], "outside"
    _edit_row(root / "train_senior.csv", 3, lambda row: row.__setitem__(7, str(W)))
    return root / "train_senior.csv", 3, ["landmark 4 (porion)", f"outside the {W}x{H} image 002.png"], "outside"


def _duplicate_id(kind: str, root: Path) -> tuple:
    if kind == "isbi":  # 002.jpg sorts before 002.png: the png is the duplicate
        folder = root / "RawImage" / "TrainingData"
        Image.open(folder / "002.png").save(folder / "002.jpg")
        return folder / "002.png", None, ["duplicate image id '002'", "002.jpg"], "duplicate_id"
    table = root / "train_senior.csv"
    with table.open("a") as fh:
        fh.write(table.read_text().splitlines()[2] + "\n")
    return table, N_TRAIN + 2, ["duplicate image id '002'", "(also train_senior.csv:3)"], "duplicate_id"


def _wrong_landmark_count(kind: str, root: Path) -> tuple:
    if kind == "isbi":
        ann = root / "AnnotationsByMD" / "400_senior" / "002.txt"
        ann.write_text("\n".join(ann.read_text().splitlines()[: K - 1]) + "\n")
        return ann, None, [f"{K - 1} landmark lines, expected {K}"], "landmark_count"
    _edit_row(root / "train_senior.csv", 3, lambda row: row.pop())
    return root / "train_senior.csv", 3, [f"{2 * K} fields, expected {2 * K + 1}"], "landmark_count"


def _edit_row(table: Path, line: int, edit) -> None:
    lines = table.read_text().splitlines()
    row = lines[line - 1].split(",")
    edit(row)
    lines[line - 1] = ",".join(row)
    table.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("spoil", [_truncated_image, _point_outside, _duplicate_id, _wrong_landmark_count])
def test_each_bad_sample_is_one_problem_naming_its_file_and_line_and_exits_1(dataset, tmp_path, capsys, spoil):
    kind, root = dataset
    file, line, fragments, counted = spoil(kind, root)
    status, report, problems = run_check(tmp_path, kind, root)
    assert status == 1 and not report["ok"]
    assert len(problems) == 1, problems.to_string()
    row = problems.iloc[0]
    assert (row["split"], row["file"]) == ("train", str(file))
    assert (None if pd.isna(row["line"]) else int(row["line"])) == line
    assert all(f in row["problem"] for f in fragments), row["problem"]
    assert report["splits"]["train"][counted] == 1
    assert report["splits"]["train"]["ready"] == N_TRAIN - 1 + (spoil is _duplicate_id)  # a duplicate: the first one kept
    assert last_line(capsys) == f"1 problem(s): see {tmp_path / 'run' / 'datacheck.csv'}"


def test_a_csv_header_with_another_landmark_count_is_one_problem_at_line_1(tmp_path):
    root = write_csv_set(tmp_path / "csvdata")
    table = root / "train_senior.csv"
    rows = [line.split(",")[:-2] for line in table.read_text().splitlines()]  # 18 landmarks
    table.write_text("\n".join(",".join(r) for r in rows) + "\n")
    status, report, problems = run_check(tmp_path, "csv", root)
    assert status == 1 and len(problems) == 1  # the training splits' carve meets the same problem: listed once
    assert (problems.iloc[0]["file"], problems.iloc[0]["line"]) == (str(table), 1)
    assert "the header has 18 landmarks" in problems.iloc[0]["problem"]
    assert report["splits"]["train"]["images"] == 0 and report["splits"]["test1"]["ready"] == N_TEST1


def test_the_isbi_doctors_disagreement_is_their_distance_in_mm_with_the_largest_landmarks_and_images(tmp_path):
    root = write_isbi_fixture(tmp_path / "isbi", N_TRAIN, N_TEST1)
    for doctor, point in (("400_senior", "10,10"), ("400_junior", "40,50")):  # 50 px = 5 mm apart at 0.1 mm/px
        ann = root / "AnnotationsByMD" / doctor / "002.txt"
        lines = ann.read_text().splitlines()
        lines[4] = point  # landmark 5, subspinale
        ann.write_text("\n".join(lines) + "\n")
    status, report, _ = run_check(tmp_path, "isbi", root)
    assert status == 0 and report["doctors"] == "senior vs junior"
    train, test1 = report["splits"]["train"]["doctors"], report["splits"]["test1"]["doctors"]
    usual = 0.1 * SQRT2
    assert train["images"] == N_TRAIN
    assert train["mean_mm"] == pytest.approx(((N_TRAIN * K - 1) * usual + 5.0) / (N_TRAIN * K))
    assert train["max_mm"] == pytest.approx(5.0) and train["max_at"] == {"image": "002", "landmark": "subspinale"}
    assert train["largest_landmarks"][0] == {"landmark": "subspinale",
                                             "mean_mm": pytest.approx(((N_TRAIN - 1) * usual + 5.0) / N_TRAIN)}
    assert train["largest_images"][0] == {"image": "002", "mean_mm": pytest.approx(((K - 1) * usual + 5.0) / K),
                                          "max_mm": pytest.approx(5.0)}
    assert (test1["mean_mm"], test1["max_mm"]) == (pytest.approx(usual), pytest.approx(usual))


def test_two_doctors_in_csv_files_are_compared_at_the_configured_spacing(tmp_path, capsys):
    root = write_csv_set(tmp_path / "csvdata")
    status, report, _ = run_check(tmp_path, "csv", root, "data.source.spacing=0.2", "doctors=[doctor1.csv,doctor2.csv]")
    assert status == 0 and report["doctors"] == "doctor1 vs doctor2"
    for split, n in (("train", N_TRAIN), ("test1", N_TEST1)):  # each split compared on its own images
        d = report["splits"][split]["doctors"]
        assert (d["images"], d["mean_mm"], d["max_mm"]) == (n, pytest.approx(0.2 * SQRT2), pytest.approx(0.2 * SQRT2))
    assert "doctors (doctor1 vs doctor2), train, 4 images: mean 0.28 mm" in capsys.readouterr().out
    status, report, _ = run_check(tmp_path, "csv", root)  # without doctors=: nothing to compare
    assert status == 0 and report["doctors"] is None and report["splits"]["train"]["doctors"] is None


def test_disagreement_compares_only_the_images_both_doctors_annotated():
    a = [Record(i, Path(f"{i}.png"), np.zeros((2, 2)), (0.5, 0.5)) for i in ("1", "2")]
    b = [Record("2", Path("2.png"), np.array([[3.0, 4.0], [0.0, 0.0]]), (0.1, 0.1))]  # at the first's spacing: 2.5 mm
    d = disagreement(a, b, ["p", "q"])
    assert (d["images"], d["mean_mm"], d["max_mm"], d["per_landmark_mm"]) == (1, 1.25, 2.5, {"p": 2.5, "q": 0.0})
    assert disagreement(a, b, ["p", "q"], ids={"1"}) is None


def test_training_splits_that_cannot_be_carved_are_a_problem(tmp_path):
    """One CSV read as the split "all" (as hamedan_dev's mean.csv) must also be what training is told to use."""
    root = write_csv_set(tmp_path / "csvdata")
    one = ["data.source.splits=null", "data.source.csv=doctor1.csv"]
    status, report, problems = run_check(tmp_path, "csv", root, *one)
    assert status == 1 and report["splits"]["all"]["ready"] == N_TRAIN + N_TEST1
    assert problems[["split", "file", "problem"]].values.tolist() == [
        ["training", str(root), "unknown split 'train' (configured: all)"]]
    status, report, problems = run_check(tmp_path, "csv", root, *one, "data.train_splits=[all]", "data.test_split=null",
                                         "data.random_split=[0.6,0.2,0.2]")
    assert status == 0 and problems.empty and report["training"] == {"train": 4, "val": 1, "test": 1}


@pytest.mark.slow
def test_python_dash_m_landmark_exp_datacheck_writes_its_files_in_the_run_folder_and_exits_1_on_a_problem(tmp_path):
    root = write_isbi_fixture(tmp_path / "isbi", N_TRAIN, N_TEST1)
    _truncated_image("isbi", root)
    run = subprocess.run([sys.executable, "-m", "landmark_exp.datacheck", "data=isbi2015", f"data.source.root={root}",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "LANDMARK_EXP_ROOT": str(ROOT)}, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == f"1 problem(s): see {tmp_path / 'run' / 'datacheck.csv'}"
    assert len(pd.read_csv(tmp_path / "run" / "datacheck.csv")) == 1
    assert json.loads((tmp_path / "run" / "datacheck.json").read_text())["splits"]["train"]["unreadable"] == 1


def test_image_sizes_are_summarised_by_area_with_the_number_of_distinct_sizes():
    from landmark_exp.datacheck import size_summary

    s = size_summary([(80, 64), (100, 70), (80, 64), (60, 50)])  # (height, width)
    assert (s["min"], s["median"], s["max"], s["distinct"]) == ("50x60", "64x80", "70x100", 3)
    assert s["most_common"]["64x80"] == 2 and size_summary([]) == {}
