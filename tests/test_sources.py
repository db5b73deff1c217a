"""Data sources on disk -> Records: both layouts, every kind of bad input, image reading and the image cache.

Every bad input must give a one-line `DataError` naming the file (and line or CSV
row), or, with on_bad_sample="skip", a warning and an entry in `source.skipped`.
Fixtures are tiny datasets written in tmp_path (80x64 images, 19 landmarks).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, compose, write_isbi_fixture
from hydra.utils import instantiate
from PIL import Image

from landmark_exp.data.datamodule import LandmarkDataModule
from landmark_exp.data.images import ImageCache, read_grey
from landmark_exp.data.records import DataError
from landmark_exp.data.sources import CSVSource, ISBI2015Source, Source, follow_link_stub

H, W, K = 80, 64, 19
N_TRAIN, N_TEST1 = 6, 3
CSV_SPLITS = {"train": "train_senior.csv", "test1": "test1_senior.csv"}


def write_csv_fixture(root: Path, n_train: int = N_TRAIN, n_test1: int = N_TEST1, seed: int = 0) -> Path:
    """The ISBI fixture's images and senior points in the images + CSV layout (rows shuffled, as in cepha400)."""
    isbi = write_isbi_fixture(root / "_isbi", n_train, n_test1, seed=seed)
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, folder in (("train", "TrainingData"), ("test1", "Test1Data")):
        rows = []
        for img in sorted((isbi / "RawImage" / folder).iterdir()):
            shutil.copy(img, root / "images" / img.name)
            pts = np.loadtxt(isbi / "AnnotationsByMD" / "400_senior" / f"{img.stem}.txt", delimiter=",")
            rows.append([img.name, *(str(int(v)) for v in pts.ravel())])
        rng.shuffle(rows)
        header = ["image_path"] + [f"{i}_{a}" for i in range(1, K + 1) for a in "xy"]
        with (root / CSV_SPLITS[split]).open("w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
    shutil.rmtree(isbi)
    return root


@dataclass
class Layout:
    """One on-disk layout of the same tiny dataset, with the edits the bad-input cases make."""

    kind: str
    root: Path

    def source(self, **kwargs) -> Source:
        if self.kind == "isbi":  # the senior doctor, as in the CSV
            return ISBI2015Source(self.root, **{"gt": "senior", **kwargs})
        return CSVSource(self.root, splits=CSV_SPLITS, **kwargs)

    def image(self, image_id: str) -> Path:
        if self.kind == "isbi":
            return self.root / "RawImage" / "TrainingData" / f"{image_id}.png"
        return self.root / "images" / f"{image_id}.png"

    @property
    def csv(self) -> Path:
        return self.root / CSV_SPLITS["train"]

    def annotation(self, image_id: str) -> Path:
        return self.root / "AnnotationsByMD" / "400_senior" / f"{image_id}.txt"

    def line(self, image_id: str) -> int:
        """1-based line of the image's row in the training CSV (header = line 1)."""
        lines = self.csv.read_text().splitlines()
        return next(i for i, s in enumerate(lines, start=1) if s.startswith(f"{image_id}.png,"))

    def where(self, image_id: str, landmark: int) -> str:
        """What the error message must contain to locate landmark `landmark` (1-based) of `image_id`."""
        if self.kind == "isbi":
            return f"{image_id}.txt:{landmark}"
        return f"{CSV_SPLITS['train']}:{self.line(image_id)}"

    def set_value(self, image_id: str, landmark: int, axis: int, text: str) -> None:
        """Overwrite one coordinate (axis 0 = x, 1 = y) of the senior annotation with `text`."""
        if self.kind == "isbi":
            path = self.annotation(image_id)
            lines = path.read_text().splitlines()
            xy = lines[landmark - 1].split(",")
            xy[axis] = text
            lines[landmark - 1] = ",".join(xy)
            path.write_text("\n".join(lines) + "\n")
        else:
            self.edit_row(image_id, lambda row: row.__setitem__(1 + 2 * (landmark - 1) + axis, text))

    def edit_row(self, image_id: str, edit: Callable[[list[str]], None]) -> None:
        lines = self.csv.read_text().splitlines()
        i = self.line(image_id) - 1
        row = lines[i].split(",")
        edit(row)
        lines[i] = ",".join(row)
        self.csv.write_text("\n".join(lines) + "\n")


@pytest.fixture
def csv_root(tmp_path: Path) -> Path:
    return write_csv_fixture(tmp_path / "csvdata")


def make_layout(kind: str, tmp_path: Path) -> Layout:
    if kind == "isbi":
        return Layout("isbi", write_isbi_fixture(tmp_path / "isbi", N_TRAIN, N_TEST1))
    return Layout("csv", write_csv_fixture(tmp_path / "csvdata"))


@pytest.fixture(params=["isbi", "csv"])
def layout(request, tmp_path: Path) -> Layout:
    return make_layout(request.param, tmp_path)


def assert_one_line_naming(error: BaseException | str, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# -- bad samples: one line naming file and line/row, or skipped ------------------------------------------------
# each case edits sample 003 of the training split and returns what the message must contain


def _non_numeric(lay: Layout) -> list[str]:
    lay.set_value("003", 4, 0, "abc")
    return [lay.where("003", 4), "non-numeric", "'abc'"]


def _nan(lay: Layout) -> list[str]:
    lay.set_value("003", 4, 1, "nan")
    return [lay.where("003", 4), "non-finite", "'nan'"]


def _outside_image(lay: Layout) -> list[str]:
    lay.set_value("003", 4, 0, str(W))  # pixel centres run 0..W-1, the image edge is at W-0.5
    return [lay.where("003", 4), "landmark 4 (porion)", f"outside the {W}x{H} image 003.png"]


def _corrupt_image(lay: Layout) -> list[str]:
    lay.image("003").write_bytes(b"this is not an image")
    return ["003.png", "cannot read image"] + ([lay.where("003", 1)] if lay.kind == "csv" else [])


def _image_referenced_by_csv_absent(lay: Layout) -> list[str]:
    lay.image("003").unlink()
    return [lay.where("003", 1), "image '003.png' referenced by the CSV not found"]


def _missing_annotation(lay: Layout) -> list[str]:
    lay.annotation("003").unlink()
    return ["003.txt", "annotation file not found"]


def _fewer_points(lay: Layout) -> list[str]:
    path = lay.annotation("003")
    path.write_text("\n".join(path.read_text().splitlines()[: K - 1]) + "\n")
    return ["003.txt", f"{K - 1} landmark lines, expected {K}"]


def _csv_row_fewer_columns(lay: Layout) -> list[str]:
    lay.edit_row("003", lambda row: row.pop())
    return [lay.where("003", 1), f"{2 * K} fields, expected {2 * K + 1}"]


def _csv_row_more_columns(lay: Layout) -> list[str]:
    lay.edit_row("003", lambda row: row.append("7"))
    return [lay.where("003", 1), f"{2 * K + 2} fields, expected {2 * K + 1}"]


def _duplicate_id(lay: Layout) -> list[str]:
    if lay.kind == "isbi":  # 003.jpg sorts before 003.png: the png is the duplicate
        Image.open(lay.image("003")).save(lay.image("003").with_suffix(".jpg"))
        return ["003.png", "duplicate image id '003'", "003.jpg"]
    first = lay.line("003")
    row = lay.csv.read_text().splitlines()[first - 1]
    with lay.csv.open("a") as fh:
        fh.write(row + "\n")
    return [f"{CSV_SPLITS['train']}:{N_TRAIN + 2}", "duplicate image id '003'", f"(also {CSV_SPLITS['train']}:{first})"]


BOTH, ISBI, CSV = ("isbi", "csv"), ("isbi",), ("csv",)
BAD_SAMPLES = {  # case -> (edit, the layouts it exists in)
    "non_numeric": (_non_numeric, BOTH),
    "nan": (_nan, BOTH),
    "outside_image": (_outside_image, BOTH),
    "corrupt_image": (_corrupt_image, BOTH),
    "duplicate_id": (_duplicate_id, BOTH),
    "missing_annotation": (_missing_annotation, ISBI),
    "fewer_points": (_fewer_points, ISBI),
    "image_referenced_by_csv_absent": (_image_referenced_by_csv_absent, CSV),
    "csv_row_fewer_columns": (_csv_row_fewer_columns, CSV),
    "csv_row_more_columns": (_csv_row_more_columns, CSV),
}
CASES = [pytest.param(kind, case, id=f"{kind}-{case}") for case, (_, kinds) in BAD_SAMPLES.items() for kind in kinds]


@pytest.mark.parametrize("kind,case", CASES)
def test_bad_sample_raises_one_line_data_error_naming_file_and_line(kind: str, case: str, tmp_path: Path) -> None:
    layout = make_layout(kind, tmp_path)
    expected = BAD_SAMPLES[case][0](layout)
    with pytest.raises(DataError) as err:
        layout.source().load("train")
    assert_one_line_naming(err.value, *expected)


@pytest.mark.parametrize("kind,case", CASES)
def test_bad_sample_is_left_out_warned_and_listed_when_skipping(kind: str, case: str, tmp_path: Path) -> None:
    layout = make_layout(kind, tmp_path)
    expected = BAD_SAMPLES[case][0](layout)
    source = layout.source(on_bad_sample="skip")
    with pytest.warns(UserWarning, match="skipping sample"):
        records = source.load("train")
    assert len(source.skipped) == 1
    assert_one_line_naming(source.skipped[0], *expected)
    ids = [r.id for r in records]
    if case == "duplicate_id":  # the first of the two is kept
        assert ids == [f"{i:03d}" for i in range(1, N_TRAIN + 1)]
    else:
        assert ids == [f"{i:03d}" for i in range(1, N_TRAIN + 1) if i != 3]


def test_isbi_lines_after_the_first_k_points_are_ignored(isbi_root: Path) -> None:
    ann = isbi_root / "AnnotationsByMD" / "400_senior" / "002.txt"
    first_k = np.loadtxt(ann, delimiter=",")
    ann.write_text(ann.read_text() + "3\n1,2,3\nnot a point\n")
    rec = next(r for r in ISBI2015Source(isbi_root, gt="senior").load("train") if r.id == "002")
    np.testing.assert_array_equal(rec.landmarks, first_k)


def test_landmark_on_the_last_pixel_centre_is_inside(layout: Layout) -> None:
    layout.set_value("003", 4, 0, str(W - 1))
    layout.set_value("003", 4, 1, "0")
    rec = next(r for r in layout.source().load("train") if r.id == "003")
    np.testing.assert_array_equal(rec.landmarks[3], [W - 1, 0])
    assert rec.size == (H, W)


def test_missing_image_file_fails_at_decode_naming_it(isbi_root: Path) -> None:
    rec = ISBI2015Source(isbi_root).load("train")[0]
    rec.image_path.unlink()
    with pytest.raises(DataError) as err:
        ImageCache((32, 32)).get(rec)
    assert_one_line_naming(err.value, str(rec.image_path), "not found")


def test_corrupt_pixels_behind_a_valid_header_fail_at_decode_naming_the_file(isbi_root: Path) -> None:
    """The source reads headers only, so a truncated file loads; decoding it names the file (in both modes)."""
    source = ISBI2015Source(isbi_root, on_bad_sample="skip")
    rec = source.load("train")[0]
    data = rec.image_path.read_bytes()
    rec.image_path.write_bytes(data[: len(data) // 2])
    assert [r.id for r in source.load("train")][0] == rec.id and not source.skipped
    with pytest.raises(DataError) as err:
        ImageCache((32, 32)).get(rec)
    assert_one_line_naming(err.value, str(rec.image_path), "cannot read image")


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_an_image_that_fails_to_decode_stops_the_run_or_is_left_out_and_listed(isbi_root: Path, mode: str) -> None:
    """on_bad_sample covers decoding too: in skip mode the image leaves its split (nothing else moves) and is
    named in the source's skipped list; in error mode the run stops with one line naming the file."""
    def datamodule() -> LandmarkDataModule:
        return LandmarkDataModule(ISBI2015Source(isbi_root, on_bad_sample=mode), input_size=(32, 32), val_split=None,
                                  val_fraction=0.25, seed=3)

    before = datamodule()
    before.setup()
    bad = before.records["train"][1]
    data = bad.image_path.read_bytes()
    bad.image_path.write_bytes(data[: len(data) // 2])
    dm = datamodule()
    if mode == "error":
        with pytest.raises(DataError) as err:
            dm.setup()
        assert_one_line_naming(err.value, str(bad.image_path), "cannot read image")
        return
    with pytest.warns(UserWarning, match="skipping sample"):
        dm.setup()
    assert [r.id for r in dm.records["train"]] == [r.id for r in before.records["train"] if r.id != bad.id]
    assert [r.id for r in dm.records["val"]] == [r.id for r in before.records["val"]]
    assert len(dm.datasets["train"]) == len(before.datasets["train"]) - 1
    assert len(dm.source.skipped) == 1 and str(bad.image_path) in dm.source.skipped[0]


# -- fatal problems: a whole file or split unusable ------------------------------------------------------------


@pytest.mark.parametrize(
    "header_edit,expected",
    [
        (lambda h: h.replace("image_path", "file"), "no 'image_path' column"),
        (lambda h: h.replace(",5_y", ",5_z"), "missing 5_y"),
        (lambda h: "image_path," + ",".join(f"c{i}" for i in range(2 * K)), "none found"),
    ],
    ids=["no_image_path", "missing_landmark_column", "no_landmark_columns"],
)
def test_csv_without_the_expected_columns_is_fatal_naming_the_header(csv_root: Path, header_edit, expected) -> None:
    path = csv_root / CSV_SPLITS["train"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header_edit(lines[0]), *lines[1:]]) + "\n")
    with pytest.raises(DataError) as err:
        CSVSource(csv_root, splits=CSV_SPLITS, on_bad_sample="skip").load("train")
    assert_one_line_naming(err.value, f"{CSV_SPLITS['train']}:1", expected)


def test_csv_landmark_count_other_than_configured_is_fatal(csv_root: Path) -> None:
    with pytest.raises(DataError) as err:
        CSVSource(csv_root, splits=CSV_SPLITS, num_landmarks=18, on_bad_sample="skip").load("train")
    assert_one_line_naming(err.value, f"{CSV_SPLITS['train']}:1", f"{K} landmarks", "expects 18")


def test_model_with_another_landmark_count_than_the_data_is_refused() -> None:
    from landmark_exp.module import LandmarkModule

    model = {"_target_": "landmark_exp.models.unet.UNet", "out_channels": K, "widths": [4, 8, 8, 8], "bottleneck": 8}
    with pytest.raises(ValueError) as err:
        LandmarkModule(model=model, loss={"_target_": "landmark_exp.losses.DiceLoss"},
                       optimizer={"_target_": "torch.optim.Adam"}, num_landmarks=5)
    assert_one_line_naming(err.value, f"{K} output channels", "5 landmarks")


def test_empty_split_is_fatal_even_when_skipping(layout: Layout) -> None:
    if layout.kind == "isbi":
        for p in (layout.root / "RawImage" / "Test1Data").iterdir():
            p.unlink()
        named = "Test1Data"
    else:
        path = layout.root / CSV_SPLITS["test1"]
        path.write_text(path.read_text().splitlines()[0] + "\n\n")
        named = CSV_SPLITS["test1"]
    with pytest.raises(DataError) as err:
        layout.source(on_bad_sample="skip").load("test1")
    assert_one_line_naming(err.value, named, "split 'test1' has no usable images")


def test_all_samples_bad_in_skip_mode_is_an_empty_split(csv_root: Path) -> None:
    path = csv_root / CSV_SPLITS["test1"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *(s.replace(",", ",x", 1) for s in lines[1:])]) + "\n")
    source = CSVSource(csv_root, splits=CSV_SPLITS, on_bad_sample="skip")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no usable images"):
        source.load("test1")
    assert len(source.skipped) == N_TEST1


# -- splits, ground truth, spacing, paths ------------------------------------------------------------------------


def test_isbi_splits_lists_present_folders_and_missing_test2_is_fatal_only_when_loaded(isbi_root: Path) -> None:
    source = ISBI2015Source(isbi_root)
    assert source.splits() == ["train", "test1"]
    assert len(source.load("train")) == 10 and len(source.load("test1")) == 4
    with pytest.raises(DataError) as err:
        source.load("test2")
    assert_one_line_naming(err.value, "Test2Data", "not found")
    with pytest.raises(DataError, match="unknown split 'val'"):
        source.load("val")


def test_csv_splits_lists_present_files_and_a_missing_one_is_fatal_only_when_loaded(csv_root: Path) -> None:
    source = CSVSource(csv_root, splits={**CSV_SPLITS, "test2": "test2_senior.csv"})
    assert source.splits() == ["train", "test1"]
    assert len(source.load("train")) == N_TRAIN and len(source.load("test1")) == N_TEST1
    with pytest.raises(DataError) as err:
        source.load("test2")
    assert_one_line_naming(err.value, "test2_senior.csv", "not found")


def test_csv_source_needs_exactly_one_of_splits_and_csv(csv_root: Path) -> None:
    with pytest.raises(ValueError, match="not both or neither"):
        CSVSource(csv_root)
    with pytest.raises(ValueError, match="not both or neither"):
        CSVSource(csv_root, splits=CSV_SPLITS, csv="train_senior.csv")


def test_single_csv_is_split_all_and_random_split_divides_it(csv_root: Path) -> None:
    source = CSVSource(csv_root, csv=CSV_SPLITS["train"])
    assert source.splits() == ["all"]
    dm = LandmarkDataModule(source, input_size=(16, 16), train_splits=["all"], test_split=None,
                            random_split=[3, 2, 1])
    dm.setup()
    ids = {name: {r.id for r in recs} for name, recs in dm.records.items()}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [3, 2, 1]  # fractions of the 6 rows
    assert set().union(*ids.values()) == {f"{i:03d}" for i in range(1, N_TRAIN + 1)}


def test_records_carry_the_csv_as_annotation_path_sorted_by_id(csv_root: Path) -> None:
    records = CSVSource(csv_root, splits=CSV_SPLITS).load("train")
    assert [r.id for r in records] == sorted(r.id for r in records)
    assert {r.annotation_path for r in records} == {csv_root / CSV_SPLITS["train"]}


def test_both_layouts_of_one_dataset_give_the_same_records(tmp_path: Path) -> None:
    isbi = ISBI2015Source(write_isbi_fixture(tmp_path / "isbi", N_TRAIN, N_TEST1), gt="senior").load("test1")
    table = CSVSource(write_csv_fixture(tmp_path / "csvdata"), splits=CSV_SPLITS).load("test1")
    assert [r.id for r in isbi] == [r.id for r in table]
    for a, b in zip(isbi, table, strict=True):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        assert a.size == b.size == (H, W) and a.spacing == b.spacing


def test_ground_truth_is_senior_junior_or_their_mean(isbi_root: Path) -> None:
    def points(doctor: str) -> np.ndarray:
        return np.loadtxt(isbi_root / "AnnotationsByMD" / f"400_{doctor}" / "001.txt", delimiter=",")

    got = {gt: ISBI2015Source(isbi_root, gt=gt).load("train")[0].landmarks for gt in ("senior", "junior", "mean")}
    assert not np.array_equal(points("senior"), points("junior"))
    np.testing.assert_array_equal(got["senior"], points("senior"))
    np.testing.assert_array_equal(got["junior"], points("junior"))
    np.testing.assert_allclose(got["mean"], (points("senior") + points("junior")) / 2)


@pytest.mark.parametrize("spacing,expected", [(0.25, (0.25, 0.25)), ((0.1, 0.2), (0.1, 0.2))])
def test_global_spacing_applies_to_every_record(layout: Layout, spacing, expected) -> None:
    assert {r.spacing for r in layout.source(spacing=spacing).load("train")} == {expected}


def _add_spacing_column(csv_path: Path, value: Callable[[str], str]) -> None:
    lines = csv_path.read_text().splitlines()
    out = [lines[0] + ",mm_per_px"] + [s + "," + value(s.split(",")[0]) for s in lines[1:]]
    csv_path.write_text("\n".join(out) + "\n")


def test_per_row_spacing_column_overrides_the_global_spacing(csv_root: Path) -> None:
    _add_spacing_column(csv_root / CSV_SPLITS["train"], lambda name: f"0.{name[:3]}")  # 003.png -> 0.003
    records = CSVSource(csv_root, splits=CSV_SPLITS, spacing=0.5, spacing_column="mm_per_px").load("train")
    assert {r.id: r.spacing for r in records} == {f"{i:03d}": (i / 1000, i / 1000) for i in range(1, N_TRAIN + 1)}


def test_non_positive_per_row_spacing_names_the_row(csv_root: Path) -> None:
    _add_spacing_column(csv_root / CSV_SPLITS["train"], lambda name: "0" if name == "003.png" else "0.1")
    line = Layout("csv", csv_root).line("003")
    with pytest.raises(DataError) as err:
        CSVSource(csv_root, splits=CSV_SPLITS, spacing_column="mm_per_px").load("train")
    assert_one_line_naming(err.value, f"{CSV_SPLITS['train']}:{line}", "spacing 'mm_per_px' must be positive")


def test_missing_spacing_column_is_fatal_naming_the_header(csv_root: Path) -> None:
    with pytest.raises(DataError) as err:
        CSVSource(csv_root, splits=CSV_SPLITS, spacing_column="mm_per_px").load("train")
    assert_one_line_naming(err.value, f"{CSV_SPLITS['train']}:1", "no spacing column 'mm_per_px'")


def test_a_spacing_column_the_configuration_does_not_read_is_refused_not_ignored(csv_root: Path) -> None:
    path = csv_root / CSV_SPLITS["train"]
    _add_spacing_column(path, lambda name: "0.2")
    path.write_text(path.read_text().replace(",mm_per_px", ",spacing"))
    with pytest.raises(DataError) as err:
        CSVSource(csv_root, splits=CSV_SPLITS, spacing=0.1).load("train")
    assert_one_line_naming(err.value, f"{CSV_SPLITS['train']}:1", "data.source.spacing_column=spacing uses it")
    records = CSVSource(csv_root, splits=CSV_SPLITS, spacing=0.1, spacing_column="spacing").load("train")
    assert {r.spacing for r in records} == {(0.2, 0.2)}


def test_csv_image_path_may_be_relative_to_image_dir_or_root_or_absolute(csv_root: Path) -> None:
    lay = Layout("csv", csv_root)
    lay.edit_row("001", lambda row: row.__setitem__(0, "images/001.png"))
    lay.edit_row("002", lambda row: row.__setitem__(0, str(csv_root / "images" / "002.png")))
    records = {r.id: r for r in CSVSource(csv_root, splits=CSV_SPLITS).load("train")}
    for image_id in ("001", "002", "003"):
        assert records[image_id].image_path.samefile(csv_root / "images" / f"{image_id}.png")


def test_symlink_stored_as_a_text_file_is_followed_to_its_image(csv_root: Path) -> None:
    """git without symlink support writes a link as a file holding its target (the shared cepha400 images)."""
    real = csv_root / "elsewhere" / "003.png"
    real.parent.mkdir()
    shutil.move(csv_root / "images" / "003.png", real)
    (csv_root / "images" / "003.png").write_text("../elsewhere/003.png")
    rec = next(r for r in CSVSource(csv_root, splits=CSV_SPLITS).load("train") if r.id == "003")
    assert rec.image_path.samefile(real) and rec.size == (H, W)
    assert ImageCache((16, 16)).get(rec)[1] == (H, W)


def test_link_stub_reached_through_a_real_symlink_resolves_from_the_stubs_folder(csv_root: Path, tmp_path: Path) -> None:
    real = csv_root / "images" / "003.png"
    stub = csv_root / "stubs" / "003.png"
    stub.parent.mkdir()
    stub.write_text("../images/003.png")
    link = tmp_path / "links" / "003.png"
    link.parent.mkdir()
    link.symlink_to(stub)
    assert follow_link_stub(link).samefile(real)


def test_text_file_naming_no_image_is_not_a_link(tmp_path: Path) -> None:
    stub = tmp_path / "003.png"
    stub.write_text("../nowhere/003.png")
    assert follow_link_stub(stub) == stub
    real = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(real)
    assert follow_link_stub(real) == real


@pytest.mark.parametrize("ext", [".bmp", ".jpg", ".png"])
def test_any_image_extension_loads_and_decodes(tmp_path: Path, ext: str) -> None:
    root = write_isbi_fixture(tmp_path / "isbi", n_train=3, n_test1=1, ext=ext)
    records = ISBI2015Source(root).load("train")
    assert [r.image_path.suffix for r in records] == [ext] * 3
    image, orig_hw = ImageCache((32, 24)).get(records[0])
    assert image.shape == (32, 24) and orig_hw == (H, W)


# -- reading images ----------------------------------------------------------------------------------------------


def test_grey_storage_variants_read_to_the_same_normalised_values(tmp_path: Path) -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey).save(tmp_path / "l8.png")
    Image.fromarray(grey).save(tmp_path / "l8.bmp")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "l16.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    palette = Image.fromarray(grey, mode="P")
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    palette.save(tmp_path / "palette.png")
    modes = {name: Image.open(tmp_path / name).mode for name in ("l16.png", "rgb.png", "palette.png")}
    assert modes == {"l16.png": "I;16", "rgb.png": "RGB", "palette.png": "P"}
    expected = grey.astype(np.float32) / 255.0
    for name in ("l8.png", "l8.bmp", "l16.png", "rgb.png", "palette.png"):
        got = read_grey(tmp_path / name)
        assert got.dtype == np.float32 and got.shape == (16, 16), name
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=name)


