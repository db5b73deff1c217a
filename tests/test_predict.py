"""predict: every input format, spacing sources and fallbacks, a corrupt file among good ones, agreement with evaluate."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import compose, write_dicom
from PIL import Image

from landmark_exp.cephalometry import NAMES
from landmark_exp.data.records import DataError
from landmark_exp.inputs import SpacingWarning, collect_inputs, image_spacing
from landmark_exp.predict import predict


def _fixture_image(tiny_run, i: int = 11) -> np.ndarray:
    return np.asarray(Image.open(tiny_run["root"] / "RawImage" / "Test1Data" / f"{i:03d}.png"))


@pytest.fixture
def mixed_folder(tmp_path, tiny_run):
    """The same fixture X-ray as 8-bit PNG, 16-bit PNG, BMP, TIFF, JPEG, DICOM (MONOCHROME1 16-bit, with and
    without spacing, one without extension), plus a corrupt PNG and a text file that is not an image."""
    img = _fixture_image(tiny_run)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(img).save(d / "a_png8.png")
    Image.fromarray(img.astype(np.uint16) * 257).save(d / "b_png16.png")
    Image.fromarray(img).save(d / "c_bmp.bmp")
    Image.fromarray(img).save(d / "d_tiff.tif")
    Image.fromarray(img).save(d / "e_jpeg.jpg", quality=95)
    write_dicom(d / "f_dicom.dcm", 65535 - img.astype(np.uint16) * 257, "MONOCHROME1", pixel_spacing=(0.2, 0.2))
    write_dicom(d / "g_dicom_nospacing", img.astype(np.uint16) * 257)
    (d / "h_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (d / "notes.txt").write_text("not an image")
    return d


def _run(tmp_path, ckpt, inputs, *extra):
    cfg = compose("predict", [f"ckpt_path={ckpt}", f"input={inputs}", "device=cpu", *extra], tmp_path / "out")
    return predict(cfg), tmp_path / "out"


def test_folder_of_every_format_with_a_corrupt_file(tmp_path, tiny_run, mixed_folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, out = _run(tmp_path, tiny_run["ckpt"], mixed_folder)
    assert result == {"n_images": 7, "n_failed": 1, "out_dir": str(out)}
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["file"]) == [str(mixed_folder / "h_corrupt.png")] and "cannot read image" in failures["reason"][0]
    spacing_warnings = [w for w in caught if issubclass(w.category, SpacingWarning)]
    assert len(spacing_warnings) == 1 and "g_dicom_nospacing" in str(spacing_warnings[0].message)

    ids = ["a_png8", "b_png16", "c_bmp", "d_tiff", "e_jpeg", "f_dicom", "g_dicom_nospacing"]
    frames = {i: pd.read_csv(out / f"{i}.csv") for i in ids}
    for i in ids:
        assert (out / f"{i}.json").is_file() and (out / f"{i}_overlay.jpg").is_file()
        assert list(frames[i].columns) == ["landmark", "name", "x_px", "y_px", "x_mm", "y_mm", "confidence", "spread_mm", "reliability", "flag"]
    # identical pixels in every lossless format, DICOM included: identical landmarks
    for i in ["b_png16", "c_bmp", "d_tiff", "f_dicom", "g_dicom_nospacing"]:
        np.testing.assert_allclose(frames[i][["x_px", "y_px"]], frames["a_png8"][["x_px", "y_px"]], atol=1e-4)
    # millimetres follow each file's spacing: DICOM's own 0.2, else the checkpoint's 0.1
    np.testing.assert_allclose(frames["f_dicom"]["x_mm"], frames["f_dicom"]["x_px"] * 0.2, rtol=1e-5)  # CSV: 6 digits
    np.testing.assert_allclose(frames["a_png8"]["y_mm"], frames["a_png8"]["y_px"] * 0.1, rtol=1e-5)
    record = json.loads((out / "f_dicom.json").read_text())
    assert record["spacing_source"] == "dicom:PixelSpacing" and record["spacing_mm"] == [0.2, 0.2]
    assert json.loads((out / "g_dicom_nospacing.json").read_text())["spacing_source"].startswith("fallback")
    assert set(record["measurements"]) == set(NAMES)
    assert {"value", "unit", "class", "label"} <= set(record["measurements"]["ANB"])
    assert len(record["landmarks"]) == 19 and record["landmarks"][0]["name"] == "sella"
    assert (frames["a_png8"]["confidence"].between(0, 1)).all() and (frames["a_png8"]["spread_mm"] > 0).all()
    summary = pd.read_csv(out / "predictions.csv")
    assert len(summary) == 7 * 19 and len(pd.read_csv(out / "measurements.csv")) == 7
    overlay = np.asarray(Image.open(out / "a_png8_overlay.jpg"))
    assert overlay.shape == (*_fixture_image(tiny_run).shape, 3)
    assert ((overlay[..., 0] > 200) & (overlay[..., 1] < 60)).any()  # red crosses drawn
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_configured_spacing_overrides_the_checkpoints_for_files_without_their_own(tmp_path, tiny_run, mixed_folder):
    _, out = _run(tmp_path, tiny_run["ckpt"], f"[{mixed_folder / 'a_png8.png'},{mixed_folder / 'f_dicom.dcm'}]",
                  "spacing=[0.25,0.5]")
    png = pd.read_csv(out / "a_png8.csv")
    np.testing.assert_allclose(png["x_mm"], png["x_px"] * 0.25, rtol=1e-5)
    np.testing.assert_allclose(png["y_mm"], png["y_px"] * 0.5, rtol=1e-5)
    dcm = pd.read_csv(out / "f_dicom.csv")  # a DICOM's own spacing still wins
    np.testing.assert_allclose(dcm["y_mm"], dcm["y_px"] * 0.2, rtol=1e-5)


def test_spacing_sources(tmp_path):
    img = np.zeros((8, 8), dtype=np.uint16)
    Image.fromarray(img.astype(np.uint8)).save(tmp_path / "a.png")
    assert image_spacing(tmp_path / "a.png", (0.1, 0.1)) == ((0.1, 0.1), "config")
    with pytest.raises(DataError, match="set spacing="):
        image_spacing(tmp_path / "a.png", None)
    p = write_dicom(tmp_path / "imager.dcm", img, imager_spacing=(0.14, 0.14))
    assert image_spacing(p, (0.1, 0.1)) == ((0.14, 0.14), "dicom:ImagerPixelSpacing")
    p = write_dicom(tmp_path / "none.dcm", img)
    with pytest.warns(SpacingWarning, match="none.dcm"):
        assert image_spacing(p, (0.3, 0.3))[0] == (0.3, 0.3)


def test_inputs_as_file_folder_glob_and_list(tmp_path, mixed_folder):
    assert collect_inputs(str(mixed_folder / "notes.txt")) == [mixed_folder / "notes.txt"]  # named explicitly: tried
    folder = collect_inputs(str(mixed_folder))
    assert [p.name for p in folder][-1] == "h_corrupt.png" and "notes.txt" not in [p.name for p in folder]
    assert "g_dicom_nospacing" in [p.name for p in folder]  # no extension, DICOM magic
    assert [p.name for p in collect_inputs(str(mixed_folder / "*.png"))] == ["a_png8.png", "b_png16.png", "h_corrupt.png"]
    both = collect_inputs([str(mixed_folder / "a_png8.png"), str(mixed_folder / "a_png8.png"), str(mixed_folder / "c_bmp.bmp")])
    assert [p.name for p in both] == ["a_png8.png", "c_bmp.bmp"]
    with pytest.raises(DataError, match="no such file or folder"):
        collect_inputs(str(tmp_path / "missing.png"))
    with pytest.raises(DataError, match="matches no image"):
        collect_inputs(str(tmp_path / "*.dcm"))


def test_all_inputs_unreadable_is_a_one_line_error(tmp_path, tiny_run, capsys):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(SystemExit):
        _run(tmp_path, tiny_run["ckpt"], tmp_path / "bad.png")
    out = capsys.readouterr().out
    assert "data error:" in out and "none of the 1 input file(s) could be read" in out


def _predict_matches_evaluate(tmp_path, tiny_run, evaluated, *overrides):
    """predict.py on the evaluated images gives the landmarks evaluate.py scored (the same overrides); its output dir."""
    _, out = _run(tmp_path, tiny_run["ckpt"], tiny_run["root"] / "RawImage" / "Test1Data", "overlay=false", "runtime=tuned",
                  *overrides)
    pr = pd.read_csv(out / "predictions.csv", dtype={"image_id": str})
    merged = evaluated.merge(pr, on=["image_id", "landmark"])
    assert len(merged) == 4 * 19
    np.testing.assert_allclose(merged[["pred_x_px", "pred_y_px"]].to_numpy(), merged[["x_px", "y_px"]].to_numpy(), atol=1e-6)
    return out


def _eval_predictions(tiny_run, out, *overrides):
    from landmark_exp.evaluation import evaluate

    evaluate(compose("evaluate", [f"ckpt_path={tiny_run['ckpt']}", "device=cpu", "overlays=0", *overrides], out))
    ev = pd.read_csv(out / "predictions.csv")
    ev["image_id"] = ev["image_id"].astype(str).str.zfill(3)
    return ev.sort_values(["image_id", "landmark"]).reset_index(drop=True)


def test_predict_gives_the_landmarks_evaluate_scores(tmp_path, tiny_run):
    ev = _eval_predictions(tiny_run, tmp_path / "eval")
    _, out = _run(tmp_path, tiny_run["ckpt"], tiny_run["root"] / "RawImage" / "Test1Data", "overlay=false",
                  "runtime=tuned")  # evaluate runs the tuned graph: the same runtime gives the same landmarks
    pr = pd.read_csv(out / "predictions.csv", dtype={"image_id": str})
    merged = ev.merge(pr, on=["image_id", "landmark"])
    assert len(merged) == 4 * 19
    np.testing.assert_allclose(merged["x_px"], merged["pred_x_px"], atol=1e-6)
    np.testing.assert_allclose(merged["y_px"], merged["pred_y_px"], atol=1e-6)
    np.testing.assert_allclose(merged["confidence_x"], merged["confidence_y"], atol=1e-6)  # evaluate's vs predict's


def test_coarse_to_fine_predict_gives_the_landmarks_evaluate_scores(tmp_path, tiny_run, tiny_refine):
    ev = _eval_predictions(tiny_run, tmp_path / "eval", f"refine_ckpt={tiny_refine}", "refine_iterations=2")
    out = _predict_matches_evaluate(tmp_path, tiny_run, ev, f"refine_ckpt={tiny_refine}", "refine_iterations=2")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["refine_model"] == str(tiny_refine) and summary["refine_iterations"] == 2


def test_a_second_stage_model_alone_is_refused(tmp_path, tiny_refine, capsys):
    Image.fromarray(np.zeros((80, 64), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit):
        _run(tmp_path, tiny_refine, tmp_path / "a.png")
    assert "second-stage (patch) model" in capsys.readouterr().out


def test_refine_landmarks_keeps_the_first_estimate_of_the_others_in_evaluate_and_predict(tmp_path, tiny_run, tiny_refine):
    first = _eval_predictions(tiny_run, tmp_path / "first")
    full = _eval_predictions(tiny_run, tmp_path / "full", f"refine_ckpt={tiny_refine}")
    some = _eval_predictions(tiny_run, tmp_path / "some", f"refine_ckpt={tiny_refine}", "refine_landmarks=[sella,10]")
    refined = some["landmark"].isin([1, 10])
    assert refined.sum() == 2 * 4
    xy = ["pred_x_px", "pred_y_px"]
    np.testing.assert_allclose(some.loc[~refined, xy], first.loc[~refined, xy], atol=1e-9)
    np.testing.assert_allclose(some.loc[refined, xy], full.loc[refined, xy], atol=1e-9)
    assert not np.allclose(full.loc[~refined, xy], first.loc[~refined, xy])  # refining did move the others
    per = {p["name"]: p["mre"] for p in json.loads((tmp_path / "some" / "metrics.json").read_text())["per_landmark"]}
    per_first = {p["name"]: p["mre"] for p in json.loads((tmp_path / "first" / "metrics.json").read_text())["per_landmark"]}
    assert per["nasion"] == pytest.approx(per_first["nasion"]) and per["sella"] != pytest.approx(per_first["sella"])
    _predict_matches_evaluate(tmp_path, tiny_run, some, f"refine_ckpt={tiny_refine}", "refine_landmarks=[1,gonion]")


def test_refine_shifts_average_one_pass_per_shift_in_evaluate_and_predict_alike(tmp_path, tiny_run, tiny_refine):
    xy = ["pred_x_px", "pred_y_px"]
    plain = _eval_predictions(tiny_run, tmp_path / "plain", f"refine_ckpt={tiny_refine}")
    centred = _eval_predictions(tiny_run, tmp_path / "c", f"refine_ckpt={tiny_refine}", "refine_shifts=[[0,0]]")
    np.testing.assert_allclose(centred[xy], plain[xy], atol=1e-9)
    shifts = [[0, 0], [0, 3], [-2, 0]]
    single = [_eval_predictions(tiny_run, tmp_path / f"s{i}", f"refine_ckpt={tiny_refine}", f"refine_shifts=[{s}]")
              for i, s in enumerate(shifts)]
    assert not np.allclose(single[1][xy], single[0][xy])  # a shifted patch sees the landmark elsewhere
    every = _eval_predictions(tiny_run, tmp_path / "all", f"refine_ckpt={tiny_refine}", f"refine_shifts={shifts}")
    np.testing.assert_allclose(every[xy], np.mean([s[xy].to_numpy() for s in single], axis=0), atol=1e-4)  # csv: 4 decimals
    mre = json.loads((tmp_path / "all" / "metrics.json").read_text())["mre"]  # the report scores the mean
    assert mre == pytest.approx(every["error_mm"].mean(), abs=1e-5)
    out = _predict_matches_evaluate(tmp_path, tiny_run, every, f"refine_ckpt={tiny_refine}", f"refine_shifts={shifts}")
    assert json.loads((out / "summary.json").read_text())["refine_shifts"] == [[float(a), float(b)] for a, b in shifts]


def test_refine_views_average_turned_patches_in_evaluate_and_predict_alike(tmp_path, tiny_run, tiny_refine):
    import torch

    xy = ["pred_x_px", "pred_y_px"]
    plain = _eval_predictions(tiny_run, tmp_path / "plain", f"refine_ckpt={tiny_refine}")
    same = _eval_predictions(tiny_run, tmp_path / "same", f"refine_ckpt={tiny_refine}", "refine_views=[[0,1]]")
    np.testing.assert_allclose(same[xy], plain[xy], atol=1e-9)
    turned = _eval_predictions(tiny_run, tmp_path / "t", f"refine_ckpt={tiny_refine}", "refine_views=[[10,1.1]]")
    assert not np.allclose(turned[xy], plain[xy])  # a turned patch looks again, differently
    assert abs(turned["error_mm"].mean() - plain["error_mm"].mean()) < 0.5 * plain["error_mm"].mean()  # mapped back
    views, shifts = [[0, 1], [10, 1.1]], [[0, 0], [0, 3]]
    single = [_eval_predictions(tiny_run, tmp_path / f"v{i}{k}", f"refine_ckpt={tiny_refine}", f"refine_views=[{v}]",
                                f"refine_shifts=[{s}]") for i, v in enumerate(views) for k, s in enumerate(shifts)]
    every = _eval_predictions(tiny_run, tmp_path / "all", f"refine_ckpt={tiny_refine}", f"refine_views={views}",
                              f"refine_shifts={shifts}")
    np.testing.assert_allclose(every[xy], np.mean([s[xy].to_numpy() for s in single], axis=0), atol=1e-4)
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["refine_views"] == views
    # stored with the second stage (data.patch.views), applied unless told otherwise, in predict.py alike
    ckpt = torch.load(tiny_refine, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["data"]["patch"].update(views=views, shifts=shifts)
    stored = tmp_path / "stored.ckpt"
    torch.save(ckpt, stored)
    own = _eval_predictions(tiny_run, tmp_path / "own", f"refine_ckpt={stored}")
    np.testing.assert_allclose(own[xy], every[xy], atol=1e-9)
    out = _predict_matches_evaluate(tmp_path, tiny_run, own, f"refine_ckpt={stored}")
    assert json.loads((out / "summary.json").read_text())["refine_views"] == [[float(a), float(b)] for a, b in views]


def test_a_second_stage_applies_its_own_stored_shifts_unless_told_otherwise(tmp_path, tiny_run, tiny_refine, capsys):
    import torch

    ckpt = torch.load(tiny_refine, map_location="cpu", weights_only=True)
    shifts = [[0, 0], [0, 3], [-2, 0]]
    ckpt["hyper_parameters"]["data"]["patch"]["shifts"] = shifts  # as data.patch.shifts in its training config
    stored = tmp_path / "stored.ckpt"
    torch.save(ckpt, stored)
    xy = ["pred_x_px", "pred_y_px"]
    told = _eval_predictions(tiny_run, tmp_path / "told", f"refine_ckpt={tiny_refine}", f"refine_shifts={shifts}")
    own = _eval_predictions(tiny_run, tmp_path / "own", f"refine_ckpt={stored}")
    np.testing.assert_allclose(own[xy], told[xy], atol=1e-9)
    assert json.loads((tmp_path / "own" / "metrics.json").read_text())["refine_shifts"] == shifts
    off = _eval_predictions(tiny_run, tmp_path / "off", f"refine_ckpt={stored}", "refine_shifts=[[0,0]]")
    plain = _eval_predictions(tiny_run, tmp_path / "plain", f"refine_ckpt={tiny_refine}")
    np.testing.assert_allclose(off[xy], plain[xy], atol=1e-9)
    _predict_matches_evaluate(tmp_path, tiny_run, own, f"refine_ckpt={stored}")
    with pytest.raises(SystemExit):
        _eval_predictions(tiny_run, tmp_path / "bad", f"refine_ckpt={stored}", "refine_shifts=[1,2]")
    said = capsys.readouterr().out
    assert "refine_shifts must be a list of (dy, dx) pairs in working pixels, e.g. [[0,0],[0,8]], got [1, 2]" in said


def test_refine_blend_moves_refined_estimates_back_towards_the_first_in_evaluate_and_predict(tmp_path, tiny_run, tiny_refine,
                                                                                           capsys):
    import torch

    xy = ["pred_x_px", "pred_y_px"]
    first = _eval_predictions(tiny_run, tmp_path / "first")
    full = _eval_predictions(tiny_run, tmp_path / "full", f"refine_ckpt={tiny_refine}")
    quarter = _eval_predictions(tiny_run, tmp_path / "q", f"refine_ckpt={tiny_refine}", "refine_blend=0.25",
                                "refine_landmarks=[1,2,3]")
    refined = quarter["landmark"].isin([1, 2, 3])
    np.testing.assert_allclose(quarter.loc[refined, xy], 0.75 * full.loc[refined, xy] + 0.25 * first.loc[refined, xy],
                               atol=2e-3)  # csv rounding
    np.testing.assert_allclose(quarter.loc[~refined, xy], first.loc[~refined, xy], atol=1e-9)
    metrics = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert metrics["refine_blend"] == 0.25 and metrics["mre"] == pytest.approx(quarter["error_mm"].mean(), abs=1e-5)
    # stored with the second stage (data.patch.blend), applied unless told otherwise, in predict.py too
    ckpt = torch.load(tiny_refine, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["data"]["patch"]["blend"] = 0.25
    stored = tmp_path / "stored.ckpt"
    torch.save(ckpt, stored)
    own = _eval_predictions(tiny_run, tmp_path / "own", f"refine_ckpt={stored}", "refine_landmarks=[1,2,3]")
    np.testing.assert_allclose(own[xy], quarter[xy], atol=1e-9)
    off = _eval_predictions(tiny_run, tmp_path / "off", f"refine_ckpt={stored}", "refine_blend=0")
    np.testing.assert_allclose(off[xy], full[xy], atol=1e-9)
    out = _predict_matches_evaluate(tmp_path, tiny_run, own, f"refine_ckpt={stored}", "refine_landmarks=[1,2,3]")
    assert json.loads((out / "summary.json").read_text())["refine_blend"] == 0.25
    with pytest.raises(SystemExit):
        _eval_predictions(tiny_run, tmp_path / "bad", f"refine_ckpt={tiny_refine}", "refine_blend=1.5")
    assert "refine_blend must be a number from 0 (second stage alone) to 1 (first stage alone), got 1.5" in capsys.readouterr().out


def test_refine_landmarks_takes_numbers_and_names_and_refuses_others_in_one_line():
    from landmark_exp.cascade import refine_selection

    names = ["sella", "nasion", "gonion"]
    assert refine_selection(None, names).all()
    assert refine_selection([1, "Gonion"], names).tolist() == [True, False, True]
    assert refine_selection(2, names).tolist() == [False, True, False]
    with pytest.raises(DataError, match=r"refine_landmarks: 'pogonion' is neither a landmark number 1-3 nor one of"):
        refine_selection(["pogonion"], names)
    with pytest.raises(DataError, match="refine_landmarks: 4 is neither"):
        refine_selection([4], names)


def test_a_decoding_override_gives_the_same_landmarks_in_predict_as_in_evaluate(tmp_path, tiny_run):
    ev = _eval_predictions(tiny_run, tmp_path / "ev", "heatmap.decoder=argmax")
    default = _eval_predictions(tiny_run, tmp_path / "default")
    xy = ["pred_x_px", "pred_y_px"]
    assert not np.allclose(ev[xy], default[xy])
    for runtime in ("tuned", "onnxruntime"):
        _, out = _run(tmp_path / runtime, tiny_run["ckpt"], tiny_run["root"] / "RawImage" / "Test1Data", "overlay=false",
                      "heatmap.decoder=argmax", f"runtime={runtime}")
        merged = ev.merge(pd.read_csv(out / "predictions.csv", dtype={"image_id": str}), on=["image_id", "landmark"])
        assert len(merged) == 4 * 19
        np.testing.assert_allclose(merged[xy].to_numpy(), merged[["x_px", "y_px"]].to_numpy(), atol=1e-6)


def test_a_second_stage_with_a_context_channel_predicts_what_evaluate_scores(tmp_path, tiny_run, tiny_context_refine):
    from landmark_exp.loading import load_module

    fine = load_module(tiny_context_refine)
    assert fine.hparams["model"]["in_channels"] == 2  # set from data.patch.context by train.py
    ev = _eval_predictions(tiny_run, tmp_path / "eval", f"refine_ckpt={tiny_context_refine}")
    _predict_matches_evaluate(tmp_path, tiny_run, ev, f"refine_ckpt={tiny_context_refine}")
