"""ONNX export: dynamic batch, metadata, and parity with PyTorch on CPU (heatmaps and decoded coordinates)."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import compose

from landmark_exp.backends import onnx_predictor
from landmark_exp.cascade import load_predictor
from landmark_exp.data.images import read_grey
from landmark_exp.data.patches import patch_origins
from landmark_exp.data.records import CheckpointError
from landmark_exp.export import export, export_onnx, parity
from landmark_exp.loading import load_module
from landmark_exp.predict import predict
from landmark_exp.predictor import Predictor


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(load_module(tiny_run["ckpt"]), path, source=tiny_run["ckpt"])
    return path


def _test_images(tiny_run):
    return [read_grey(p) for p in sorted((tiny_run["root"] / "RawImage" / "Test1Data").glob("*.png"))]


def test_onnx_runtime_matches_pytorch_on_heatmaps_and_coordinates(tiny_run, exported):
    result = parity(load_module(tiny_run["ckpt"]), exported, _test_images(tiny_run))
    assert result["batch"] == 4
    assert result["heatmaps_max_abs_diff"] < 1e-5
    assert result["coordinates_px_max_abs_diff"] < 1e-2
    assert result["confidence_max_abs_diff"] < 1e-5


def test_the_export_has_a_dynamic_batch_and_carries_what_decoding_needs(tiny_run, exported):
    onx, ref = onnx_predictor(exported, "cpu"), load_predictor(tiny_run["ckpt"], "cpu")
    assert onx.backend == "onnxruntime" and ref.backend == "pytorch-tuned"
    for n in (1, 5):
        batch = np.random.default_rng(n).random((n, 1, 32, 32), dtype=np.float32)
        assert tuple(onx.heatmaps(batch).shape) == (n, 19, 32, 32)
    assert onx.info.to_dict() == ref.info.to_dict()  # names, input size, preprocessing, spacing, decoding prior
    assert onx.info.landmark_names[0] == "sella" and onx.info.spacing == (0.1, 0.1)


def test_export_job_writes_the_model_and_its_parity_report(tmp_path, tiny_run):
    cfg = compose("export", [f"ckpt_path={tiny_run['ckpt']}", f"output={tmp_path / 'm.onnx'}"], tmp_path / "job")
    result = export(cfg)
    assert (tmp_path / "m.onnx").is_file()
    report = json.loads((tmp_path / "job" / "export.json").read_text())
    assert report["parity"]["heatmaps_max_abs_diff"] < 1e-5 and result["onnx"] == str(tmp_path / "m.onnx")


def test_predict_from_the_onnx_model_equals_predict_from_the_checkpoint(tmp_path, tiny_run, exported):
    folder = tiny_run["root"] / "RawImage" / "Test1Data"
    outs = {}
    for name, model in (("ckpt", tiny_run["ckpt"]), ("onnx", exported)):
        predict(compose("predict", [f"ckpt_path={model}", f"input={folder}", "device=cpu", "overlay=false"], tmp_path / name))
        outs[name] = pd.read_csv(tmp_path / name / "predictions.csv")
    np.testing.assert_allclose(outs["onnx"][["x_px", "y_px"]], outs["ckpt"][["x_px", "y_px"]], atol=1e-2)
    assert json.loads((tmp_path / "onnx" / "summary.json").read_text())["backend"] == "onnxruntime"


def test_an_onnx_file_without_our_metadata_is_refused(tmp_path, exported):
    import onnx

    model = onnx.load(str(exported))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(CheckpointError, match="metadata"):
        onnx_predictor(tmp_path / "bare.onnx", "cpu")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        onnx_predictor(tmp_path / "junk.onnx", "cpu")


def _all_but_a_few_agree(a, b, tol: float = 1e-2) -> None:
    """Two runs whose heatmaps differ by float rounding (another runtime, another CPU) agree to `tol` original px
    on all but a few landmarks, not on all of them on every CPU: these barely trained models draw flat peaks (the
    second stage's near its patches' edges), where the decoder's choice of peak pixel is not continuous (float
    rounding moves ~1 in 6000 second-stage estimates by a pixel or two), and patches cut at the pixel nearest two
    estimates that straddle a pixel boundary are a whole pixel apart."""
    diff = np.concatenate([np.abs(p.xy - q.xy).max(axis=-1) for p, q in zip(a, b, strict=True)])
    assert (diff < tol).mean() >= 0.95, np.sort(diff)[-5:]


def _second_stage_parity(checkpoint, onnx_path, images, seed: int = 0) -> None:
    """`parity`'s coordinates check of a second stage (patches around random centres), held to `_all_but_a_few_agree`."""
    rng = np.random.default_rng(seed)
    runs = [load_predictor(checkpoint, "cpu"), load_predictor(onnx_path, "cpu")]
    centres = [rng.uniform(0, 1, (runs[0].info.num_landmarks, 2)) * [im.shape[1] - 1, im.shape[0] - 1] for im in images]
    _all_but_a_few_agree(*[[p.refine(im, c) for im, c in zip(images, centres, strict=True)] for p in runs])