# -- the image cache -------------------------------------------------------------------------------------------


@pytest.fixture
def record(isbi_root: Path):
    return ISBI2015Source(isbi_root).load("train")[0]


def test_cache_second_access_does_not_decode_again(record) -> None:
    cache = ImageCache((32, 32))
    first = cache.get(record)
    second = cache.get(record)
    assert cache.decoded == 1 and second[0] is first[0]


def test_cache_changed_file_is_decoded_again(record, tmp_path: Path) -> None:
    cache = ImageCache((32, 32), cache_dir=tmp_path / "cache")
    before = cache.get(record)[0].astype(np.float32)
    inverted = 255 - np.asarray(Image.open(record.image_path))
    Image.fromarray(inverted).save(record.image_path)
    st = record.image_path.stat()
    os.utime(record.image_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = cache.get(record)[0].astype(np.float32)
    assert cache.decoded == 2
    np.testing.assert_allclose(after, 1 - before, atol=2e-3)
    fresh = ImageCache((32, 32), cache_dir=tmp_path / "cache")  # the stale disk entry is not used either
    np.testing.assert_array_equal(fresh.get(record)[0], after.astype(np.float16))
    assert fresh.decoded == 0


def test_cache_changed_input_size_is_decoded_again(record, tmp_path: Path) -> None:
    ImageCache((32, 32), cache_dir=tmp_path / "cache").get(record)
    other = ImageCache((48, 40), cache_dir=tmp_path / "cache")
    image, _ = other.get(record)
    assert other.decoded == 1 and image.shape == (48, 40)


def test_disk_cache_survives_a_new_cache_instance(record, tmp_path: Path) -> None:
    first = ImageCache((32, 32), cache_dir=tmp_path / "cache")
    image, hw = first.get(record)
    second = ImageCache((32, 32), cache_dir=tmp_path / "cache")
    again, hw_again = second.get(record)
    assert first.decoded == 1 and second.decoded == 0
    np.testing.assert_array_equal(again, image)
    assert hw_again == hw == (H, W)


# -- the config --------------------------------------------------------------------------------------------------


def test_csv_data_config_builds_batches_from_a_csv_folder(csv_root: Path, tmp_path: Path) -> None:
    cfg = compose("train", ["data=csv", f"data.source.root={csv_root}", f"paths.cache_dir={tmp_path}/cache", *TINY],
                  tmp_path / "run")
    dm: LandmarkDataModule = instantiate(cfg.data)
    dm.setup("fit")
    assert isinstance(dm.source, CSVSource)
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 5, "val": 1, "test": N_TEST1}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["landmarks"].shape == (4, K, 2)
    assert batch["landmarks"].dtype == torch.float64


