"""ONNX export: dynamic batch, metadata, and parity with PyTorch on CPU (heatmaps and decoded coordinates)."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import compose

from landmark_exp.data.images import read_grey
from landmark_exp.export import export, export_onnx, parity
from landmark_exp.inference import load_predictor, onnx_predictor
from landmark_exp.module import CheckpointError, load_module
from landmark_exp.predict import predict


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


def test_a_second_stage_model_exports_and_the_onnx_cascade_matches_the_checkpoint_cascade(tmp_path, tiny_run, tiny_refine,
                                                                                          exported):
    fine = load_module(tiny_refine)
    export_onnx(fine, tmp_path / "fine.onnx", source=tiny_refine, dynamo=False)  # the legacy exporter works too
    result = parity(fine, tmp_path / "fine.onnx", _test_images(tiny_run))
    assert result["heatmaps_max_abs_diff"] < 1e-5 and result["coordinates_px_max_abs_diff"] < 1e-2
    assert onnx_predictor(tmp_path / "fine.onnx", "cpu").info.working_size == (80, 64)
    images = _test_images(tiny_run)
    a = load_predictor(tiny_run["ckpt"], "cpu", refine=tiny_refine).predict(images)
    b = load_predictor(exported, "cpu", refine=tmp_path / "fine.onnx").predict(images)
    assert max(float(np.abs(p.xy - q.xy).max()) for p, q in zip(a, b, strict=True)) < 1e-2
    # a second iteration from the same centres matches too (chained from slightly different centres, a patch
    # origin can round to the next pixel, and this barely trained model then answers differently)
    second = [load_predictor(tiny_refine, "cpu"), load_predictor(tmp_path / "fine.onnx", "cpu")]
    again = [[s.refine(im, p.xy) for im, p in zip(images, a, strict=True)] for s in second]
    assert max(float(np.abs(p.xy - q.xy).max()) for p, q in zip(*again, strict=True)) < 1e-2


def test_patches_cut_at_the_exact_estimate_keep_a_chained_onnx_cascade_continuous(tmp_path, tiny_run, tiny_refine,
                                                                                   exported):
    from landmark_exp.inference import refine_repeatedly

    fine = load_module(tiny_refine)
    export_onnx(fine, tmp_path / "fine.onnx", source=tiny_refine, dynamo=False)
    images = _test_images(tiny_run)
    firsts = [load_predictor(tiny_run["ckpt"], "cpu").predict(images), load_predictor(exported, "cpu").predict(images)]
    second = [load_predictor(tiny_refine, "cpu"), load_predictor(tmp_path / "fine.onnx", "cpu")]

    def chained(subpixel: bool) -> float:
        """Two iterations, each runtime from its own estimates: the largest landmark difference (original px)."""
        out = [[refine_repeatedly(s, s.working_input(im), f.xy, 2, subpixel=subpixel) for im, f in zip(images, fs, strict=True)]
               for s, fs in zip(second, firsts, strict=True)]
        return max(float(np.abs(p.xy - q.xy).max()) for p, q in zip(*out, strict=True))

    # the first estimates differ by float rounding only; a patch cut at the nearest pixel can jump a whole pixel on
    # it (this barely trained model then answers differently), a patch cut at the exact estimate moves as little
    assert chained(subpixel=True) < 1e-2 < chained(subpixel=False)


def test_a_second_stage_with_a_context_channel_exports_with_its_two_input_channels(tmp_path, tiny_run, tiny_context_refine):
    fine = load_module(tiny_context_refine)
    export_onnx(fine, tmp_path / "fine.onnx", source=tiny_context_refine, dynamo=False)
    result = parity(fine, tmp_path / "fine.onnx", _test_images(tiny_run))
    assert result["heatmaps_max_abs_diff"] < 1e-5 and result["coordinates_px_max_abs_diff"] < 1e-2
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
    from_ckpt = load_predictor(tiny_run["ckpt"], "cpu", runtime="eager", heatmap=override).predict(images)
    from_onnx = load_predictor(exported, "cpu", heatmap=override).predict(images)
    for a, b in zip(from_ckpt, from_onnx, strict=True):
        np.testing.assert_allclose(b.xy, a.xy, atol=5e-3)
    decoding = onnx_predictor(exported, "cpu", heatmap=override).info.decoding
    assert decoding.method == override.get("decoder", "logit_lsq") and (decoding.prior_sigma is None) == ("prior_sigma" in override)


def test_an_override_that_is_not_about_decoding_is_refused_for_an_export(exported):
    with pytest.raises(CheckpointError, match=r"tiny.onnx: heatmap overrides \['sigma'\] do not change how heatmaps"):
        onnx_predictor(exported, "cpu", heatmap={"sigma": 3.0})