def test_a_second_stage_model_exports_and_the_onnx_cascade_matches_the_checkpoint_cascade(tmp_path, tiny_run, tiny_refine,
                                                                                          exported):
    fine = load_module(tiny_refine)
    export_onnx(fine, tmp_path / "fine.onnx", source=tiny_refine, dynamo=False)  # the legacy exporter works too
    images = _test_images(tiny_run)
    assert parity(fine, tmp_path / "fine.onnx", images)["heatmaps_max_abs_diff"] < 1e-5
    _second_stage_parity(tiny_refine, tmp_path / "fine.onnx", images)
    assert onnx_predictor(tmp_path / "fine.onnx", "cpu").info.working_size == (80, 64)
    a = load_predictor(tiny_run["ckpt"], "cpu", refine=tiny_refine).predict(images)
    b = load_predictor(exported, "cpu", refine=tmp_path / "fine.onnx").predict(images)
    _all_but_a_few_agree(a, b)
    # a second iteration from the same centres matches too
    second = [load_predictor(tiny_refine, "cpu"), load_predictor(tmp_path / "fine.onnx", "cpu")]
    _all_but_a_few_agree(*[[s.refine(im, p.xy) for im, p in zip(images, a, strict=True)] for s in second])


def _either_side_of_a_pixel_boundary(geom, centres: np.ndarray, size: tuple[int, int], eps: float) -> list[np.ndarray]:
    """Original-pixel centres near `centres` (K, 2) at, in working pixels: the middle of the pixel below the boundary
    where the nearest-pixel patch origin steps by one, `eps` below it, `eps` above it, the middle of the pixel above."""
    h, w = size
    boundary = patch_origins(geom.to_model(centres), size) + np.array([(w - 1) / 2, (h - 1) / 2]) - 0.5
    return [geom.to_original(boundary + d) for d in (-0.5, -eps, eps, 0.5)]


def _recording(second):
    """`second` as a predictor that keeps every batch of patches its network is given; and that list."""
    seen = []

    def forward(batch: np.ndarray):
        seen.append(batch.copy())
        return second.heatmaps(batch)

    return Predictor(second.info, forward, second.backend, second.device), seen


def test_patches_cut_at_the_exact_estimate_keep_a_chained_onnx_cascade_continuous(tmp_path, tiny_run, tiny_refine,
                                                                                   exported):
    from landmark_exp.cascade import refine_repeatedly

    fine = load_module(tiny_refine)
    export_onnx(fine, tmp_path / "fine.onnx", source=tiny_refine, dynamo=False)
    images = _test_images(tiny_run)
    firsts = [load_predictor(tiny_run["ckpt"], "cpu").predict(images), load_predictor(exported, "cpu").predict(images)]
    second = [load_predictor(tiny_refine, "cpu"), load_predictor(tmp_path / "fine.onnx", "cpu")]

    # two iterations, each runtime from its own first estimates (which differ by float rounding only)
    _all_but_a_few_agree(*[[refine_repeatedly(s, s.working_input(im), f.xy, 2, subpixel=True)
                            for im, f in zip(images, fs, strict=True)] for s, fs in zip(second, firsts, strict=True)])

    # Why patches are cut at the exact estimate, by construction rather than by where float rounding happened to put
    # the estimates on this CPU: every landmark's centre put `eps` either side of the boundary where the nearest pixel
    # changes, and in the middle of the pixels either side (in working pixels; what the network answers from the
    # patches is its own: this barely trained one's decoder can jump anywhere, see _all_but_a_few_agree)
    size, eps = second[0].info.input_size, 1e-3
    for s in second:
        recording, seen = _recording(s)
        for im, f in zip(images, firsts[0], strict=True):
            working = s.working_input(im)
            centres = _either_side_of_a_pixel_boundary(working[1], f.xy, size, eps)
            runs = {}
            for subpixel in (False, True):
                seen.clear()
                xy = [recording.refine_working(*working, c, subpixel=subpixel).xy for c in centres]
                assert len(seen) == len(centres)  # one batch of K patches each
                runs[subpixel] = xy, list(seen)
            (n_below, n_lo, n_hi, n_above), (pn_below, pn_lo, pn_hi, pn_above) = runs[False]
            (e_below, _, _, e_above), (pe_below, pe_lo, pe_hi, pe_above) = runs[True]
            # at the nearest pixel: the patch steps a whole pixel at the boundary, and anywhere inside a pixel it is
            # the same patch, with the same answer
            lo, hi = (working[1].to_model(c) for c in centres[1:3])
            assert (patch_origins(hi, size) - patch_origins(lo, size) == 1).all()
            np.testing.assert_array_equal(pn_lo, pn_below)
            np.testing.assert_array_equal(pn_hi, pn_above)
            np.testing.assert_allclose(n_lo, n_below, rtol=0, atol=1e-9)
            np.testing.assert_allclose(n_hi, n_above, rtol=0, atol=1e-9)
            # at the exact estimate: in the middle of a pixel, that pixel's patch and answer; across the boundary
            # the patch moves no more than a bilinear read (on OpenCV's 1/32-pixel grid) 2 eps further on can
            np.testing.assert_allclose(pe_below, pn_below, rtol=0, atol=1e-6)
            np.testing.assert_allclose(pe_above, pn_above, rtol=0, atol=1e-6)
            np.testing.assert_allclose(e_below, n_below, rtol=0, atol=1e-6)
            np.testing.assert_allclose(e_above, n_above, rtol=0, atol=1e-6)
            image = np.pad(working[0], 1)  # zero outside, as the patches read it
            steepest = np.abs(np.diff(image, axis=0)).max() + np.abs(np.diff(image, axis=1)).max()
            assert np.abs(pe_hi - pe_lo).max() <= (2 * eps + 1 / 32) * steepest