def test_same_files_pairs_byte_identical_files_only(tmp_path: Path) -> None:
    from landmark_exp.data.images import same_files

    for name, data in (("a", b"xray-1"), ("b", b"xray-2"), ("c", b"xray-1"), ("d", b"xray-9"), ("e", b"longer xray")):
        (tmp_path / name).write_bytes(data)
    # b and d have a's size but other bytes; a missing file is no match
    assert same_files([tmp_path / n for n in ("a", "b", "e", "gone")], [tmp_path / n for n in ("d", "c", "a")]) == [(0, 1), (0, 2)]


def test_a_test_image_that_is_a_training_image_is_named_and_scored_without(tmp_path: Path, tiny_run: dict) -> None:
    """ISBI 2015 ships two Test1 images that are training images (283 = 038, 173 = 144): a report says so."""
    from landmark_exp.evaluation import evaluate

    root = tmp_path / "isbi"
    shutil.copytree(tiny_run["root"], root)
    dm = LandmarkDataModule(ISBI2015Source(root), input_size=(16, 16), seed=42)  # tiny_run's data seed
    dm.setup()
    trained = dm.records["train"][0]
    shutil.copy(trained.image_path, root / "RawImage" / "Test1Data" / "012.png")  # its annotations stay 012's
    assert dm.same_images_as_training("test") == [("012", trained.id)] and dm.same_images_as_training("train") == []
    evaluate(compose("evaluate", [f"ckpt_path={tiny_run['ckpt']}", "device=cpu", "overlays=0",
                                  f"data_root={root}"], tmp_path / "ev"))
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["same_image_in_training"] == [{"id": "012", "training_id": trained.id}]
    errors = pd.read_csv(tmp_path / "ev" / "predictions.csv", dtype={"image_id": str})
    assert metrics["mre_without_same_images"] == pytest.approx(errors[errors.image_id != "012"].error_mm.mean(), abs=1e-5)