def test_a_second_stage_with_a_context_channel_exports_with_its_two_input_channels(tmp_path, tiny_run, tiny_context_refine):
    fine = load_module(tiny_context_refine)
    export_onnx(fine, tmp_path / "fine.onnx", source=tiny_context_refine, dynamo=False)
    images = _test_images(tiny_run)
    assert parity(fine, tmp_path / "fine.onnx", images)["heatmaps_max_abs_diff"] < 1e-5
    _second_stage_parity(tiny_context_refine, tmp_path / "fine.onnx", images)
    info = onnx_predictor(tmp_path / "fine.onnx", "cpu").info
    assert info.patch_context == 2 and info.input_channels == 2


def test_an_exported_second_stage_keeps_its_test_time_shifts_and_views(tmp_path, tiny_refine):
    fine = load_module(tiny_refine)
    fine.hparams["data"]["patch"]["shifts"] = [[0, 0], [0, 3], [-2, 0]]  # as data.patch.shifts when trained
    fine.hparams["data"]["patch"]["views"] = [[0, 1], [-6, 1.06]]  # and data.patch.views
    export_onnx(fine, tmp_path / "fine.onnx", source=tiny_refine, dynamo=False)
    info = onnx_predictor(tmp_path / "fine.onnx", "cpu").info
    assert info.patch_shifts == [[0.0, 0.0], [0.0, 3.0], [-2.0, 0.0]] and info.patch_views == [[0.0, 1.0], [-6.0, 1.06]]
    plain = load_predictor(tiny_refine, "cpu").info
    assert plain.patch_shifts is None and plain.patch_views is None  # trained without: one patch, as cut


def test_an_exported_second_stage_keeps_its_blend_with_the_first_estimate(tmp_path, tiny_refine):
    fine = load_module(tiny_refine)
    fine.hparams["data"]["patch"]["blend"] = 0.2  # as data.patch.blend when trained
    export_onnx(fine, tmp_path / "fine.onnx", source=tiny_refine, dynamo=False)
    assert onnx_predictor(tmp_path / "fine.onnx", "cpu").info.patch_blend == 0.2
    assert load_predictor(tiny_refine, "cpu").info.patch_blend is None  # trained without: the second stage alone


@pytest.mark.parametrize("override", [{"decoder": "argmax"}, {"decoder": "lsq", "window": 3}, {"prior_sigma": 0}])
def test_decoding_overrides_apply_to_an_export_as_to_its_checkpoint(tiny_run, exported, override):
    images = _test_images(tiny_run)
    ckpt = load_predictor(tiny_run["ckpt"], "cpu", runtime="eager", heatmap=override)
    decoding = onnx_predictor(exported, "cpu", heatmap=override).info.decoding
    assert decoding.to_dict() == ckpt.info.decoding.to_dict()  # the same decoding...
    assert decoding.method == override.get("decoder", "logit_lsq") and (decoding.prior_sigma is None) == ("prior_sigma" in override)
    # ...of heatmaps that differ by float rounding: without the default's re-centred fit (lsq) or its prior
    # (prior_sigma=0), which pixel of a flat peak the fit starts from can flip on rounding, moving an estimate by a
    # few thousandths of a pixel or to another blob (~1 in 5000 landmarks, more on some instruction sets)
    _all_but_a_few_agree(ckpt.predict(images), load_predictor(exported, "cpu", heatmap=override).predict(images), 5e-3)


def test_an_override_that_is_not_about_decoding_is_refused_for_an_export(exported):
    with pytest.raises(CheckpointError, match=r"tiny.onnx: heatmap overrides \['sigma'\] do not change how heatmaps"):
        onnx_predictor(exported, "cpu", heatmap={"sigma": 3.0})
